"""Config validation, in-process: every bad config names the offending key and value."""

import copy

import pytest
import yaml

from robustlens.config import ConfigError, expand_models, load_config, select_pairs, validate_config
from conftest import REPO, TINY


@pytest.fixture(scope="module")
def default():
    return load_config(REPO / "config.yaml")


def test_default_and_tiny_configs_are_valid(default):
    validate_config(default)
    tiny = load_config(REPO / "config.yaml", yaml.safe_load(TINY.read_text()))
    validate_config(tiny)


def test_default_study_has_15_models_and_15_same_eps_pairs(default):
    models = expand_models(default)
    assert len(models) == 15
    pairs = select_pairs(models, "same_eps")
    # 5 eps x C(3, 2) seed pairs, each pair of equal eps and different seeds
    assert len(pairs) == 15
    assert all(models[a]["eps"] == models[b]["eps"] and models[a]["seed"] != models[b]["seed"] for a, b in pairs)


BAD = [
    ({"traning": {}}, "traning"),
    ({"training": {"epochs": "ten"}}, "training.epochs"),
    ({"training": {"norm": "l3"}}, "training.norm"),
    ({"model_grid": {"eps": [-1]}}, "model_grid.eps[0]"),
    ({"model_grid": {"eps": []}}, "model_grid.eps"),
    ({"model_grid": {"seeds": [0, 0]}}, "model_grid.seeds"),
    ({"activations": {"layers": ["block9"]}}, "activations.layers[0]"),
    ({"activations": {"spatial": "maxpool"}}, "activations.spatial"),
    ({"comparison": {"pairs": [["nope", "smallcnn-l2-eps0-s0"]]}}, "comparison.pairs[0][0]"),
    ({"comparison": {"measures": ["cka_fast"]}}, "comparison.measures[0]"),
    ({"dataset": {"source": "mnist_from_the_moon"}}, "dataset.source"),
    ({"evaluation": {"steps": 5}}, "evaluation.steps"),
    ({"figures": {"dpi": "high"}}, "figures.dpi"),
    ({"device": "tpu"}, "device"),
]


@pytest.mark.parametrize("override,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_names_the_key(default, override, key):
    config = load_config(REPO / "config.yaml", copy.deepcopy(override))
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert f"'{key}'" in str(err.value)


def test_same_eps_needs_two_seeds(default):
    config = load_config(REPO / "config.yaml", {"model_grid": {"seeds": [0]}})
    with pytest.raises(ConfigError, match="comparison.pairs"):
        validate_config(config)


# --------------------------------------------------------------------------- models: entries and paper configs

RB = {"id": "rb", "source": "robustbench", "name": "Standard", "dataset": "cifar10", "threat_model": "L2", "eps": 0}
URL = {"id": "u", "source": "url", "arch": "resnet50", "eps": 3, "url": "https://example.org/r50.ckpt"}
BAD_MODELS = [
    ([{**RB, "source": "hub"}], "models[0].source"),
    ([{**URL, "sha256": "abc123"}], "models[0].sha256"),
    ([{**URL, "sha256": "g" * 64}], "models[0].sha256"),
    ([{**RB, "threat_model": "L3"}], "models[0].threat_model"),
    ([{**RB, "colour": "red"}], "models[0].colour"),
    ([{**URL, "arch": "vgg16"}], "models[0].arch"),
    ([RB, {**URL, "id": "rb"}], "models[1].id"),
    ([{**RB, "id": "smallcnn-l2-eps0-s0"}], "models[0].id"),
]


@pytest.mark.parametrize("models,key", BAD_MODELS, ids=[k + "-" + str(i) for i, (_, k) in enumerate(BAD_MODELS)])
def test_bad_model_entry_names_the_key(models, key):
    config = load_config(REPO / "config.yaml", {"models": copy.deepcopy(models)})
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert f"'{key}'" in str(err.value)


def test_duplicate_model_id_names_key_and_value():
    config = load_config(REPO / "config.yaml", {"models": [RB, {**URL, "id": "rb"}]})
    with pytest.raises(ConfigError, match=r"key 'models\[1\].id' = 'rb': duplicate model id \(also models\[0\].id\)"):
        validate_config(config)


def test_model_entries_resolve_next_to_the_grid():
    config = load_config(REPO / "config.yaml", {"models": [RB, URL], "activations": {"layers": ["penultimate", "logits"]}})
    validate_config(config)
    models = expand_models(config)
    assert list(models)[:15] == list(expand_models(load_config(REPO / "config.yaml")))  # grid ids unchanged
    assert models["rb"]["weights"] == "data/robustbench/cifar10/L2/Standard.pt"
    assert models["u"]["weights"] == "data/checkpoints/r50.ckpt"
    assert (models["u"]["arch"]["num_classes"], models["u"]["seed"], models["u"]["norm"]) == (1000, 0, "l2")


def test_layer_missing_from_a_zoo_model_is_named():
    config = load_config(REPO / "config.yaml", {"models": [RB]})  # default layers block1..4: not RB's
    with pytest.raises(ConfigError, match=r"activations.layers\[0\]' = 'block1': not a layer of model 'rb'"):
        validate_config(config)


def test_imagefolder_needs_root_and_caps():
    config = load_config(REPO / "config.yaml", {"dataset": {"source": "imagefolder"}})
    with pytest.raises(ConfigError, match="'dataset'.*'root' is a required property"):
        validate_config(config)


PAPER_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_the_four_paper_configs_exist():
    assert {p.name for p in PAPER_CONFIGS} >= {
        "cifar10-universality.yaml", "imagenet-universality.yaml", "imagenet-transfer.yaml", "robustbench-filters.yaml"}


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=[p.stem for p in PAPER_CONFIGS])
def test_paper_config_is_valid_and_builds_its_dag(path, tmp_path):
    from conftest import planned_job_details

    config = load_config(REPO / "config.yaml", yaml.safe_load(path.read_text()))
    validate_config(config)
    models = expand_models(config)
    jobs = planned_job_details(tmp_path, configfiles=(path,))
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    # one model job per model (trained or loaded from the zoo), each with its resources
    model_jobs = by_rule.get("train_model", []) + by_rule.get("zoo_model", [])
    assert sorted(j["wildcards"]["model"] for j in model_jobs) == sorted(models)
    for job in model_jobs:
        expected = config["resources"][job["rule"]]
        assert {k: int(job["resources"][k]) for k in expected} == expected
    assert len(by_rule.get("fetch_weights", [])) == sum(spec["source"] != "train" for spec in models.values())
