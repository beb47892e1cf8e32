"""Mutation testing of robustlens' numerical modules with mutmut (``make mutation``).

mutmut 3 imports mutated code only from ``./``, ``src/`` or ``source/``, and robustlens lives in
``workflow/robustlens``. So each module runs in its own staging directory,
``.mutation/<module>/``: the package copied to ``src/robustlens``, the fast test files that
exercise it copied to ``tests/`` (from tests/unit/ and tests/faults/, with conftest.py,
support.py and the test inputs), and a ``pyproject.toml`` that tells mutmut to mutate that one
module and run those tests with the repository's pytest settings (tests marked ``workflow`` are
deselected: they run the workflow in a subprocess, which never sees the mutants). The
per-module counts go to ``.mutation/<module>/summary.json`` and are printed as the row of
``tests/MUTATION.md``.

    python tests/mutation/run.py attacks stats        # some modules
    python tests/mutation/run.py                      # every numerical module
    python tests/mutation/run.py --survivors stats    # list what survived, with diffs
    python tests/mutation/run.py --rerun-survivors stats  # after adding tests: rerun only the
                                                          # survivors of the last full run

``--rerun-survivors`` reruns the survivors and the mutants no test reached. It is valid while
the module's source is the one the full run mutated (mutant names number the mutations of that
source; the runner checks its sha256): a mutant killed before is still killed by a suite that
only grew, so only the survivors need running again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = REPO / ".mutation"
MUTMUT = Path(sys.executable).with_name("mutmut")

# module -> the fast test files that exercise it
MODULE_TESTS = {
    "attacks": ["unit/test_attacks.py", "unit/test_transfer.py"],
    "stats": ["unit/test_stats.py", "unit/test_universality.py", "unit/test_predictive.py"],
    "similarity": ["unit/test_similarity.py"],
    "filters": ["unit/test_filters.py"],
    "transfer": ["unit/test_transfer.py"],
    "predictive": ["unit/test_predictive.py", "unit/test_similarity.py"],
    "probes": ["unit/test_probes.py"],
    "heads": ["unit/test_probes.py", "unit/test_heads.py"],
    "head_training": ["unit/test_probes.py", "unit/test_heads.py"],
    "activations": ["unit/test_activations.py", "unit/test_store.py", "faults/test_disk_full.py"],
    "data": ["unit/test_datasets.py", "unit/test_tasks.py", "unit/test_train.py"],
    "splits": ["unit/test_datasets.py", "unit/test_tasks.py", "unit/test_train.py"],
    "fitting": ["unit/test_fitting.py", "unit/test_heads.py"],
    "augment": ["unit/test_augment.py"],
}
DESELECT = "not workflow"  # a marker expression (-m): markers by folder, tests/conftest.py


def stage(module: str) -> Path:
    """The staging directory of one module: package under src/, its tests under tests/."""
    root = STAGES / module
    summary = root / "summary.json"
    kept = summary.read_text() if summary.exists() else None  # a failed run must not lose the last one
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if kept is not None:
        summary.write_text(kept)
    shutil.copytree(REPO / "workflow" / "robustlens", root / "src" / "robustlens",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "workflow" / "schemas", root / "src" / "schemas")  # config.py reads ../schemas
    (root / "tests").mkdir()
    for helper in ("conftest.py", "support.py"):  # fixtures and hooks; the helpers they import
        shutil.copy2(REPO / "tests" / helper, root / "tests" / helper)
    for support in ("configs", "rehearsal"):  # test inputs and the makers of real on-disk formats
        shutil.copytree(REPO / "tests" / support, root / "tests" / support, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "config.yaml", root / "config.yaml")
    for name in MODULE_TESTS[module]:
        (root / "tests" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / "tests" / name, root / "tests" / name)
    tests = ", ".join(f'"tests/{name}"' for name in MODULE_TESTS[module])
    (root / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f'only_mutate = ["{mutated_path(REPO / "workflow" / "robustlens", module)}"]\n'
        f'pytest_add_cli_args_test_selection = [{tests}, "-m", "{DESELECT}"]\n'
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
        'also_copy = ["config.yaml", "src/schemas"]\n'
        'process_isolation = "forkserver"\n'
        "timeout_multiplier = 5.0\n"
        "timeout_constant = 10.0\n"
        "\n" + pytest_settings()  # markers, --strict-markers, tests/ on sys.path for support.py
    )
    return root


def pytest_settings() -> str:
    """The ``[tool.pytest.ini_options]`` table of the repository's pyproject.toml, as text."""
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r"^\[tool\.pytest\.ini_options\]\n(?:(?!\[[^\]\n]+\]$).*\n?)*", text, re.M)
    return match.group(0)


def results(root: Path) -> dict[str, str]:
    """mutant name -> status, as `mutmut results --all true` prints them."""
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=root, text=True,
                         capture_output=True, check=True).stdout
    status = {}
    for line in out.splitlines():
        if ":" in line and "__mutmut_" in line:
            name, _, state = line.strip().rpartition(":")
            status[name.strip()] = state.strip()
    return status


def mutated_path(package: Path, module: str) -> str:
    """mutmut's ``only_mutate`` pattern for ``module``: its file, or every file of a subpackage
    (``similarity``, ``filters``)."""
    return f"src/robustlens/{module}/*" if (package / module).is_dir() else f"src/robustlens/{module}.py"


def source_sha256(package: Path, module: str) -> str:
    """sha256 of ``module``'s source in the robustlens package at ``package`` (a subpackage's
    files, in name order)."""
    if not (package / module).is_dir():
        return hashlib.sha256((package / f"{module}.py").read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for path in sorted((package / module).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def previous_run(module: str) -> dict:
    """The last full run's summary, with the sha256 of the source it mutated."""
    root = STAGES / module
    summary = json.loads((root / "summary.json").read_text())
    summary.setdefault("source_sha256", source_sha256(root / "src" / "robustlens", module))
    if summary["source_sha256"] != source_sha256(REPO / "workflow" / "robustlens", module):
        sys.exit(f"{module} changed since its last full mutation run: run it in full")
    # mutants no test reached may be reached by a new test: rerun them with the survivors
    untested = summary.get("untested")
    if untested is None:  # summaries written before the runner recorded them
        untested = sorted(name for name, state in results(root).items() if state == "no tests") if (root / "mutants").exists() else []
    summary["rerun"] = sorted(set(summary["survivors"]) | set(untested))
    summary["no tests"] = summary.get("no tests", 0) - len(untested)
    return summary


def run(module: str, children: int, rerun_survivors: bool = False) -> dict:
    previous = previous_run(module) if rerun_survivors else None
    root = stage(module)
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    log = root / "mutmut.log"
    print(f"{module}: mutmut running, progress in {log.relative_to(REPO)}", flush=True)
    with log.open("w") as out:
        proc = subprocess.run([str(MUTMUT), "run", "--max-children", str(children), *(previous or {}).get("rerun", [])],
                              cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        print(f"| {module} | mutmut failed (exit {proc.returncode}): see {log.relative_to(REPO)} |", flush=True)
        return {"module": module, "failed": proc.returncode}
    status = results(root)
    if previous is not None:  # the survivors' new status; every other mutant keeps its old one
        rerun = {name: status[name] for name in previous["rerun"]}
        counts = Counter({k: v for k, v in previous.items() if k in ("killed", "no tests", "timeout", "segfault", "suspicious")})
        counts.update(rerun.values())
        summary = {"module": module, "mutants": previous["mutants"], **counts,
                   "survivors": sorted(n for n, s in rerun.items() if s == "survived"),
                   "untested": sorted(n for n, s in rerun.items() if s == "no tests")}
    else:
        counts = Counter(status.values())
        summary = {"module": module, "mutants": len(status), **counts,
                   "survivors": sorted(n for n, s in status.items() if s == "survived"),
                   "untested": sorted(n for n, s in status.items() if s == "no tests")}
    summary["source_sha256"] = source_sha256(root / "src" / "robustlens", module)
    n = summary["mutants"]
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    killed = counts.get("killed", 0)
    print(f"| {module} | {n} | {killed} | {counts.get('survived', 0)} | {counts.get('no tests', 0)} | "
          f"{counts.get('timeout', 0)} | {100 * killed / max(n, 1):.1f} % |", flush=True)
    return summary


def show_survivors(module: str) -> None:
    root = STAGES / module
    for name in json.loads((root / "summary.json").read_text())["survivors"]:
        subprocess.run([str(MUTMUT), "show", name], cwd=root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", default=list(MODULE_TESTS), help=f"any of {list(MODULE_TESTS)}")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--survivors", action="store_true", help="show the surviving mutants of a finished run")
    parser.add_argument("--rerun-survivors", action="store_true", help="run only the last full run's survivors again")
    args = parser.parse_args()
    unknown = set(args.modules) - set(MODULE_TESTS)
    if unknown:
        parser.error(f"unknown modules {sorted(unknown)}; choose from {list(MODULE_TESTS)}")
    for module in args.modules:
        if args.survivors:
            show_survivors(module)
        else:
            run(module, args.max_children, args.rerun_survivors)


if __name__ == "__main__":
    main()
