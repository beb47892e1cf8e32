"""One figure of the transfer study from its table (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.plots import transfer as plots

p, figure = snakemake.params, snakemake.wildcards.figure
table = pd.read_csv(snakemake.input.table)
draw = {
    "transfer_accuracy": plots.plot_transfer_accuracy,
    "transfer_sensitivity": plots.plot_sensitivity_vs_gap,
    "transfer_bounds": plots.plot_bounds,
    "transfer_thm2": plots.plot_thm2,
}[figure]
draw(table, list(snakemake.output), p.figure, p.dpi)
