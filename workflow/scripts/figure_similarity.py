"""One figure of the similarity stage from its table (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.plots import similarity as plots

p, figure = snakemake.params, snakemake.wildcards.figure
draw = {
    "cka_by_layer": plots.plot_cka_by_layer,
    "similarity_vs_eps": plots.plot_similarity_vs_eps,
    "similarity_heatmaps": plots.plot_similarity_heatmaps,
}[figure]
draw(pd.read_csv(snakemake.input.table), list(snakemake.output), p.figure, p.dpi)
