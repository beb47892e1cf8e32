"""Prepare the dataset cache (thin entry point; logic in robustlens.data)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.data import prepare_dataset, save_dataset

arrays = prepare_dataset(snakemake.params.spec)
print({name: f"{array.shape} {array.dtype}" for name, array in arrays.items()})
save_dataset(arrays, snakemake.output[0])
