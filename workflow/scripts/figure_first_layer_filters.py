"""First-layer filters of one robust and one normal model (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import xarray as xr

from robustlens.plots.filters import plot_first_layer_filters
from robustlens.store import open_store

p = snakemake.params
ds = xr.concat([open_store(snakemake.input.robust), open_store(snakemake.input.normal)], dim="filter", combine_attrs="drop_conflicts")
size = (p.figure["width"], p.figure["height"])
plot_first_layer_filters(ds, list(snakemake.output), robust_model=p.models["robust"], normal_model=p.models["normal"], dpi=p.dpi, size=size)
