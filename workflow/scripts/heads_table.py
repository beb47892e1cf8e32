"""Accuracy of original and retrained heads of every model (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.heads import load_heads
from robustlens.tables import heads_table, write_table

p = snakemake.params
write_table(heads_table(p.study, p.models, [load_heads(path) for path in snakemake.input]), snakemake.output[0])
