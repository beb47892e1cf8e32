"""Configured measures for every pair of models on one probe (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.runtime import configure_torch, resolve_device
from robustlens.similarity_comparisons import similarity_matrix_rows
from robustlens.store import open_store
from robustlens.tables import pair_table, write_table

import pandas as pd

p = snakemake.params
configure_torch(snakemake.threads, snakemake.params.compute["deterministic"])
stores = {model: open_store(path) for model, path in p.stores.items()}
matrix = p.settings["matrix"]
rows = similarity_matrix_rows(stores, p.layers, matrix["measures"], p.settings, {"probe": matrix["probe"]},
                              str(resolve_device(p.device, snakemake.resources.get("gpu", 0))))
write_table(pair_table(p.study, p.models, pd.DataFrame(rows)), snakemake.output[0])
