"""Filter quality, PCA bases and coefficient shifts of all models (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import xarray as xr

from robustlens.filters import basis_table, filter_bases, quality_table, shift_table
from robustlens.store import open_store
from robustlens.tables import write_table

p = snakemake.params
s = p.settings
ds = xr.concat([open_store(path) for path in snakemake.input.stores], dim="filter", combine_attrs="drop_conflicts")
for name, table in {
    "quality": quality_table(ds, zero_banks=s["zero_banks"]),
    "shift": shift_table(ds, s["depth_bins"], bins=s["histogram_bins"], n_permutations=s["n_permutations"], seed=s["seed"],
                         histogram_range=s["histogram_range"]),
    "basis": basis_table(filter_bases(ds)),
}.items():
    table.insert(0, "study", p.study)
    write_table(table, snakemake.output[name])
