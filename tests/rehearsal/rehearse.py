"""Rehearse every paper config end to end on this machine: ``configs/<name>.yaml`` plus the
overlay ``tests/rehearsal/<name>.yaml`` (sizes only), on inputs made here in their real on-disk
formats (tests/rehearsal/make_inputs.py, make_checkpoints.py), through the real Snakefile.

A rehearsal passes only when every target of ``rule all`` is built and is real:
- Snakemake finishes, and a second dry run has nothing left to do;
- every table has rows, and every statistic the design defines is finite (NaN only with a
  reason in the table);
- each probe is larger than k of k-NN, the RTD batch and the class count;
- every figure job logged plotted data in every panel;
- no job's peak memory (logged by every job, robustlens.jobs) exceeds its declared ``mem_mb``.

It also dry-runs each full config (no overlay) and checks the jobs per rule against what the
config implies (counted by hand in EXPECTED_JOBS).

Usage: python tests/rehearsal/rehearse.py [--device cpu|cuda] [--cores N] [--keep DIR] [--no-growth] [name ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests/: the helpers shared with the test files

from support import job_stats  # noqa: E402

#: Snakemake beside this interpreter (the project's venv), or the one $SNAKEMAKE names.
SNAKEMAKE = Path(os.environ.get("SNAKEMAKE") or Path(sys.executable).with_name("snakemake"))
CONFIGS = ["cifar10-universality", "imagenet-universality", "imagenet-transfer", "robustbench-filters", "imagenet100-universality"]
PEAK = re.compile(r"^robustlens: peak memory (\d+) MB$", re.M)

#: Jobs per rule of a dry run of each full config (no overlay), counted from the config by hand.
EXPECTED_JOBS = {
    # 6 eps x 5 seeds = 30 trained models; 6 x C(5, 2) = 60 same-eps pairs; every model in a
    # pair; 2 made probes; transfer: seed 0 of each eps (6 models), 4 tasks.
    "cifar10-universality": {"fetch_dataset": 1, "prepare_dataset": 1, "train_model": 30, "extract_natural": 30,
                             "make_probe": 60, "retrain_heads": 30, "compare_similarity": 60, "compare_predictive": 3,
                             "extract_filters": 30, "transfer": 6, "transfer_task": 4},
    # 10 checkpoints, all C(10, 2) = 45 pairs, transfer on all 10 (seed 0), 1 task.
    "imagenet-universality": {"fetch_weights": 10, "zoo_model": 10, "extract_natural": 10, "make_probe": 20,
                              "retrain_heads": 10, "compare_similarity": 45, "extract_filters": 10, "transfer": 10,
                              "transfer_task": 1},
    # 20 checkpoints; 3 listed pairs among 4 models; transfer on all 20, 2 tasks (CIFAR-10 and
    # CIFAR-100, each downloaded once).
    "imagenet-transfer": {"fetch_weights": 20, "zoo_model": 20, "extract_natural": 20, "make_probe": 8,
                          "retrain_heads": 4, "compare_similarity": 3, "extract_filters": 20, "transfer": 20,
                          "transfer_task": 2, "fetch_dataset": 2},
    # 5 eps x 3 seeds = 15 trained models; 5 x C(3, 2) = 15 same-eps pairs, every model in one;
    # 2 made probes each; transfer: seed 0 of each eps (5 models), 1 task.
    "imagenet100-universality": {"prepare_dataset": 1, "train_model": 15, "extract_natural": 15, "make_probe": 30,
                                 "retrain_heads": 15, "compare_similarity": 15, "compare_predictive": 3,
                                 "extract_filters": 15, "transfer": 5, "transfer_task": 1},
    # 3 trained + 7 RobustBench = 10 models, all 45 pairs; transfer on the models of seed 0 (the
    # trained one of seed 0 and the 7 zoo models, whose seed is 0), 2 tasks.
    "robustbench-filters": {"fetch_dataset": 1, "train_model": 3, "fetch_weights": 7, "zoo_model": 7,
                            "extract_natural": 10, "make_probe": 20, "retrain_heads": 10, "compare_similarity": 45,
                            "extract_filters": 10, "transfer": 8, "transfer_task": 2},
}


def snakemake(workdir: Path, *args: str, configfiles=(), device: str | None = None, log: Path | None = None,
              env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    if device:
        cmd += ["--config", f"device={device}"]
    if configfiles:
        cmd += ["--configfile", *map(str, configfiles)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0", **(env or {})})
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    return proc


def declared_jobs(output: str) -> list[dict]:
    """Every job Snakemake printed: rule, log file and declared resources."""
    jobs: list[dict] = []
    for line in output.splitlines():
        if match := re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line):
            jobs.append({"rule": match.group(1), "log": None, "resources": {}})
        elif jobs and (match := re.match(r"^    (log|resources): (.*)$", line)):
            key, value = match.groups()
            if key == "log":
                jobs[-1]["log"] = value.split(" ")[0]
            else:
                jobs[-1]["resources"] = dict(item.split("=", 1) for item in value.split(", ") if "=" in item)
    return jobs


# --------------------------------------------------------------------------- inputs


def imagenet_classes(name: str = "imagenet") -> list[str]:
    from robustlens.imagefolder import imagenet_classes as shipped

    return shipped(name)


def make_inputs(name: str, workdir: Path, inputs: Path) -> None:
    """The files a user provides for config ``name``, in their real formats and places."""
    from make_checkpoints import make_robustbench_checkpoint, make_timm_safetensors, make_url_checkpoint
    from make_inputs import make_cifar, make_imagefolder

    spec = overlay(name, inputs)
    if spec["dataset"].get("root"):
        folder = Path(spec["dataset"]["root"]).name  # imagenet or imagenet100
        classes = imagenet_classes(folder)
        subset = [classes[i] for i in (0, 1, len(classes) // 5, len(classes) // 2, len(classes) - 1)]  # ImageNet: tench ... toilet tissue
        make_imagefolder(inputs / folder, subset, n_train_per_class=8, n_val_per_class=6, seed=0)
        (inputs / f"{folder}-subset.txt").write_text("\n".join(subset) + "\n")
    else:
        make_cifar(workdir / "data" / "datasets", "cifar10", n_train=200, n_test=60, seed=0)
    from robustlens.tasks import parse_task

    task_sources = {parse_task(t)["source"] for t in spec.get("transfer", {}).get("tasks", [])}
    for source in sorted(task_sources & {"cifar10", "cifar100"} - {spec["dataset"].get("source")}):
        make_cifar(workdir / "data" / "datasets", source, n_train=300, n_test=200, seed=1)
    for i, model in enumerate(spec.get("models") or []):
        if model["source"] == "url":
            make_url_checkpoint(model["url"][len("file://"):], model["arch"], model["eps"], seed=i)
        elif model["source"] == "robustbench":
            make_robustbench_checkpoint(workdir / "data" / "robustbench", model["name"], model["dataset"], model["threat_model"], seed=i)
        elif model["source"] == "timm":
            make_timm_safetensors(workdir / "data" / "timm" / f"{model['name']}.{model['tag']}.safetensors", model["name"], model["tag"], seed=i)


def overlay(name: str, inputs: Path) -> dict:
    """The overlay of config ``name`` with its inputs' folder filled in, and the transfer bounds
    of the config itself (same norms and eps) with their attacks shrunk to one step from a random
    start (the first bound keeps one restart, so the restart path runs): a list in an overlay
    would replace the config's list, eps included."""
    spec = yaml.safe_load((HERE / f"{name}.yaml").read_text().replace("@INPUTS@", str(inputs)))
    full = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    bounds = [{**bound, "as_attack": {"steps": 1, "restarts": int(i == 0)}, "loss_attack": {"steps": 1, "restarts": int(i == 0)}}
              for i, bound in enumerate(full["transfer"]["attacks"]["bounds"])]
    spec.setdefault("transfer", {}).setdefault("attacks", {})["bounds"] = bounds
    return spec


# --------------------------------------------------------------------------- checks


def undefined_values(name: str, table: pd.DataFrame) -> pd.Series:
    """Rows whose value is undefined by its own definition, shown in the same table:
    ``robust_among_fulfilled`` of bounds.csv where no input fulfils the bound (its
    ``n_fulfilled`` row is 0), and ``robust_among_fulfilled_best`` where its ``n_fulfilled_best``
    row is 0; a filter statistic of a group without filters (``n_filters_a``
    or ``n_filters_b`` is 0, e.g. the first layer of a ResNet-50, whose first conv is 7x7)."""
    undefined = pd.Series(False, index=table.index)
    if name == "bounds.csv":
        keys = [c for c in table.columns if c not in ("metric", "value")]
        for count, ratio in (("n_fulfilled", "robust_among_fulfilled"), ("n_fulfilled_best", "robust_among_fulfilled_best")):
            empty = table[(table["metric"] == count) & (table["value"] == 0)][keys]
            rows = table.reset_index().merge(empty, on=keys)["index"]
            undefined |= table.index.isin(rows) & (table["metric"] == ratio)
    for column in ("n_filters_a", "n_filters_b"):
        if column in table:
            undefined |= table[column] == 0
    return undefined


def check_tables(workdir: Path) -> list[str]:
    """Every table has rows; every statistic defined by the design is finite (NaN only with a
    reason in the statistics tables, or where :func:`undefined_values` shows why)."""
    problems = []
    for path in sorted((workdir / "results" / "tables").glob("*.csv")):
        table = pd.read_csv(path)
        if table.empty:
            problems.append(f"{path.name}: no rows")
            continue
        if "value" in table and path.name in ("universality.csv", "correlations.csv"):
            bad = table[~np.isfinite(table["value"].astype(float))]
            if "reason" in table:
                bad = bad[bad["reason"].isna() | (bad["reason"].astype(str).str.strip() == "")]
            if len(bad):
                problems.append(f"{path.name}: {len(bad)} non-finite statistics without a reason, e.g. {bad.iloc[0].to_dict()}")
        elif "value" in table:
            bad = table[~np.isfinite(pd.to_numeric(table["value"], errors="coerce")) & ~undefined_values(path.name, table)]
            if len(bad):
                problems.append(f"{path.name}: {len(bad)} non-finite values, e.g. {bad.iloc[0].to_dict()}")
    return problems


def check_probe_sizes(workdir: Path, config: dict) -> list[str]:
    """Each probe larger than k of k-NN, the RTD batch and the class count of the data."""
    import zarr

    problems = []
    labels = np.load(workdir / "results" / "data" / f"{config['dataset']['name']}.npz")["y_test"]
    n_classes = len(np.unique(labels))
    floor = max(config["comparison"]["knn_k"], config["comparison"]["rtd"]["batch"], n_classes)
    for store in sorted((workdir / "results" / "activations").glob("*/*/*.zarr")):
        n = zarr.open_group(str(store), mode="r")["logits"].shape[0]
        if n <= floor:
            problems.append(f"{store.relative_to(workdir)}: {n} samples, not more than {floor} (k, RTD batch, classes)")
    return problems


def check_figures(workdir: Path) -> list[str]:
    """Every figure job logged, per panel, how many finite data points it drew."""
    problems = []
    for log in sorted((workdir / "logs").glob("figure_*/*.log")):
        counts = re.findall(r"^robustlens: panel .*?(\d+) data points$", log.read_text(), re.M)
        if not counts:
            problems.append(f"{log.relative_to(workdir)}: no panel report")
        elif any(int(c) == 0 for c in counts):
            problems.append(f"{log.relative_to(workdir)}: a panel without data")
    return problems


def peak_memory(workdir: Path, jobs: list[dict]) -> tuple[list[dict], list[str]]:
    """(rows of rule, log, peak MB, declared MB) for every job that ran, problems)."""
    rows, problems = [], []
    for job in jobs:
        if not job["log"] or "mem_mb" not in job["resources"]:
            continue
        log = workdir / job["log"]
        found = PEAK.findall(log.read_text()) if log.exists() else []
        if not found:
            problems.append(f"{job['log']}: no peak memory line")
            continue
        row = {"rule": job["rule"], "log": job["log"], "peak_mb": int(found[-1]), "mem_mb": int(job["resources"]["mem_mb"])}
        rows.append(row)
        if row["peak_mb"] > row["mem_mb"]:
            problems.append(f"{job['log']}: peak {row['peak_mb']} MB > declared mem_mb {row['mem_mb']}")
    return rows, problems


def check_full_dry_run(name: str, workdir: Path) -> list[str]:
    """A dry run of the full config in an empty directory (the rehearsal's has its inputs and
    results already) plans the jobs per rule that EXPECTED_JOBS counts."""
    workdir = workdir.parent / f"{workdir.name}-full-dry-run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    proc = snakemake(workdir, "-n", "--cores", "1", configfiles=[REPO / "configs" / f"{name}.yaml"])
    if proc.returncode != 0:
        return [f"dry run of the full config failed:\n{proc.stderr[-3000:]}"]
    planned = job_stats(proc.stdout + proc.stderr)
    return [f"full dry run: {rule} has {planned.get(rule, 0)} jobs, the config implies {n}"
            for rule, n in EXPECTED_JOBS[name].items() if planned.get(rule, 0) != n]


# --------------------------------------------------------------------------- memory growth

#: The heaviest rule of each kind that reads images: the dataset cache, activations, a made
#: probe. Not train_model: its peak comes from training (train split and batch activations), so
#: 4x more test images moved it by +7, +51 and +78 MB in three runs: noise, not its data term.
GROWTH_RULES = ["prepare_dataset", "extract_natural", "make_probe"]
#: The CIFAR-10 config with a small CNN (the growth is in the data, not the model), two models,
#: fixed training images and n or 4n test images.
GROWTH_OVERLAY = {
    "study": "growth", "architecture": {"name": "smallcnn", "widths": [16, 32, 64, 64], "convs_per_block": 2},
    "model_grid": {"eps": [0.5], "seeds": [0, 1]}, "training": {"epochs": 1, "attack_steps": 1},
    "evaluation": {"eps": [0.5], "steps": 1}, "activations": {"layers": ["block1", "block2", "block3", "block4", "penultimate", "logits"]},
    "probes": {"adversarial": {"steps": 1}}, "comparison": {"rtd": {"layers": ["penultimate"]}},
}
#: glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
#: freed batch tensors stay in the heap: the peak then carries 0-250 MB of retained batch memory
#: that varies from run to run and hid the data term (CI measured make_probe at +142 to +260 MB
#: for the same code). A fixed threshold returns every freed block of 128 kB or more to the OS,
#: so the peak follows live memory: +177 MB for two copies of 7,500 more images (declared +176).
#: Only the growth runs set it; the rehearsals measure peaks with the allocator users get.
GROWTH_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def growth_check(base: Path, device: str | None, n: int = 2500, tolerance: float = 0.3, floor_mb: int = 50) -> tuple[list[dict], list[str]]:
    """Run GROWTH_RULES at n and 4n test images; the measured growth of each job's peak memory
    must match the growth of its declared ``mem_mb`` within ``tolerance`` of the declared
    growth, or within ``floor_mb`` where that is larger: a peak reading does not resolve tens of
    MB (the allocator keeps freed pages; a small data term can hide under the import peak).
    ``n`` = 2500: 4n is CIFAR-10's whole test split (the config caps it there), and the data term
    (+176 MB declared for extract_natural and make_probe) stands clear of that noise; at 1500
    (+105 MB) three CI runs measured make_probe at +99 to +179 and extract_natural at +45 to +104.
    The jobs run with :data:`GROWTH_ENV`."""
    model = "smallcnn-l2-eps0.5-s0"
    targets = [f"results/activations/natural/cifar10/{model}.zarr", f"results/probes/adversarial/{model}.zarr"]
    return _growth(base, device, "growth", GROWTH_RULES, lambda k: (200, k * n), {}, targets, model,
                   f"{n} to {4 * n} test images", tolerance, floor_mb)


def training_growth_check(base: Path, device: str | None, n: int = 2500, tolerance: float = 0.3,
                          floor_mb: int = 50) -> tuple[list[dict], list[str]]:
    """train_model at n and 4n training images, with the split in memory and streamed
    (training.stream): in memory its peak grows as its mem_mb does (2.25 float32 copies of the
    split); streamed, neither grows (a batch is held, not the split)."""
    model = "smallcnn-l2-eps0.5-s0"
    table, problems = [], []
    for stream in (False, True):
        # validation: a quarter, so that both sizes validate in full batches of 512 (a smaller
        # validation split attacks in smaller batches, and those activations would grow with n)
        training = {"epochs": 1, "attack_steps": 1, "stream": stream, "validation": {"fraction": 0.25}}
        small_test = {"training": training, "probes": {"inverted": {"n_samples": 100}}, "comparison": {"rtd": {"batch": 100}}}
        rows, found = _growth(base, device, f"train-{'stream' if stream else 'memory'}", ["train_model"], lambda k: (k * n, 500),
                              small_test, [f"results/models/{model}/checkpoint.pt"], model,
                              f"{n} to {4 * n} training images ({'streamed' if stream else 'in memory'})", tolerance, floor_mb)
        table += [{**row, "rule": f"train_model ({'streamed' if stream else 'in memory'})"} for row in rows]
        problems += found
    return table, problems


def _growth(base: Path, device: str | None, tag: str, rules: list[str], sizes, extra: dict, targets: list[str], model: str,
            what: str, tolerance: float, floor_mb: int) -> tuple[list[dict], list[str]]:
    """Run ``targets`` of the CIFAR-10 config with GROWTH_OVERLAY (and ``extra``) on ``sizes(k)``
    = (training, test) images for k = 1 and 4; compare the growth of the ``rules``' measured
    peaks with that of their declared mem_mb."""
    from make_inputs import make_cifar

    peaks: dict[str, dict[int, int]] = {}
    declared: dict[str, dict[int, int]] = {}
    for k in (1, 4):
        n_train, n_test = sizes(k)
        workdir = base / f"{tag}-{k}n"
        shutil.rmtree(workdir, ignore_errors=True)
        make_cifar(workdir / "data" / "datasets", "cifar10", n_train=n_train, n_test=n_test, seed=0)
        overlay_path = workdir / "growth.yaml"
        overlay = {**GROWTH_OVERLAY, **extra, "dataset": {"max_train": n_train, "max_test": n_test}}
        overlay["training"] = {**GROWTH_OVERLAY["training"], **extra.get("training", {})}
        overlay["comparison"] = {**GROWTH_OVERLAY["comparison"], "rtd": {**GROWTH_OVERLAY["comparison"]["rtd"], **extra.get("comparison", {}).get("rtd", {})}}
        overlay_path.write_text(yaml.safe_dump(overlay))
        proc = snakemake(workdir, *targets, "--cores", "1", configfiles=[REPO / "configs" / "cifar10-universality.yaml", overlay_path],
                         device=device, log=workdir / "snakemake.log", env=GROWTH_ENV)
        if proc.returncode != 0:
            return [], [f"growth run at {k}n ({what}) failed; see {workdir / 'snakemake.log'}"]
        rows, _ = peak_memory(workdir, declared_jobs(proc.stdout + proc.stderr))
        for row in rows:
            if row["rule"] in rules and (row["rule"] != "train_model" or model in row["log"]):
                peaks.setdefault(row["rule"], {})[k] = row["peak_mb"]
                declared.setdefault(row["rule"], {})[k] = row["mem_mb"]
    table, problems = [], []
    for rule in rules:
        measured = peaks[rule][4] - peaks[rule][1]
        expected = declared[rule][4] - declared[rule][1]
        table.append({"rule": rule, "what": what, "peak_n": peaks[rule][1], "peak_4n": peaks[rule][4], "measured_growth_mb": measured,
                      "declared_n": declared[rule][1], "declared_4n": declared[rule][4], "declared_growth_mb": expected})
        if abs(measured - expected) > max(tolerance * expected, floor_mb):
            problems.append(f"memory growth of {rule} from {what}: measured {measured} MB, "
                            f"its mem_mb grows by {expected} MB (more than {tolerance:.0%} apart)")
    return table, problems


# --------------------------------------------------------------------------- one rehearsal


def rehearse(name: str, base: Path, device: str | None, cores: int = 2) -> dict:
    workdir, inputs = base / name, base / f"{name}-inputs"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(inputs, ignore_errors=True)
    workdir.mkdir(parents=True)
    inputs.mkdir(parents=True)
    make_inputs(name, workdir, inputs)
    overlay_path = workdir / "rehearsal.yaml"
    overlay_path.write_text(yaml.safe_dump(overlay(name, inputs)))
    configfiles = [REPO / "configs" / f"{name}.yaml", overlay_path]
    start = time.monotonic()
    proc = snakemake(workdir, "--cores", str(cores), "--keep-going", "--printshellcmds", configfiles=configfiles, device=device,
                     log=workdir / "snakemake.log")
    wall = time.monotonic() - start
    output = proc.stdout + proc.stderr
    result = {"config": name, "wall_s": round(wall), "jobs": sum(job_stats(output).values()), "problems": []}
    if proc.returncode != 0:
        result["problems"].append(f"snakemake failed ({proc.returncode}); see {workdir / 'snakemake.log'}:\n{output[-4000:]}")
        return result
    again = snakemake(workdir, "-n", configfiles=configfiles, device=device)
    if job_stats(again.stdout + again.stderr):
        result["problems"].append(f"a second dry run still plans jobs: {job_stats(again.stdout + again.stderr)}")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    from robustlens.config import deep_update

    for path in configfiles:
        deep_update(config, yaml.safe_load(Path(path).read_text()))
    result["problems"] += check_tables(workdir) + check_probe_sizes(workdir, config) + check_figures(workdir)
    rows, problems = peak_memory(workdir, declared_jobs(output))
    result["problems"] += problems
    if rows:
        worst = max(rows, key=lambda r: r["peak_mb"] / r["mem_mb"])
        result["largest_peak"] = max(rows, key=lambda r: r["peak_mb"])
        result["tightest"] = worst
        (workdir / "peak_memory.json").write_text(json.dumps(rows, indent=1))
    result["problems"] += check_full_dry_run(name, workdir)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"configs to rehearse, of {', '.join(CONFIGS)} (default: all)")
    parser.add_argument("--device", default=None, help="the config's device (default: the config's own, auto)")
    parser.add_argument("--keep", type=Path, default=None, help="working directory to keep (default: a temporary one)")
    parser.add_argument("--cores", type=int, default=2, help="Snakemake's --cores for each rehearsal (default 2)")
    parser.add_argument("--no-growth", action="store_true", help="skip the memory-growth check at n and 4n images")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.names) - set(CONFIGS)):
        parser.error(f"unknown configs {unknown}; known: {CONFIGS}")
    base = args.keep or Path(tempfile.mkdtemp(prefix="rehearsal-"))
    results, failed = [], False
    for name in args.names or CONFIGS:
        print(f"== rehearsal {name} (in {base / name})", flush=True)
        result = rehearse(name, base, args.device, args.cores)
        results.append(result)
        for problem in result["problems"]:
            print(f"  FAIL {problem}", flush=True)
        failed |= bool(result["problems"])
        peak = result.get("largest_peak")
        tight = result.get("tightest")
        print(f"  {result['jobs']} jobs in {result['wall_s']} s"
              + (f"; largest peak {peak['peak_mb']} MB ({peak['rule']}, declared {peak['mem_mb']} MB)" if peak else "")
              + (f"; tightest {tight['peak_mb']}/{tight['mem_mb']} MB ({tight['rule']})" if tight else ""), flush=True)
    if not args.no_growth:
        print("== memory growth at n and 4n test images, and at n and 4n training images", flush=True)
        table, problems = growth_check(base, args.device)
        more_rows, more_problems = training_growth_check(base, args.device)
        table, problems = table + more_rows, problems + more_problems
        for row in table:
            print(f"  {row['rule']}, {row['what']}: peak {row['peak_n']} -> {row['peak_4n']} MB (+{row['measured_growth_mb']}), "
                  f"declared {row['declared_n']} -> {row['declared_4n']} MB (+{row['declared_growth_mb']})", flush=True)
        for problem in problems:
            print(f"  FAIL {problem}", flush=True)
        failed |= bool(problems)
    print("\nconfig | jobs | wall s | largest peak MB (rule) / declared | result")
    for r in results:
        peak = r.get("largest_peak")
        peak_text = f"{peak['peak_mb']} ({peak['rule']}) / {peak['mem_mb']}" if peak else "-"
        print(f"{r['config']} | {r['jobs']} | {r['wall_s']} | {peak_text} | {'FAIL' if r['problems'] else 'ok'}")
    if not args.keep and not failed:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
