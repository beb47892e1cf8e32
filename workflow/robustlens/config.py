"""Study configuration: schema validation with messages that name the key, and the expansion
of a config into the resolved model specs and comparison pairs the rules are built from.

No torch here: the Snakefile imports this module at parse time.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"

#: Image channels and classes of each dataset source, known without loading the data.
DATASET_SHAPES = {"sklearn_digits": {"in_channels": 1, "num_classes": 10}}
#: Number of images of each dataset source (for checks that need the probe's sample count).
DATASET_SIZES = {"sklearn_digits": 1797}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key and value."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _schema_errors(config: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    messages = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = _key_path(error.absolute_path)
        if error.validator == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            extra = sorted(set(error.instance) - set(known))
            for key in extra:
                full = f"{where}.{key}" if error.absolute_path else key
                messages.append(f"unknown key '{full}' (known keys here: {', '.join(known)})")
            continue
        value = error.instance if not isinstance(error.instance, dict) else "{...}"
        messages.append(f"key '{where}' = {value!r}: {error.message}")
    return messages


def model_id(arch: str, norm: str, eps: float, seed: int) -> str:
    """Id of a grid model, e.g. ``smallcnn-l2-eps0.5-s1``."""
    return f"{arch}-{norm}-eps{eps:g}-s{seed}"


def expand_models(config: dict) -> dict[str, dict]:
    """Resolved specs of every model of the study, by id, in grid order."""
    arch = dict(config["architecture"])
    arch.update(DATASET_SHAPES[config["dataset"]["source"]])
    norm = config["training"]["norm"]
    models = {}
    for eps, seed in itertools.product(config["model_grid"]["eps"], config["model_grid"]["seeds"]):
        mid = model_id(arch["name"], norm, eps, seed)
        models[mid] = {"id": mid, "source": "train", "arch": arch, "eps": float(eps), "norm": norm, "seed": int(seed)}
    return models


def representation_layers(arch: dict) -> list[str]:
    """Layers an architecture exposes to the activation store (mirrors ``zoo.SmallCNN``)."""
    return [f"block{i + 1}" for i in range(len(arch["widths"]))] + ["penultimate", "logits"]


def select_pairs(models: dict[str, dict], mode) -> list[tuple[str, str]]:
    """Model pairs to compare: ``same_eps`` (equal eps, different seeds), ``all``, or an explicit
    list. Each pair is ordered as the models appear in the study."""
    ids = list(models)
    if mode == "all":
        return list(itertools.combinations(ids, 2))
    if mode == "same_eps":
        return [(a, b) for a, b in itertools.combinations(ids, 2) if models[a]["eps"] == models[b]["eps"]]
    order = {mid: i for i, mid in enumerate(ids)}
    return [tuple(sorted(pair, key=order.__getitem__)) for pair in mode]


def _semantic_errors(config: dict) -> list[str]:
    errors = []
    layers = representation_layers(config["architecture"])
    for i, layer in enumerate(config["activations"]["layers"]):
        if layer not in layers:
            errors.append(f"key 'activations.layers[{i}]' = {layer!r}: not a layer of the model (known: {', '.join(layers)})")
    for i, layer in enumerate(config["comparison"]["rtd"]["layers"]):
        if layer not in config["activations"]["layers"]:
            errors.append(f"key 'comparison.rtd.layers[{i}]' = {layer!r}: not one of activations.layers")
    k = config["comparison"]["knn_k"]
    n_probe = min(probe_sample_counts(config).values())
    if k >= n_probe:
        errors.append(f"key 'comparison.knn_k' = {k}: must be smaller than the smallest probe's {n_probe} samples")
    models = expand_models(config)
    pairs = config["comparison"]["pairs"]
    if isinstance(pairs, list):
        for i, pair in enumerate(pairs):
            for j, mid in enumerate(pair):
                if mid not in models:
                    errors.append(f"key 'comparison.pairs[{i}][{j}]' = {mid!r}: not a model of the study")
            if pair[0] == pair[1]:
                errors.append(f"key 'comparison.pairs[{i}]' = {pair!r}: a model is not compared with itself")
    elif not select_pairs(models, pairs):
        errors.append(f"key 'comparison.pairs' = {pairs!r}: selects no pair of models (need two seeds of one eps)")
    return errors


def probe_sample_counts(config: dict) -> dict[str, int]:
    """Images per probe: the test split for natural and adversarial, n_samples for inverted."""
    import math

    n_test = math.ceil(DATASET_SIZES[config["dataset"]["source"]] * config["dataset"]["test_fraction"])
    counts = {"natural": n_test}
    if "adversarial" in config["probes"]:
        counts["adversarial"] = n_test
    if "inverted" in config["probes"]:
        counts["inverted"] = min(n_test, config["probes"]["inverted"]["n_samples"])
    return counts


def validate_config(config: dict) -> dict:
    """Validate ``config`` against the schema and the study's own consistency rules.

    Raises :class:`ConfigError` listing every problem, each naming its key and value.
    Returns the config unchanged on success.
    """
    errors = _schema_errors(config)
    if not errors:
        errors = _semantic_errors(config)
    if errors:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(errors))
    return config


def canonical(obj):
    """``obj`` with every dict's keys sorted, recursively. Snakemake compares a rule's params
    as text, so the order of keys in a YAML file must not make a job look changed."""
    if isinstance(obj, dict):
        return {key: canonical(obj[key]) for key in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read a YAML config and deep-merge ``overrides`` into it (as Snakemake merges --configfile)."""
    config = yaml.safe_load(Path(path).read_text())
    return deep_update(config, overrides or {})


def deep_update(base: dict, update: dict) -> dict:
    """Recursive dict update: nested dicts merge, everything else is replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base
