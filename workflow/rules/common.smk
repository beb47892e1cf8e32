# Shared by every rule: the validated config, the resolved models and pairs, path helpers.
# Every setting a rule uses reaches it through `params:` (scripts never read `config`), and
# VERSION is in the params of every rule, since Snakemake does not track imported modules.
import re
import sys

import robustlens
from robustlens.config import ConfigError, canonical, expand_models, select_pairs, validate_config

try:
    validate_config(config)
except ConfigError as err:
    sys.stderr.write(f"robustlens: {err}\n")
    sys.exit(1)
# Sorted keys everywhere: reordering keys in a config file must not rerun anything.
config.update(canonical(dict(config)))

VERSION = robustlens.__version__
STUDY = config["study"]
DATASET = config["dataset"]["name"]
MODELS = expand_models(config)
PAIRS = select_pairs(MODELS, config["comparison"]["pairs"])
THREADS = config.get("threads", 1)
DEVICE = config.get("device", "auto")
PROGRESS = config.get("progress", True)
SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"

TRAIN_MODELS = [m for m, spec in MODELS.items() if spec["source"] == "train"]
ZOO_MODELS = [m for m, spec in MODELS.items() if spec["source"] != "train"]
#: Each zoo model's own weights file (what the fetch rule writes), by path.
WEIGHTS = {spec["weights"]: spec for spec in MODELS.values() if "weights" in spec}
RESOURCES = config.get("resources", {})


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!)"


def resources_of(rule, **defaults):
    """A rule's resources: its defaults, overridden by the config's ``resources.<rule>``."""
    return {**defaults, **RESOURCES.get(rule, {})}


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


MADE_PROBES = [p for p in ("adversarial", "inverted") if p in config["probes"]]
PROBES = ["natural", *MADE_PROBES]


def models_of_pairs():
    """Models that take part in at least one compared pair, in study order."""
    return sorted({m for pair in PAIRS for m in pair}, key=list(MODELS).index)


def probe_targets(source):
    """Models evaluated on the probe images a source model made: itself and its partners."""
    partners = {m for pair in PAIRS if source in pair for m in pair}
    return sorted(partners | {source}, key=list(MODELS).index)


def made_store(probe, source, target):
    """Store of target's activations on the probe images source made (inside the source's
    activation directory, which one job writes)."""
    return f"results/activations/{probe}/{source}/{target}.zarr"


def pair_stores(probe, a, b):
    """(source, store of a, store of b) for every probe input set the pair is compared on: the
    dataset for natural images; the images of each of the two models for made probes."""
    if probe == "natural":
        return [(DATASET, store_path(probe, DATASET, a), store_path(probe, DATASET, b))]
    return [(src, made_store(probe, src, a), made_store(probe, src, b)) for src in (a, b)]


def probe_files(probe, models):
    """The files a job needs to read the stores of ``models`` on ``probe``."""
    if probe == "natural":
        stores = [store_path(probe, DATASET, m) for m in models]
        return stores + [manifest_of(s) for s in stores]
    return [f"results/activations/{probe}/{m}" for m in models] + [
        f"results/activations/{probe}/{m}.index.json" for m in models
    ]
