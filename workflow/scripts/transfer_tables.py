"""transfer.csv and bounds.csv from the per-model results (thin entry point)."""
from robustlens.jobs import read_json, redirect_output

redirect_output(snakemake.log[0])
from robustlens.tables import transfer_tables, write_table

p = snakemake.params
results = [read_json(path)["tasks"] for path in snakemake.input]
keys, rows = [], []
for spec, result in zip(p.models, results):
    for task in p.tasks:
        keys.append((spec, task))
        rows.append(result[task])
transfer, bounds = transfer_tables(p.study, keys, rows)
write_table(transfer, snakemake.output.transfer)
write_table(bounds, snakemake.output.bounds)
