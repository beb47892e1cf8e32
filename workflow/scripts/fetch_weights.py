"""Download one zoo model's weights file (thin entry point; logic in robustlens.download and
robustlens.sources)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
from robustlens.download import fetch

spec = snakemake.params.spec
if spec["source"] == "robustbench":
    from robustlens.sources import fetch_robustbench

    fetch_robustbench(spec)
elif spec["source"] == "timm":
    from robustlens.sources import timm_url

    fetch(timm_url(spec), snakemake.output[0], spec.get("sha256"))
else:
    fetch(spec["url"], snakemake.output[0], spec["sha256"])
print(f"{snakemake.output[0]} ready")
