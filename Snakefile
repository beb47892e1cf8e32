"""robustlens: what does adversarial robustness do to what a neural network learns?

Run the default study with `snakemake --cores all`; another study with
`snakemake --cores all --configfile configs/<study>.yaml` (its keys override config.yaml's).
"""

import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# Parsing imports robustlens (the config check, memory estimates) from this checkout, whether it
# is installed or not. With `--software-deployment-method conda` and robustlens installed nowhere,
# Snakemake first injects envs/workflow.yaml: numpy, the one package parsing needs that Snakemake
# does not bring (tests/unit/test_envs.py). Each job then runs in envs/robustlens.yaml.
conda: "envs/workflow.yaml"
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

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
