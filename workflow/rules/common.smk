# Shared by every rule: the validated config, the resolved models and pairs, path helpers.
# Every setting a rule uses reaches it through `params:` (scripts never read `config`), and
# VERSION is in the params of every rule, since Snakemake does not track imported modules.
import sys

import robustlens
from robustlens.config import ConfigError, expand_models, select_pairs, validate_config

try:
    validate_config(config)
except ConfigError as err:
    sys.stderr.write(f"robustlens: {err}\n")
    sys.exit(1)

VERSION = robustlens.__version__
STUDY = config["study"]
DATASET = config["dataset"]["name"]
MODELS = expand_models(config)
PAIRS = select_pairs(MODELS, config["comparison"]["pairs"])
THREADS = config.get("threads", 1)
DEVICE = config.get("device", "auto")
PROGRESS = config.get("progress", True)
SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"

# Targets each rules file adds to `rule all`.
ALL_TARGETS = []

wildcard_constraints:
    model=r"(?:(?!__)[A-Za-z0-9_.+-])+",
    model_a=r"(?:(?!__)[A-Za-z0-9_.+-])+",
    model_b=r"(?:(?!__)[A-Za-z0-9_.+-])+",
    probe=r"[a-z]+",
    source=r"[A-Za-z0-9_.+-]+",


def checkpoint_path(model):
    return f"results/models/{model}/checkpoint.pt"


def metrics_path(model):
    return f"results/models/{model}/metrics.json"


def store_path(probe, source, model):
    return f"results/activations/{probe}/{source}/{model}.zarr"


def manifest_of(store):
    return store + ".manifest.json"


def probe_sources(probe):
    """Sources of the images of a probe: the dataset for natural images."""
    return [DATASET]


def models_of_pairs():
    return sorted({m for pair in PAIRS for m in pair}, key=list(MODELS).index)
