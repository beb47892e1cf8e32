"""The Snakemake profiles: what resources each job would ask for (dry runs, no cluster needed).

The SLURM profile itself runs on a real one-node cluster in `make test-slurm` (tests/slurm/).
"""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, planned_job_details, snakemake

SLURM = REPO / "profiles" / "slurm"
LOCAL = REPO / "profiles" / "local"


def planned_resources(workdir, *args) -> dict[str, list[dict[str, str]]]:
    """The resources of every job a dry run plans, by rule."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for job in planned_job_details(workdir, *args):
        jobs.setdefault(job["rule"], []).append(job["resources"])
    return jobs


@pytest.fixture(scope="module")
def gpu_rules(tmp_path_factory) -> set[str]:
    """Rules whose jobs declare a GPU (without a profile)."""
    jobs = planned_resources(tmp_path_factory.mktemp("plain"))
    rules = {rule for rule, resources in jobs.items() if any(int(r.get("gpu", 0)) > 0 for r in resources)}
    assert {"train_model", "extract_natural"} <= rules
    return rules


def test_slurm_profile_asks_for_no_gpu_by_default(gpu_rules, tmp_path):
    jobs = planned_resources(tmp_path, "--profile", str(SLURM))
    asking = {rule for rule, resources in jobs.items() if any(int(r.get("gpu", 0)) > 0 for r in resources)}
    assert not asking, f"rules that would get `sbatch --gpus` on a GPU-less cluster: {asking}"
    assert gpu_rules <= set(yaml.safe_load((SLURM / "config.yaml").read_text())["set-resources"])


def test_slurm_profile_passes_memory_and_runtime_of_the_rules(tmp_path):
    jobs = planned_resources(tmp_path, "--profile", str(SLURM))
    train = jobs["train_model"][0]
    assert train["mem_mb"] == "4000" and train["runtime"] == "120"  # the rule's own
    table = jobs["models_table"][0]
    profile = yaml.safe_load((SLURM / "config.yaml").read_text())["default-resources"]
    assert table["mem_mb"] == str(profile["mem_mb"]) and table["runtime"] == str(profile["runtime"])
    assert yaml.safe_load((SLURM / "config.yaml").read_text())["executor"] == "slurm"


def test_gpus_can_be_asked_for_on_the_command_line(gpu_rules, tmp_path):
    overrides = [f"{rule}:gpu=1" for rule in sorted(gpu_rules)]
    jobs = planned_resources(tmp_path, "--profile", str(SLURM), "--set-resources", *overrides)
    for rule in gpu_rules:
        assert all(r["gpu"] == "1" for r in jobs[rule]), rule


def test_local_profile_caps_concurrent_gpu_jobs(tmp_path):
    profile = yaml.safe_load((LOCAL / "config.yaml").read_text())
    assert profile["resources"]["gpu"] == 1
    out = snakemake(tmp_path, "-n", "--profile", str(LOCAL)).stdout
    assert "Job stats:" in out
