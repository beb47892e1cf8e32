"""Snakemake's between-workflow cache (`--cache`, `$SNAKEMAKE_OUTPUT_CACHE`) for the expensive rules.

One study is run in two empty working directories sharing one cache: the second must take
every dataset, checkpoint, activation store and probe from the cache, run none of those jobs,
and still give the same results. To keep it fast, both runs build, for one model, one job of
every cached rule (files and directory() outputs alike) and that model's comparison with its
partner on the natural probe, which reads stores taken from the cache.
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest

from support import planned_job_details, snakemake, write_config


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, request) -> Path:
    path = tmp_path_factory.mktemp("output_cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("SNAKEMAKE_OUTPUT_CACHE", str(path))
    request.addfinalizer(patch.undo)
    return path


def involves(job: dict, model: str) -> bool:
    return model in job["wildcards"].values()


@pytest.fixture(scope="module")
def plan(cache_dir, tmp_path_factory) -> dict:
    """The targets both runs build, and the jobs that build them."""
    everything = planned_job_details(tmp_path_factory.mktemp("plan"), "--cache")
    cached_rules = {job["rule"] for job in everything if job["cache"]}
    assert {"prepare_dataset", "train_model", "extract_natural"} <= cached_rules
    # a model that has a job in every cached per-model rule (e.g. one taking part in transfer)
    per_model = {job["rule"] for job in everything if job["cache"] and "model" in job["wildcards"]}
    models = [job["wildcards"]["model"] for job in everything if job["rule"] == "train_model"]
    model = next(m for m in models if {j["rule"] for j in everything if j["cache"] and involves(j, m)} == per_model)
    # one job of each cached rule: the model's, or any for a rule without models (the dataset)
    chain = {}
    for job in everything:
        if job["cache"] and (involves(job, model) or "model" not in job["wildcards"]):
            chain.setdefault(job["rule"], job)
    # a reader of cached stores: the comparison of one of the model's pairs
    readers = [j for j in everything if j["rule"] == "compare_similarity" and involves(j, model)][:1]
    assert readers
    targets = sorted({f for job in [*chain.values(), *readers] for f in job["output"]})
    jobs = planned_job_details(tmp_path_factory.mktemp("plan"), *targets, "--cache")
    cached = [job for job in jobs if job["cache"]]
    assert {job["rule"] for job in cached} == cached_rules, "every cached rule is exercised"
    assert all(job["cache"] == "written to" for job in cached), "the cache starts empty"
    return {"model": model, "cached_rules": cached_rules, "cached": cached, "targets": targets, "readers": readers}


@pytest.fixture(scope="module")
def first(cache_dir, plan, tmp_path_factory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("first")
    proc = snakemake(workdir, *plan["targets"], "--cores", "2", "--cache")  # --cache takes rule names
    return workdir, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def second(first, plan, tmp_path_factory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("second")
    proc = snakemake(workdir, *plan["targets"], "--cores", "2", "--cache")  # --cache takes rule names
    return workdir, proc.stdout + proc.stderr


def computed(out: str, jobs: list[dict]) -> dict[str, int]:
    """Jobs of each cached rule that a run with --cache computed: Snakemake stores a computed
    job's outputs in the cache ("Moving output file <f> to cache."); a job taken from the cache
    only links them ("Symlinking output file <f> from cache.")."""
    moved = {line.split()[3] for line in out.splitlines() if line.startswith("Moving output file ")}
    counts = dict.fromkeys({job["rule"] for job in jobs}, 0)
    for job in jobs:
        counts[job["rule"]] += bool(set(job["output"]) & moved)
    return counts


def test_first_run_fills_the_cache(first, plan, cache_dir):
    workdir, out = first
    ran = computed(out, plan["cached"])
    assert ran == {rule: sum(j["rule"] == rule for j in plan["cached"]) for rule in plan["cached_rules"]}
    assert ran["train_model"] == 2 and ran["extract_natural"] == 2  # the model and its partner
    assert (workdir / f"logs/train_model/{plan['model']}.log").stat().st_size > 0
    assert len(list(cache_dir.iterdir())) >= sum(len(j["output"]) for j in plan["cached"])


def test_second_run_trains_and_extracts_nothing(first, second, plan, cache_dir):
    workdir, out = second
    assert computed(out, plan["cached"]) == dict.fromkeys(plan["cached_rules"], 0)
    # a file is linked from the cache; a directory is made anew, with links to its entries
    linked = [line.split()[3] for line in out.splitlines() if line.startswith("Symlinking output file ")]
    for job in plan["cached"]:
        for target in job["output"]:
            assert any(f == target or f.startswith(target + "/") for f in linked), f"{target} not from the cache"
    checkpoint = workdir / f"results/models/{plan['model']}/checkpoint.pt"
    assert checkpoint.is_symlink() and Path(os.path.realpath(checkpoint)).parent == cache_dir.resolve()
    # no training ran here: its log is the empty file Snakemake creates for every job
    assert (workdir / f"logs/train_model/{plan['model']}.log").stat().st_size == 0
    # the readers ran on the stores taken from the cache (each verifies its store's checksum)
    # and found what they found on the computed ones
    for reader in plan["readers"]:
        for output in reader["output"]:
            assert filecmp.cmp(first[0] / output, workdir / output, shallow=False), output


def test_a_changed_setting_misses_the_cache(second, cache_dir, tmp_path):
    """The cache key covers params: other training settings must not reuse the checkpoints."""
    config = write_config(tmp_path / "lr.yaml", {"training": {"lr": 0.01}})
    jobs = planned_job_details(tmp_path / "fresh", "--cache", configfiles=(config,))
    by_rule = {}
    for job in jobs:
        if job["cache"]:
            by_rule.setdefault(job["rule"], set()).add(job["cache"])
    assert by_rule["prepare_dataset"] == {"obtained from"}  # the dataset does not depend on lr
    assert by_rule["train_model"] == {"written to"}
    assert by_rule["extract_natural"] == {"written to"}  # downstream of a new checkpoint
