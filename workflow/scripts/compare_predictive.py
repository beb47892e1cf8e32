"""Predictive agreement measures of every pair on one probe, from the stored logits."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.comparisons import predictive_rows
from robustlens.store import open_store

w, p = snakemake.wildcards, snakemake.params
stores = {model: open_store(path) for model, path in zip(p.models, snakemake.input.stores)}
rows = predictive_rows(stores, p.pairs, context={"probe": w.probe, "source": w.source})
pd.DataFrame(rows).to_csv(snakemake.output[0], index=False)
