"""Correlation of eps with each representational measure per probe and layer (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.tables import write_table
from robustlens.similarity_tables import correlations_table

p = snakemake.params
write_table(correlations_table(p.study, pd.read_csv(snakemake.input.similarity), p.statistics, p.models), snakemake.output[0])
