"""Make one source model's probe images and store every target's activations on them."""
from robustlens.jobs import provenance, redirect_output, write_json

redirect_output(snakemake.log[0])
from robustlens.activations import write_target_stores
from robustlens.data import load_dataset, probe_inputs
from robustlens.probes import make_probe, probe_dataset
from robustlens.runtime import configure_torch, resolve_device
from robustlens.store import write_store
from robustlens.zoo import load_workflow_model

p, probe = snakemake.params, snakemake.wildcards.probe
configure_torch(snakemake.threads, snakemake.params.compute["deterministic"])
device = resolve_device(p.device, snakemake.resources.get("gpu", 0))
models = {
    spec["id"]: load_workflow_model(spec, ckpt, metrics)
    for spec, ckpt, metrics in zip(p.targets, snakemake.input.checkpoints, snakemake.input.metrics)
}
images, labels = probe_inputs(load_dataset(snakemake.input.dataset, p.settings["split"]), p.settings["split"])
made = make_probe(probe, models[p.source["id"]], images, labels, p.settings, device, p.progress)
spec = {"probe": probe, "settings": p.settings, "source": p.source}
write_store(probe_dataset(made), snakemake.output.probe, provenance(spec, "make_probe"))
extraction = {"precision": p.compute["precision"], "channels_last": p.compute["channels_last"]}
targets = {
    spec_t["id"]: (models[spec_t["id"]], provenance({**spec, "target": spec_t, "activations": p.activations, **extraction}, "make_probe"))
    for spec_t in p.targets
}
index = write_target_stores(targets, made["images"], made["labels"], snakemake.output.activations,
                            activations=p.activations, device=device, progress=p.progress, **extraction)
write_json({"probe": probe, "source": p.source["id"], "stores": index}, snakemake.output.index)
