"""Bad input: every bad config stops before any job runs, non-zero, naming the key and value.

A table of bad configs (each a deep-merge over the tiny study; lists replace). Every row is
checked in-process through ``robustlens.config.validate_config`` (what the Snakefile runs at
parse time); the rows marked ``cli`` also go through the real ``snakemake -n`` command line.
tests/unit/test_config.py holds further rows (kept there, not repeated here, except the two this
table must cover end to end: a duplicate model id and a malformed sha256).
"""

from __future__ import annotations

import copy

import pytest
import yaml
from support import REPO, TINY, snakemake

from robustlens.config import ConfigError, deep_update, load_config, validate_config

M0, M1 = "smallcnn-l2-eps0-s0", "smallcnn-l2-eps0-s1"
SHA = "ab" * 32
URL_MODEL = {"id": "r50", "source": "url", "url": "https://example.org/r50.pt", "sha256": SHA, "arch": "resnet50", "eps": 0}
IMAGEFOLDER = {"source": "imagefolder", "root": "imagenet", "max_train": 100, "max_test": 50}

# (row id, override, offending key, offending value as it must appear in the message (None: the
#  key is the offence), whether the row also runs through the snakemake CLI)
ROWS = [
    ("unknown top-level key", {"lerning_rate": 0.1}, "lerning_rate", None, True),
    ("nested unknown key", {"training": {"epoch": 3}}, "training.epoch", None, False),
    ("deeply nested unknown key", {"comparison": {"rtd": {"trials": 5}}}, "comparison.rtd.trials", None, False),
    ("wrong type", {"heads": {"epochs": 2.5}}, "heads.epochs", "2.5", False),
    ("string for a list", {"model_grid": {"eps": "0,1"}}, "model_grid.eps", "'0,1'", False),
    ("negative epochs", {"training": {"epochs": -3}}, "training.epochs", "-3", False),
    ("eps < 0 in the attack grid", {"evaluation": {"eps": [1, -0.5]}}, "evaluation.eps[1]", "-0.5", False),
    ("eps < 0 of the adversarial probe", {"probes": {"adversarial": {"eps": -1}}}, "probes.adversarial.eps", "-1", True),
    ("empty seed list", {"model_grid": {"seeds": []}}, "model_grid.seeds", "[]", False),
    ("no model at all", {"model_grid": None, "models": []}, "models", "[]", False),
    ("duplicate model ids", {"models": [{**URL_MODEL}, {**URL_MODEL}]}, "models[1].id", "'r50'", False),
    ("pair naming an unknown model", {"comparison": {"pairs": [[M0, "ghost"]]}}, "comparison.pairs[0][1]", "'ghost'", True),
    ("model paired with itself", {"comparison": {"pairs": [[M0, M0]]}}, "comparison.pairs[0]", repr([M0, M0]), False),
    ("unknown baseline measure", {"comparison": {"baseline": {"measures": ["cca"]}}}, "comparison.baseline.measures[0]", "'cca'", False),
    ("unknown matrix measure", {"comparison": {"matrix": {"measures": ["cka", "svcca"]}}}, "comparison.matrix.measures[1]", "'svcca'", False),
    ("layer not in the model", {"activations": {"layers": ["block1", "block4"]}}, "activations.layers[1]", "'block4'", True),
    ("RTD layer not extracted", {"comparison": {"rtd": {"layers": ["block2"]}}}, "comparison.rtd.layers[0]", "'block2'", False),
    ("k larger than the sample count", {"comparison": {"knn_k": 30}}, "comparison.knn_k", "30", False),
    ("unknown dataset source", {"dataset": {"source": "svhn"}}, "dataset.source", "'svhn'", False),
    ("wrong enum for norm", {"probes": {"adversarial": {"norm": "l1"}}}, "probes.adversarial.norm", "'l1'", False),
    ("norm in the wrong case", {"evaluation": {"norm": "L2"}}, "evaluation.norm", "'L2'", False),
    ("malformed sha256", {"models": [{**URL_MODEL, "sha256": "abc123"}]}, "models[0].sha256", "'abc123'", True),
    ("transfer task that does not exist", {"transfer": {"tasks": ["digits-gaussian_noise-9"]}}, "transfer.tasks[0]", "'digits-gaussian_noise-9'", False),
    ("confidence level above 1", {"statistics": {"ci": 1.5}}, "statistics.ci", "1.5", False),
    ("zero threads", {"threads": 0}, "threads", "0", False),
    ("negative figure size", {"figures": {"cka_by_layer": {"width": -4}}}, "figures.cka_by_layer.width", "-4", False),
    # paths from the config must not lead outside the working directory
    ("data root outside the working directory", {"dataset": {**IMAGEFOLDER, "root": "../imagenet"}}, "dataset.root", "'../imagenet'", True),
    ("file path climbing out through a folder", {"dataset": {**IMAGEFOLDER, "classes_file": "data/../../classes.txt"}}, "dataset.classes_file", "'data/../../classes.txt'", False),
    ("model id that is a path", {"models": [{**URL_MODEL, "id": "../evil"}]}, "models[0].id", "'../evil'", False),
    ("dataset name that is a path", {"dataset": {"name": "../digits"}}, "dataset.name", "'../digits'", False),
    ("url without a file name", {"models": [{**URL_MODEL, "url": "https://example.org/r50/.."}]}, "models[0].url", "'https://example.org/r50/..'", False),
]


def tiny_with(override: dict) -> dict:
    base = load_config(REPO / "config.yaml", yaml.safe_load(TINY.read_text()))
    return deep_update(base, copy.deepcopy(override))


@pytest.mark.parametrize("override,key,value", [r[1:4] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_config_is_refused_naming_key_and_value(override, key, value):
    with pytest.raises(ConfigError) as err:
        validate_config(tiny_with(override))
    message = str(err.value)
    line = next((ln for ln in message.splitlines() if f"'{key}'" in ln), None)
    assert line is not None, f"no line names '{key}':\n{message}"
    if value is not None:
        assert value in line, f"the line naming '{key}' does not show {value}:\n{line}"


CLI_ROWS = [r for r in ROWS if r[4]]


@pytest.mark.parametrize("override,key,value", [r[1:4] for r in CLI_ROWS], ids=[r[0] for r in CLI_ROWS])
def test_bad_config_stops_snakemake_before_any_job(tmp_path, override, key, value):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    work = tmp_path / "work"
    work.mkdir()
    proc = snakemake(work, "-n", configfiles=(TINY, bad), check=False)
    assert proc.returncode != 0
    assert f"'{key}'" in proc.stderr and (value is None or value in proc.stderr), proc.stderr[-3000:]
    assert "Building DAG" not in proc.stdout + proc.stderr  # stopped at parse time
    assert not (work / "results").exists() and not (work / "logs").exists()


def test_absolute_data_paths_the_user_named_are_allowed(tmp_path):
    """The path check refuses escapes, not data that lives elsewhere on purpose."""
    validate_config(tiny_with({"dataset": {**IMAGEFOLDER, "root": str(tmp_path / "imagenet"), "classes_file": "/data/classes.txt"}}))
    validate_config(tiny_with({"dataset": {**IMAGEFOLDER, "root": "data/../data/imagenet"}}))  # stays inside


def test_rows_are_many_and_distinct():
    assert len(ROWS) >= 20 and len({r[0] for r in ROWS}) == len(ROWS) and len(CLI_ROWS) >= 5
