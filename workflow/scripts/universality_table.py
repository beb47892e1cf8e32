"""The headline universality table (thin entry point; logic in robustlens.universality)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.tables import write_table
from robustlens.universality import universality_table

p = snakemake.params
write_table(universality_table(p.study, pd.read_csv(snakemake.input.predictive), p.statistics, p.models), snakemake.output[0])
