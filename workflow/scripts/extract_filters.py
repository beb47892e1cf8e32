"""Every 3x3 filter of one model into a zarr store (thin entry point; logic in robustlens.filters)."""
from robustlens.jobs import provenance, redirect_output

redirect_output(snakemake.log[0])
from robustlens.filters import extract_conv_filters, filters_dataset
from robustlens.runtime import configure_torch
from robustlens.store import write_store
from robustlens.zoo import load_workflow_model

p = snakemake.params
configure_torch(snakemake.threads)
model = load_workflow_model(p.spec, snakemake.input.checkpoint, snakemake.input.metrics)
shape = (1, p.spec["arch"]["in_channels"], p.image_size, p.image_size)
record = extract_conv_filters(model, p.spec["id"], p.spec["eps"], seed=p.spec["seed"], input_shape=shape)
print(f"{record.n_filters} 3x3 filters in {len(record.layers)} layers; {record.n_skipped} other kernels skipped")
write_store(filters_dataset([record]), snakemake.output.store, provenance({"model": p.spec}, "extract_filters"))
