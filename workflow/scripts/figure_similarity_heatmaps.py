"""Figure: pairwise heatmaps of all models (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.plots.similarity import plot_similarity_heatmaps

p = snakemake.params
plot_similarity_heatmaps(pd.read_csv(snakemake.input.matrix), list(snakemake.output), p.figure, p.dpi)
