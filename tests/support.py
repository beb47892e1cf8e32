"""Helpers shared by the test files: running Snakemake on the repository's Snakefile, reading
its dry-run plans, writing configs over the tiny study's, and fake zoo checkpoints.

A plain module, not a conftest: pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in
pyproject.toml's ``[tool.pytest.ini_options]``), so a test file in ``tests/unit``,
``tests/workflow`` or ``tests/faults`` imports it as ``from support import snakemake``.
``conftest.py`` keeps only fixtures and hooks.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def rule_blocks(text: str) -> dict[str, str]:
    """Rule name -> the rule's text (up to the next top-level statement) in a .smk file's text."""
    blocks = {}
    for match in re.finditer(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.M):
        blocks[match.group(1)] = match.group(2)
    return blocks


def workflow_rules() -> dict[str, str]:
    """Rule name -> the rule's text, for every rule in workflow/rules/."""
    return {name: body for path in RULE_FILES for name, body in rule_blocks(path.read_text()).items()}


def device_rules() -> set[str]:
    """Rules whose `params:` include `device=`: their jobs run torch on the configured device."""
    rules = set()
    for name, body in workflow_rules().items():
        params = re.search(r"^    params:\n((?:        .*\n)+)", body, re.M)
        if params and re.search(r"^        device=", params.group(1), re.M):
            rules.add(name)
    return rules


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
    return job_stats(proc.stdout + proc.stderr)


def job_stats(output: str) -> dict[str, int]:
    """Jobs per rule from Snakemake's "Job stats" table (empty when there is none)."""
    if "Job stats:" not in output:
        return {}
    jobs = {}
    for line in output.split("Job stats:", 1)[1].splitlines()[3:]:
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


def madry_checkpoint(net, mean, std) -> dict:
    """A checkpoint as the robustness library (Salman et al. 2020) saves it: the AttackerModel
    under DataParallel, with normaliser buffers and the attacker's copy of the classifier."""
    import torch  # here, not at the top: conftest imports this module in every run

    state = {"module.normalizer.new_mean": mean.view(3, 1, 1), "module.normalizer.new_std": std.view(3, 1, 1),
             "module.attacker.normalize.new_mean": mean.view(3, 1, 1), "module.attacker.normalize.new_std": std.view(3, 1, 1)}
    for k, v in net.state_dict().items():
        state[f"module.model.{k}"] = v
        state[f"module.attacker.model.{k}"] = torch.zeros_like(v)  # must be ignored
    return {"model": state, "epoch": 90, "schedule": None, "args": argparse.Namespace(arch="resnet18", eps=3.0)}
