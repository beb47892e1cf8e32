"""Download a torchvision dataset (thin entry point; logic in robustlens.data)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.data import fetch_torchvision

fetch_torchvision(snakemake.params.source)
print(f"{snakemake.params.source} downloaded")
