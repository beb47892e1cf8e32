"""Time the default study end to end, stage by stage, and the dry run on finished results.

Runs `snakemake --cores N` on config.yaml in a scratch directory, then reads the per-job
benchmark files Snakemake writes (results/benchmarks/<rule>/...) and prints, per rule, the
number of jobs, the summed job time and the peak RSS, against the wall time of the whole run.
Baseline measured in the same run: the summed job time is what a serial run would cost, so
wall / summed is the parallel efficiency; the interpreter start-up share is the job count times
the time of an empty `python -c 'import robustlens.jobs'`.

    .venv/bin/python benchmarks/default_study.py [--cores 2] [--configfile FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default="2")
    parser.add_argument("--configfile", action="append", default=[])
    parser.add_argument("--keep", help="run in this directory and keep it")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="robustlens-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    base = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    extra = ["--configfile", *args.configfile] if args.configfile else []

    wall = run(base + ["--cores", args.cores] + extra)
    dry = run(base + ["-n"] + extra)
    startup = run([sys.executable, "-c", "import robustlens.jobs"])

    per_rule: dict[str, list[float]] = defaultdict(list)
    rss: dict[str, float] = defaultdict(float)
    for tsv in (workdir / "results" / "benchmarks").rglob("*.tsv"):
        rule = tsv.relative_to(workdir / "results" / "benchmarks").parts[0]
        with open(tsv) as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        per_rule[rule].append(float(row["s"]))
        rss[rule] = max(rss[rule], float(row["max_rss"]) if row["max_rss"] not in ("", "-", "NA") else 0.0)
    total_jobs = sum(len(v) for v in per_rule.values())
    summed = sum(sum(v) for v in per_rule.values())

    print(f"{'rule':32s} {'jobs':>5s} {'sum s':>8s} {'mean s':>7s} {'peak MB':>8s}")
    for rule in sorted(per_rule, key=lambda r: -sum(per_rule[r])):
        times = per_rule[rule]
        print(f"{rule:32s} {len(times):5d} {sum(times):8.1f} {sum(times) / len(times):7.2f} {rss[rule]:8.0f}")
    print(f"\nwall time of the study with --cores {args.cores}: {wall:.1f} s "
          f"({total_jobs} jobs, summed job time {summed:.1f} s, wall/summed = {wall / summed:.2f})")
    print(f"interpreter start-up: {startup:.2f} s per job, {startup * total_jobs:.1f} s over all jobs "
          f"({100 * startup * total_jobs / summed:.0f}% of summed job time)")
    print(f"dry run on finished results: {dry:.2f} s")
    print(f"results in {workdir}")


if __name__ == "__main__":
    main()
