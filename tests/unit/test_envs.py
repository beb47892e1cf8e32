"""The conda environments (envs/*.yaml) pin what requirements.txt pins, every rule names one, and
the environment that parsing the workflow needs (envs/workflow.yaml) lists what the parse imports.

Creating the environments needs conda and its channels, which the test machine lacks; these
tests check the files, and that the checkout is where the environments' pip section looks.
"""

from __future__ import annotations

import re

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from support import REPO, RULE_FILES, rule_blocks

#: The environment Snakemake injects into itself to parse the workflow (the Snakefile's global
#: `conda:`); every other file is a rule's environment.
PARSE_ENV = REPO / "envs" / "workflow.yaml"
ENVS = sorted(set((REPO / "envs").glob("*.yaml")) - {PARSE_ENV})
# In requirements.txt but not needed inside a job: the test runner, and the plugin with which
# the Snakemake main process submits jobs to SLURM (it never runs inside a rule's environment).
NOT_IN_ENVS = {"pytest", "snakemake-executor-plugin-slurm"}


def requirement_lines(text: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def pins(lines) -> dict[str, str]:
    """Project name -> version specifier of requirement lines (options such as -e, -c left out)."""
    result = {}
    for line in lines:
        if line.startswith("-"):
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in result, f"{req.name} pinned twice"
        result[name] = str(req.specifier)
    return result


def pip_section(env: dict) -> list[str]:
    sections = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict)]
    assert len(sections) == 1, "one pip: section"
    return [str(line).strip() for line in sections[0]]


REQUIREMENTS = pins(requirement_lines((REPO / "requirements.txt").read_text()))
CONSTRAINTS = pins(requirement_lines((REPO / "constraints.txt").read_text()))


def test_there_is_an_environment():
    assert ENVS


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_pip_pins_agree_with_requirements(env_file):
    env = yaml.safe_load(env_file.read_text())
    env_pins = pins(pip_section(env))
    expected = {name: spec for name, spec in REQUIREMENTS.items() if name not in NOT_IN_ENVS}
    assert env_pins == expected
    # exact pins, so that a job's environment is the one the results were checked with
    for name, spec in env_pins.items():
        assert spec.startswith("==") or name == "setuptools", f"{name}{spec} is not an exact pin"


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_python_agrees_with_pyproject(env_file):
    import tomllib

    requires = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    conda = [str(dep) for dep in yaml.safe_load(env_file.read_text())["dependencies"] if not isinstance(dep, dict)]
    python = [dep for dep in conda if re.match(r"python\b", dep)]
    assert len(python) == 1, "python pinned once"
    version = python[0].split("=")[-1]
    assert version in requires or f"{version}.0" in requires


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_robustlens_comes_from_the_checkout_with_the_full_constraints(env_file):
    """Snakemake copies an env file to <workdir>/.snakemake/conda/<hash>.yaml and conda runs pip
    there: relative paths resolve from that folder (here: with the checkout as working dir)."""
    lines = pip_section(yaml.safe_load(env_file.read_text()))
    copied_to = REPO / ".snakemake" / "conda"
    editable = [line.split(None, 1)[1] for line in lines if line.startswith("-e ")]
    assert len(editable) == 1
    checkout = (copied_to / editable[0]).resolve()
    assert checkout == REPO and 'name = "robustlens"' in (checkout / "pyproject.toml").read_text()
    constraints = [line.split(None, 1)[1] for line in lines if line.startswith("-c ")]
    assert [(copied_to / c).resolve() for c in constraints] == [REPO / "constraints.txt"]


def test_requirements_agree_with_constraints():
    for name, spec in REQUIREMENTS.items():
        if spec.startswith("=="):
            assert CONSTRAINTS.get(name) == spec, f"{name}: requirements {spec}, constraints {CONSTRAINTS.get(name)}"


def test_every_rule_names_an_environment():
    missing, dangling = [], []
    for smk in RULE_FILES:
        for rule, body in rule_blocks(smk.read_text()).items():
            match = re.search(r"^\s+conda:\s*\n?\s*[\"']([^\"']+)[\"']", body, re.M)
            if not match:
                missing.append(f"{smk.name}:{rule}")
            elif not (smk.parent / match.group(1)).resolve().is_file():
                dangling.append(f"{smk.name}:{rule} -> {match.group(1)}")
    assert not missing, f"rules without conda: {missing}"
    assert not dangling, f"conda: files that do not exist: {dangling}"


def test_the_snakefile_injects_the_parse_environment():
    text = (REPO / "Snakefile").read_text()
    assert re.search(r'^conda: "envs/workflow.yaml"$', text, re.M), "a global conda: directive"
    assert text.index('conda: "envs/workflow.yaml"') < text.index("include:"), "before the rules import robustlens"


def test_parse_environment_lists_every_package_the_parse_imports_that_snakemake_does_not_bring():
    """Parsing imports the robustlens modules the Snakefile and rule files import (robustlens
    itself comes from the checkout); every third-party package that pulls in, other than
    Snakemake's own requirements, is in envs/workflow.yaml with requirements.txt's version."""
    import importlib.metadata as md
    import subprocess
    import sys

    sources = [(REPO / "Snakefile").read_text()] + [smk.read_text() for smk in RULE_FILES]
    modules = sorted({m for text in sources for m in re.findall(r"^(?:from|import) (robustlens[\w.]*)", text, re.M)})
    assert "robustlens.config" in modules
    code = ("import sys\nbefore = set(sys.modules)\n" + "".join(f"import {m}\n" for m in modules)
            + "print(' '.join(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(REPO / "workflow")}).stdout.split()
    distributions = md.packages_distributions()
    third_party = {canonicalize_name(distributions[m][0]) for m in loaded
                   if m not in sys.stdlib_module_names and m != "robustlens" and m in distributions}
    snakemake_brings = {canonicalize_name(Requirement(r).name) for r in md.requires("snakemake") or []}
    needed = third_party - snakemake_brings
    assert "numpy" in needed  # the parse does import numpy (the memory estimates)
    listed = {}
    for dep in yaml.safe_load(PARSE_ENV.read_text())["dependencies"]:
        name, _, version = str(dep).partition("=")
        listed[canonicalize_name(name)] = version
    assert set(listed) == needed
    for name, version in listed.items():
        assert REQUIREMENTS[name] == f"=={version}", name
