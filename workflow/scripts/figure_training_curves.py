"""Figure: training curves of the models trained in the workflow."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.plots.models import plot_training_curves
from robustlens.tables import read_parts

p = snakemake.params
plot_training_curves(read_parts(snakemake.input.curves), list(snakemake.output), p.figure, p.dpi)
