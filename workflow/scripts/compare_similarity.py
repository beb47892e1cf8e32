"""Representational similarity of one model pair on every probe, layer and measure."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.runtime import configure_torch, resolve_device
from robustlens.similarity_comparisons import similarity_rows
from robustlens.store import open_store

w, p = snakemake.wildcards, snakemake.params
configure_torch(snakemake.threads, snakemake.params.compute["deterministic"])
device = str(resolve_device(p.device, snakemake.resources.get("gpu", 0)))
rows = []
for probe, source, path_a, path_b in p.stores:
    context = {"probe": probe, "source": source, "model_a": w.model_a, "model_b": w.model_b}
    rows += similarity_rows(open_store(path_a), open_store(path_b), p.layers, p.settings, context, device)
pd.DataFrame(rows).to_csv(snakemake.output[0], index=False)
