"""Config validation through the workflow: every paper config is valid and Snakemake builds its
DAG (a dry run), one model job per model with the config's resources. (The in-process config
tests are in tests/unit/test_config.py.)"""

import pytest
import yaml

from robustlens.config import expand_models, load_config, validate_config
from support import REPO, planned_job_details

PAPER_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=[p.stem for p in PAPER_CONFIGS])
def test_paper_config_is_valid_and_builds_its_dag(path, tmp_path):
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
