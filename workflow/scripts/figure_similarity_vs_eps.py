"""Figure: every representational measure vs eps per layer (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.plots.similarity import plot_similarity_vs_eps

p = snakemake.params
plot_similarity_vs_eps(pd.read_csv(snakemake.input.similarity), list(snakemake.output), p.figure, p.dpi)
