"""Shared fixtures: the tiny end-to-end workflow run, made once per session and reused."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def snakemake(workdir: Path, *args: str, configfiles=(TINY,), check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake on the repository's Snakefile in ``workdir`` with the given config files."""
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += list(args)  # targets first: --configfile takes every value after it
    if configfiles:
        cmd += ["--configfile", *map(str, configfiles)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str, configfiles=(TINY,)) -> dict[str, int]:
    """Jobs a dry run plans, by rule (empty when nothing is to be done)."""
    proc = snakemake(workdir, "-n", *args, configfiles=configfiles)
    out = proc.stdout + proc.stderr
    jobs = {}
    if "Job stats:" not in out:
        return jobs
    table = out.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        jobs[match.group(1)] = int(match.group(2))
    jobs.pop("total", None)
    return jobs


def write_config(path: Path, overrides: dict, base: Path = TINY) -> Path:
    """A config file: the tiny config with ``overrides`` deep-merged into it."""
    from robustlens.config import deep_update

    config = deep_update(yaml.safe_load(base.read_text()), overrides)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny study run end to end once; its working directory (do not modify it)."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture
def tiny_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the finished tiny run, for tests that change configs or files."""
    dest = tmp_path / "run"
    shutil.copytree(tiny_run, dest, symlinks=True)
    return dest


def planned_job_details(workdir: Path, *args: str, configfiles=(TINY,)) -> list[dict]:
    """Every job a dry run plans, as printed by Snakemake: ``rule``, ``input`` and ``output``
    (lists), ``wildcards`` and ``resources`` (dicts of strings), and ``cache`` ("obtained from"
    or "written to" the between-workflow cache, when run with ``--cache``; else None)."""
    proc = snakemake(workdir, "-n", *args, configfiles=configfiles)
    jobs: list[dict] = []
    for line in proc.stdout.splitlines():
        if match := re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line):
            jobs.append(
                {"rule": match.group(1), "input": [], "output": [], "wildcards": {}, "resources": {}, "cache": None}
            )
        elif jobs and (match := re.match(r"^    (input|output|wildcards|resources): (.*)$", line)):
            key, value = match.groups()
            items = value.split(", ")
            jobs[-1][key] = items if key in ("input", "output") else dict(item.split("=", 1) for item in items)
        elif jobs and (match := re.match(r"^Output file .* will be (obtained from|written to) global", line)):
            jobs[-1]["cache"] = match.group(1)
    return jobs
