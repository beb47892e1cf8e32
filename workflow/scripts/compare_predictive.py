"""Predictive measures of every pair on one probe: original and retrained heads."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from functools import lru_cache

import pandas as pd

from robustlens.comparisons import pair_predictive_rows
from robustlens.heads import load_heads
from robustlens.store import open_store

w, p = snakemake.wildcards, snakemake.params
store = lru_cache(maxsize=None)(open_store)  # every store is read and verified once
heads = {model: load_heads(path) for model, path in p.heads.items()}
rows = []
for a, b in p.pairs:
    for source, path_a, path_b in p.stores[f"{a}__{b}"]:
        context = {"probe": w.probe, "source": source, "model_a": a, "model_b": b}
        rows += pair_predictive_rows(store(path_a), store(path_b), heads[a], heads[b], context)
pd.DataFrame(rows).to_csv(snakemake.output[0], index=False)
