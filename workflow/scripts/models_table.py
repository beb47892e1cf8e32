"""The models table: clean and robust accuracy of every model, one row per value."""
from robustlens.jobs import read_json, redirect_output

redirect_output(snakemake.log[0])
from robustlens.tables import models_table, write_table

p = snakemake.params
metrics = [read_json(path) for path in snakemake.input.metrics]
write_table(models_table(p.study, p.models, metrics), snakemake.output[0])
