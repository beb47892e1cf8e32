"""Concatenate the per-probe predictive parts into the tidy predictive table."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.tables import pair_table, read_parts, write_table

p = snakemake.params
write_table(pair_table(p.study, p.models, read_parts(snakemake.input)), snakemake.output[0])
