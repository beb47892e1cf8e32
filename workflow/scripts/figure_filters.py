"""One figure of the filter analysis from its table (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.plots import filters as plots

p, figure = snakemake.params, snakemake.wildcards.figure
table = pd.read_csv(snakemake.input.table)
paths = list(snakemake.output)
size = (p.figure["width"], p.figure["height"])
if figure == "filters_kl_by_depth":
    plots.plot_kl_by_depth(table, paths, title=p.figure.get("title"), dpi=p.dpi, size=size)
elif figure == "filters_basis":
    plots.plot_filter_basis(table, paths, dpi=p.dpi, size=size)
else:
    plots.plot_quality_by_depth(table, paths, n_bins=p.settings["depth_bins"], dpi=p.dpi, size=size)
