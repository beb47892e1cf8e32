"""LP, FT and LP-FT of one model on every task, with accuracy, AS score and bounds (thin entry point)."""
from robustlens.jobs import provenance, read_json, redirect_output, write_json

redirect_output(snakemake.log[0])
from robustlens.data import load_dataset
from robustlens.runtime import configure_torch, resolve_device
from robustlens.transfer import transfer_study
from robustlens.zoo import load_model

p = snakemake.params
configure_torch(snakemake.threads, snakemake.params.compute["deterministic"])
device = resolve_device(p.device, snakemake.resources.get("gpu", 0))
model = load_model(p.spec, snakemake.input.checkpoint, sha256=read_json(snakemake.input.metrics)["sha256"])
results = {
    task: transfer_study(model, load_dataset(path), p.settings, device, p.progress, desc=f"transfer {p.spec['id']} -> {task}",
                         input_size=p.input_size, channels=p.spec["arch"]["in_channels"])
    for task, path in zip(p.tasks, snakemake.input.tasks)
}
write_json({"tasks": results, "provenance": provenance({"model": p.spec, "tasks": p.tasks, "transfer": p.settings}, "transfer")},
           snakemake.output[0])
