"""Study configuration: schema validation with messages that name the key, and the expansion
of a config into the resolved model specs and comparison pairs the rules are built from.

No torch here: the Snakefile imports this module at parse time.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml

from robustlens.tasks import DATASET_TASKS, TASK_CHANNELS, dataset_task_spec, parse_task

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"

#: Image channels and classes of each dataset source, known without loading the data
#: (``imagefolder``: classes from the config's ``dataset.num_classes``).
DATASET_SHAPES = {
    "sklearn_digits": {"in_channels": 1, "num_classes": 10},
    "cifar10": {"in_channels": 3, "num_classes": 10},
    "cifar100": {"in_channels": 3, "num_classes": 100},
    "fashion_mnist": {"in_channels": 1, "num_classes": 10},
    "shapes": {"in_channels": 1, "num_classes": 4},
    "imagefolder": {"in_channels": 3, "num_classes": None},
}
#: Number of images of each dataset source (``shapes``: ``dataset.n_samples``; ``imagefolder``:
#: unknown before the folder is read, so its splits are capped by ``max_train``/``max_test``).
DATASET_SIZES = {"sklearn_digits": 1797, "cifar10": 60000, "cifar100": 60000, "fashion_mnist": 70000}
#: Sources with their own train/test split (test_fraction is not used), and its test size.
OFFICIAL_TEST_SIZES = {"cifar10": 10000, "cifar100": 10000, "fashion_mnist": 10000}

#: Classes of the datasets a zoo checkpoint can be trained on.
ZOO_CLASSES = {"imagenet": 1000, "cifar10": 10, "cifar100": 100}
#: The torchvision architectures a ``url`` checkpoint can hold (their block layers:
#: :data:`robustlens.sources.TORCHVISION_LAYERS`).
URL_ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "wide_resnet50_2", "wide_resnet50_4")
#: Where downloaded checkpoints go (relative to the working directory; git-ignored).
DATA_DIR = "data"


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


def dataset_shape(dataset: dict) -> dict:
    """``in_channels`` and ``num_classes`` of the configured dataset."""
    shape = dict(DATASET_SHAPES[dataset["source"]])
    if dataset["source"] == "imagefolder":
        shape["num_classes"] = dataset.get("num_classes", 1000)
    return shape


def weights_path(entry: dict) -> str:
    """Where a zoo model's own weights file lives (what the fetch rules write)."""
    if entry["source"] == "robustbench":
        return f"{DATA_DIR}/robustbench/{entry['dataset']}/{entry['threat_model']}/{entry['name']}.pt"
    if entry["source"] == "timm":
        ext = ".pth" if entry.get("url", "").endswith((".pth", ".pth.tar", ".bin")) else ".safetensors"
        return f"{DATA_DIR}/timm/{entry['name']}.{entry['tag']}{ext}"
    return f"{DATA_DIR}/checkpoints/{entry['url'].rstrip('/').rsplit('/', 1)[-1]}"


def resolve_entry(entry: dict, config: dict) -> dict:
    """The resolved spec of one ``models:`` entry: defaults filled in, ``arch`` with the input
    channels and classes, and for zoo sources the ``weights`` file path."""
    spec = {"norm": "l2", "seed": 0, **entry}
    spec["eps"] = float(spec["eps"])
    if entry["source"] == "train":
        spec["arch"] = {**config["architecture"], **entry.get("arch", {}), **dataset_shape(config["dataset"])}
        return spec
    spec["weights"] = weights_path(entry)
    spec.setdefault("layers", [])
    if entry["source"] == "robustbench":
        spec["model_dir"] = f"{DATA_DIR}/robustbench"
        spec["arch"] = {"name": f"robustbench:{entry['name']}", "in_channels": 3, "num_classes": ZOO_CLASSES[entry["dataset"]]}
    elif entry["source"] == "timm":
        spec["arch"] = {"name": f"timm:{entry['name']}", "in_channels": 3, "num_classes": entry.get("num_classes", 1000)}
    else:  # url
        spec.setdefault("dataset", "imagenet")
        spec["arch"] = {"name": entry["arch"], "in_channels": 3, "num_classes": ZOO_CLASSES[spec["dataset"]]}
        spec["layers"] = ["layer1", "layer2", "layer3", "layer4"]
    return spec


def expand_models(config: dict) -> dict[str, dict]:
    """Resolved specs of every model of the study, by id: the trained grid (``model_grid``,
    in grid order; ``null`` for none), then the ``models:`` entries in their order."""
    models = {}
    if config.get("model_grid"):
        arch = dict(config["architecture"])
        arch.update(dataset_shape(config["dataset"]))
        norm = config["training"]["norm"]
        for eps, seed in itertools.product(config["model_grid"]["eps"], config["model_grid"]["seeds"]):
            mid = model_id(arch["name"], norm, eps, seed)
            models[mid] = {"id": mid, "source": "train", "arch": arch, "eps": float(eps), "norm": norm, "seed": int(seed)}
    for entry in config.get("models") or []:
        models[entry["id"]] = resolve_entry(entry, config)
    return models


def representation_layers(arch: dict) -> list[str]:
    """Layers an architecture exposes to the activation store (mirrors ``zoo.SmallCNN``,
    ``resnet.CifarResNet18`` and the torchvision ResNets of ``url`` checkpoints). ``arch`` is
    an ``architecture`` block, or a resolved model spec (whose zoo entries list their
    ``layers``)."""
    if "source" in arch:
        if arch["source"] != "train":
            return [*arch["layers"], "penultimate", "logits"]
        arch = arch["arch"]
    if arch["name"] in ("resnet18_cifar", "resnet18", "resnet50"):
        return ["layer1", "layer2", "layer3", "layer4", "penultimate", "logits"]
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


def _model_list_errors(config: dict) -> list[str]:
    """Duplicate ids (among the entries and against the grid), and architectures that do not
    fit their source."""
    errors = []
    grid = expand_models({**config, "models": []})
    seen: dict[str, str] = {}
    for i, entry in enumerate(config.get("models") or []):
        where = f"models[{i}].id"
        if entry["id"] in grid:
            errors.append(f"key '{where}' = {entry['id']!r}: duplicate model id (a model of model_grid has it)")
        elif entry["id"] in seen:
            errors.append(f"key '{where}' = {entry['id']!r}: duplicate model id (also {seen[entry['id']]})")
        seen.setdefault(entry["id"], where)
    arch = config["architecture"]
    if arch["name"] == "resnet18_cifar" and (len(arch["widths"]) != 4 or arch["convs_per_block"] != 2):
        errors.append(f"key 'architecture.widths' = {arch['widths']!r}: resnet18_cifar needs 4 stage widths and convs_per_block 2")
    if arch["name"] in ("resnet18", "resnet50") and list(arch["widths"]) != [64, 128, 256, 512]:
        errors.append(f"key 'architecture.widths' = {arch['widths']!r}: torchvision's {arch['name']} has stage widths [64, 128, 256, 512]")
    return errors


def _semantic_errors(config: dict) -> list[str]:
    errors = _model_list_errors(config)
    if errors:
        return errors
    models = expand_models(config)
    if not models:
        return ["key 'models' = []: the study has no model (model_grid is null and models is empty)"]
    for i, layer in enumerate(config["activations"]["layers"]):
        for spec in models.values():
            layers = representation_layers(spec)
            if layer not in layers:
                errors.append(
                    f"key 'activations.layers[{i}]' = {layer!r}: not a layer of model {spec['id']!r} (known: {', '.join(layers)})"
                )
                break
    for i, layer in enumerate(config["comparison"]["rtd"]["layers"]):
        if layer not in config["activations"]["layers"]:
            errors.append(f"key 'comparison.rtd.layers[{i}]' = {layer!r}: not one of activations.layers")
    k = config["comparison"]["knn_k"]
    n_probe = min(probe_sample_counts(config).values())
    if k >= n_probe:
        errors.append(f"key 'comparison.knn_k' = {k}: must be smaller than the smallest probe's {n_probe} samples")
    errors += _wasted_work_errors(config)
    errors += _transfer_errors(config, models)
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


def _transfer_errors(config: dict, models: dict[str, dict]) -> list[str]:
    """Transfer tasks that cannot run: unknown names (the old ``digits`` named with its new
    name), images with more channels than a transferred model takes, settings for a dataset
    source no task uses, an augmentation on linear probing (it fits on fixed features), seeds
    that select no model."""
    transfer, errors = config["transfer"], []
    if models and not any(spec["seed"] in transfer["seeds"] for spec in models.values()):
        errors.append(f"key 'transfer.seeds' = {transfer['seeds']!r}: selects no model "
                      f"(the models' seeds are {sorted({spec['seed'] for spec in models.values()})!r})")
    channels = {spec["arch"]["in_channels"] for spec in models.values() if spec["seed"] in transfer["seeds"]}
    sources = set()
    for i, name in enumerate(transfer["tasks"]):
        try:
            source = parse_task(name)["source"]
        except ValueError as err:
            errors.append(f"key 'transfer.tasks[{i}]' = {name!r}: {err}")
            continue
        sources.add(source)
        task_channels = dataset_shape(config["dataset"])["in_channels"] if source == "heldout" else TASK_CHANNELS[source]
        too_many = sorted(c for c in channels if task_channels > c)
        if too_many:
            errors.append(f"key 'transfer.tasks[{i}]' = {name!r}: its images have {task_channels} channels, a transferred "
                          f"model takes {too_many[0]} (1-channel images are repeated for 3-channel models, not the reverse)")
    for source in set(transfer["task_settings"]) & set(DATASET_TASKS) - sources:
        errors.append(f"key 'transfer.task_settings.{source}': no task in transfer.tasks uses it")
    if transfer["lp"].get("augment", "none") != "none":
        errors.append(f"key 'transfer.lp.augment' = {transfer['lp']['augment']!r}: linear probing fits on fixed features "
                      f"of un-augmented images; augment ft and lp_ft only")
    return errors


def _wasted_work_errors(config: dict) -> list[str]:
    """Settings whose work would be thrown away or silently capped: RTD trials that each draw a
    whole probe (every trial then gives the same value), and more inversion targets than test
    images."""
    errors = []
    comparison, rtd = config["comparison"], config["comparison"]["rtd"]
    counts = probe_sample_counts(config)
    # pairs are compared on every probe; the heatmaps on the matrix probe only
    rtd_probes = counts if "rtd" in comparison["measures"] else (
        {"natural": counts["natural"]} if "rtd" in comparison["matrix"]["measures"] else {})
    if rtd["layers"] and rtd_probes:
        probe, n = min(rtd_probes.items(), key=lambda item: item[1])
        if rtd["batch"] > n:
            errors.append(
                f"key 'comparison.rtd.batch' = {rtd['batch']}: larger than the {n} samples of the {probe} probe, so "
                f"each of the {rtd['n_trials']} trials would draw all {n} and give the same value; use a batch below {n}"
            )
    inverted = config["probes"].get("inverted")
    n_test = n_test_images(config["dataset"])
    if inverted and inverted["n_samples"] > n_test:
        errors.append(
            f"key 'probes.inverted.n_samples' = {inverted['n_samples']}: more than the {n_test} images of the "
            f"test split its targets are drawn from"
        )
    return errors


def n_test_images(dataset: dict) -> int:
    """Images in the test split of the configured dataset: ``ceil(size * test_fraction)`` of a
    pooled source; the official test split (capped by ``max_test``) of the others."""
    import math

    source = dataset["source"]
    if source in OFFICIAL_TEST_SIZES or source == "imagefolder":
        official = OFFICIAL_TEST_SIZES.get(source, dataset.get("max_test", 0))
        return min(official, dataset.get("max_test", official))
    size = dataset.get("n_samples", 2000) if source == "shapes" else DATASET_SIZES[source]
    return math.ceil(size * dataset["test_fraction"])


def n_train_images(dataset: dict) -> int:
    """Images in the training split: the rest of a pooled source; the official training split
    (capped by ``max_train``) of the others; an image folder's ``max_train`` (its size is
    unknown before the folder is read: 1.3 million, ImageNet's, without a cap)."""
    source = dataset["source"]
    if source in OFFICIAL_TEST_SIZES:
        official = DATASET_SIZES[source] - OFFICIAL_TEST_SIZES[source]
        return min(official, dataset.get("max_train", official))
    if source == "imagefolder":
        return dataset.get("max_train", 1_281_167)
    size = dataset.get("n_samples", 2000) if source == "shapes" else DATASET_SIZES[source]
    return size - n_test_images(dataset)


def dataset_task_images(source: str, settings: dict) -> tuple[int, int]:
    """(training, test) images of a dataset transfer task (its own splits, capped)."""
    spec = dataset_task_spec(source, settings)
    return n_train_images(spec), n_test_images(spec)


def probe_sample_counts(config: dict) -> dict[str, int]:
    """Images per probe: the test split for natural and adversarial, n_samples for inverted."""
    n_test = n_test_images(config["dataset"])
    counts = {"natural": n_test}
    if "adversarial" in config["probes"]:
        counts["adversarial"] = n_test
    if "inverted" in config["probes"]:
        counts["inverted"] = min(n_test, config["probes"]["inverted"]["n_samples"])
    return counts


#: Config keys that name files or folders: these, and any key ending in one of them after "_"
#: (``dataset.classes`` is "imagenet" or a file; ``num_classes`` is a number, so never checked).
PATH_KEYS = ("path", "root", "dir", "directory", "file", "checkpoint", "weights", "model_dir", "classes")


def _is_path_key(key) -> bool:
    key = str(key)
    return key in PATH_KEYS or any(key.endswith(f"_{name}") for name in PATH_KEYS)


def escapes_workdir(value: str) -> bool:
    """Whether ``value``, a relative path, leads outside the working directory (``..`` past its
    top, judged on the text, so links inside the working directory stay allowed). Absolute
    paths do not count: they are data paths the user named."""
    import posixpath

    if Path(value).is_absolute():
        return False
    norm = posixpath.normpath(value.replace("\\", "/"))
    return norm == ".." or norm.startswith("../")


def _path_errors(config: dict) -> list[str]:
    """Paths from the config that would read or write outside the working directory: relative
    paths through ``..`` under a path-like key, and the files derived from model entries
    (a ``url`` whose last segment is ``..`` or empty)."""
    errors = []

    def walk(node, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{where}.{key}" if where else str(key)
                if isinstance(value, str) and _is_path_key(key):
                    if escapes_workdir(value):
                        errors.append(
                            f"key '{here}' = {value!r}: a relative path that leads outside the working "
                            f"directory; give a path inside it, or an absolute path"
                        )
                else:
                    walk(value, here)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(config, "")
    for i, entry in enumerate(config.get("models") or []):
        url = entry.get("url") if isinstance(entry, dict) else None
        if isinstance(url, str) and url.rstrip("/").rsplit("/", 1)[-1] in ("", ".", ".."):
            errors.append(f"key 'models[{i}].url' = {url!r}: does not end in a file name")
    return errors


def validate_config(config: dict) -> dict:
    """Validate ``config`` against the schema and the study's own consistency rules.

    Raises :class:`ConfigError` listing every problem, each naming its key and value.
    Returns the config unchanged on success.
    """
    errors = _schema_errors(config)
    if not errors:
        errors = _path_errors(config)
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
