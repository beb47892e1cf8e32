"""Activations of one model on the natural probe into a zarr store (thin entry point)."""
from robustlens.jobs import provenance, redirect_output

redirect_output(snakemake.log[0])
from robustlens.activations import activations_dataset, extract_activations
from robustlens.data import load_dataset, probe_inputs
from robustlens.runtime import configure_torch, resolve_device
from robustlens.store import write_store
from robustlens.zoo import load_workflow_model

p = snakemake.params
configure_torch(snakemake.threads, snakemake.params.compute["deterministic"])
model = load_workflow_model(p.spec, snakemake.input.checkpoint, snakemake.input.metrics)
images, labels = probe_inputs(load_dataset(snakemake.input.dataset, p.probe["split"]), p.probe["split"])
acts = extract_activations(
    model,
    images,
    p.activations["layers"],
    spatial=p.activations["spatial"],
    batch_size=p.activations["batch_size"],
    device=resolve_device(p.device, snakemake.resources.get("gpu", 0)),
    progress=p.progress,
    desc=f"extract {p.spec['id']}",
    model_id=p.spec["id"],
    precision=p.compute["precision"],
    channels_last=p.compute["channels_last"],
)
spec = {"probe": "natural", **p.probe, "target": p.spec, "activations": p.activations,
        "precision": p.compute["precision"], "channels_last": p.compute["channels_last"]}
write_store(activations_dataset(acts, labels), snakemake.output.store, provenance(spec, "extract_natural"), p.activations["layers"])
