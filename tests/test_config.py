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
