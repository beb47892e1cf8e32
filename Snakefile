"""robustlens: what does adversarial robustness do to what a neural network learns?

Run the default study with `snakemake --cores all`; another study with
`snakemake --cores all --configfile configs/<study>.yaml` (its keys override config.yaml's).
"""

from pathlib import Path

configfile: Path(workflow.basedir) / "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/probes.smk"
include: "workflow/rules/heads.smk"
include: "workflow/rules/similarity.smk"
include: "workflow/rules/predictive.smk"
include: "workflow/rules/filters.smk"
include: "workflow/rules/transfer.smk"


rule all:
    input:
        all_targets(),
    default_target: True
