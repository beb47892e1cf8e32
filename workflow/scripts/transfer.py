"""LP, FT and LP-FT of one model on every task, with accuracy, AS score and bounds (thin entry point)."""
import shutil
from pathlib import Path

from robustlens.jobs import provenance, redirect_output, write_json

redirect_output(snakemake.log[0])
from robustlens.checkpoints import sha256_file
from robustlens.data import load_dataset
from robustlens.runtime import configure_torch, resolve_device
from robustlens.train import TRAINING_DEFAULTS
from robustlens.transfer import resumable_parts, transfer_study
from robustlens.zoo import load_workflow_model, recorded_sha256

p = snakemake.params
configure_torch(snakemake.threads, snakemake.params.compute["deterministic"])
device = resolve_device(p.device, snakemake.resources.get("gpu", 0))
sha256 = recorded_sha256(snakemake.input.metrics)
model = load_workflow_model(p.spec, snakemake.input.checkpoint, snakemake.input.metrics)
fingerprint = {"model": p.spec, "sha256": sha256, "settings": p.settings, "input_size": p.input_size, "device": device.type,
         "compute": p.compute}
every_s = 60.0 * {**TRAINING_DEFAULTS, **snakemake.config["training"]}["resume_minutes"]  # not a param: no rerun when it changes
results = {
    task: transfer_study(model, load_dataset(path), p.settings, device, p.progress, desc=f"transfer {p.spec['id']} -> {task}",
                         input_size=p.input_size, channels=p.spec["arch"]["in_channels"],
                         resume=resumable_parts(Path(p.resume) / task, {**fingerprint, "task": task, "data": sha256_file(path)},
                                                every_s))
    for task, path in zip(p.tasks, snakemake.input.tasks)
}
write_json({"tasks": results, "provenance": provenance({"model": p.spec, "tasks": p.tasks, "transfer": p.settings}, "transfer")},
           snakemake.output[0])
shutil.rmtree(p.resume, ignore_errors=True)  # the output is complete: the resumable state is spent
