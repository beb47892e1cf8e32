"""Figure: example inversions of a standard and a robust model."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.data import load_dataset
from robustlens.plots.probes import plot_inversions
from robustlens.store import open_store

p = snakemake.params
probes = {model: open_store(path) for model, path in zip(p.models, snakemake.input.stores)}
plot_inversions(load_dataset(snakemake.input.dataset, p.split), probes, list(snakemake.output), p.figure, p.dpi, p.split)
