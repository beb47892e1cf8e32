"""Predictive measures of every pair on one probe: original and retrained heads."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from functools import lru_cache

import pandas as pd

from robustlens.comparisons import pair_predictive_rows
from robustlens.heads import load_heads
from robustlens.store import open_store

w, p = snakemake.wildcards, snakemake.params


@lru_cache(maxsize=None)
def store(path):
    """What the predictive measures use of a store (labels, logits, penultimate features), read
    and verified once; the other layers stay on disk."""
    ds = open_store(path, load=False)
    return ds[[name for name in ("label", "logits", "penultimate") if name in ds.data_vars]].load()


heads = {model: load_heads(path) for model, path in p.heads.items()}
rows = []
for a, b in p.pairs:
    for source, path_a, path_b in p.stores[f"{a}__{b}"]:
        context = {"probe": w.probe, "source": source, "model_a": a, "model_b": b}
        rows += pair_predictive_rows(store(path_a), store(path_b), heads[a], heads[b], context)
pd.DataFrame(rows).to_csv(snakemake.output[0], index=False)
