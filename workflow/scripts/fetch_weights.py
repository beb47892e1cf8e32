"""Download one zoo model's weights file (thin entry point; logic in robustlens.sources)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.sources import fetch_weights

fetch_weights(snakemake.params.spec, snakemake.output[0])
print(f"{snakemake.output[0]} ready")
