"""Concatenate the per-pair similarity parts into the tidy similarity table."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.tables import pair_table, read_parts, write_table

p = snakemake.params
write_table(pair_table(p.study, p.models, read_parts(snakemake.input)), snakemake.output[0])
