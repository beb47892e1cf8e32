"""Figure: CKA by layer, one line per eps (mean across same-eps pairs)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import pandas as pd

from robustlens.plots.universality import plot_cka_by_layer

p = snakemake.params
plot_cka_by_layer(pd.read_csv(snakemake.input.similarity), list(snakemake.output), p.figure, p.dpi)
