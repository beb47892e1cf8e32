"""Figure: the headline universality correlations with CIs."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.plots.universality import plot_universality

p = snakemake.params
plot_universality(pd.read_csv(snakemake.input.table), list(snakemake.output), p.figure, p.dpi)
