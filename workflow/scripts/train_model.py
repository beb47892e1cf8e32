"""Train one model and evaluate its robustness (thin entry point; logic in robustlens.train)."""
from pathlib import Path

from robustlens.jobs import provenance, redirect_output, write_json

redirect_output(snakemake.log[0])
from robustlens.checkpoints import save_state_dict
from robustlens.data import load_dataset
from robustlens.npz_rows import NpzRows
from robustlens.runtime import configure_torch, resolve_device
from robustlens.tables import training_curves, write_table
from robustlens.train import train_and_evaluate

p = snakemake.params
configure_torch(snakemake.threads, snakemake.params.compute["deterministic"])
device = resolve_device(p.device, snakemake.resources.get("gpu", 0))
stream = p.training.get("stream", False)  # training images read per batch, never all in memory
dataset = load_dataset(snakemake.input.dataset, "test" if stream else None)
model, metrics = train_and_evaluate(
    p.spec, dataset, p.training, p.evaluation, device, p.progress, resume_path=p.resume, compute=p.compute,
    train_rows=NpzRows(snakemake.input.dataset, "x_train") if stream else None, input_size=p.image_size,
)
write_table(training_curves(p.spec, metrics["history"]), snakemake.output.curves)
metrics["sha256"] = save_state_dict(model.cpu().state_dict(), snakemake.output.checkpoint)
metrics["provenance"] = provenance({"model": p.spec, "training": p.training, "evaluation": p.evaluation}, "train_model")
print(f"clean accuracy {metrics['clean_accuracy']:.4f}, robust accuracy {metrics['robust_accuracy']}")
write_json(metrics, snakemake.output.metrics)
Path(p.resume).unlink(missing_ok=True)  # the outputs are complete: the resumable state is spent
