"""One figure of the predictive stage from its table (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.plots import predictive as plots

p, figure = snakemake.params, snakemake.wildcards.figure
table = pd.read_csv(snakemake.input.table)
paths = list(snakemake.output)
if figure == "agreement_vs_eps":
    plots.plot_agreement_vs_eps(table, paths, p.figure, p.dpi, p.statistics)
else:
    {"heads_agreement": plots.plot_heads_agreement, "universality": plots.plot_universality}[figure](table, paths, p.figure, p.dpi)
