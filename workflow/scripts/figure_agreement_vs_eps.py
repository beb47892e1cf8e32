"""Figure: agreement of same-eps pairs vs eps, Pearson r and permutation p-value on the plot."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.plots.universality import plot_agreement_vs_eps

p = snakemake.params
plot_agreement_vs_eps(pd.read_csv(snakemake.input.predictive), list(snakemake.output), p.figure, p.dpi, p.statistics)
