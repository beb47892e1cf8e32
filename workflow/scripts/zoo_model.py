"""Load one zoo model from its own weights and evaluate it like a trained model (thin entry
point; logic in robustlens.zoo, robustlens.sources and robustlens.train)."""
from robustlens.jobs import provenance, redirect_output, write_json

redirect_output(snakemake.log[0])
from robustlens.checkpoints import save_state_dict
from robustlens.data import load_dataset
from robustlens.runtime import configure_torch, resolve_device
from robustlens.train import evaluate_with_settings
from robustlens.zoo import load_model

p = snakemake.params
configure_torch(snakemake.threads, snakemake.params.compute["deterministic"])
device = resolve_device(p.device, snakemake.resources.get("gpu", 0))
model = load_model(p.spec)
metrics = evaluate_with_settings(model, load_dataset(snakemake.input.dataset, "test"), p.evaluation, device, p.progress, p.spec["id"])
metrics["sha256"] = save_state_dict(model.cpu().state_dict(), snakemake.output.checkpoint)
metrics["provenance"] = provenance({"model": p.spec, "evaluation": p.evaluation}, "zoo_model")
print(f"clean accuracy {metrics['clean_accuracy']:.4f}, robust accuracy {metrics['robust_accuracy']}")
write_json(metrics, snakemake.output.metrics)
