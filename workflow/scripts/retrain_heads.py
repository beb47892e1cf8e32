"""Retrain linear heads of one model on its frozen penultimate features (thin entry point)."""
from robustlens.jobs import read_json, redirect_output

redirect_output(snakemake.log[0])
from robustlens.data import load_dataset
from robustlens.heads import retrain_heads, save_heads
from robustlens.runtime import configure_torch, resolve_device
from robustlens.zoo import load_model

p = snakemake.params
configure_torch(snakemake.threads, snakemake.params.compute["deterministic"])
model = load_model(p.spec, snakemake.input.checkpoint, sha256=read_json(snakemake.input.metrics)["sha256"])
heads = retrain_heads(model, load_dataset(snakemake.input.dataset), p.heads, resolve_device(p.device, snakemake.resources.get("gpu", 0)), p.progress, p.spec["id"])
print({k: v for k, v in heads.items() if "accuracy" in k})
save_heads(heads, snakemake.output[0])
