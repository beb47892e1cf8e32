"""Figure: agreement vs eps before and after retraining the heads."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.plots.universality import plot_heads_agreement

p = snakemake.params
plot_heads_agreement(pd.read_csv(snakemake.input.predictive), list(snakemake.output), p.figure, p.dpi)
