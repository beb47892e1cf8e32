"""Time the default study end to end, stage by stage, and the dry run on finished results.

Runs `snakemake --cores N` on config.yaml in a scratch directory, then reads Snakemake's run
log (.snakemake/log/*.log: a timestamp when each job starts and finishes; `benchmark:`
directives cannot be used because Snakemake forbids them on rules eligible for the
between-workflow cache) and prints, per rule, the number of jobs and the summed job time,
against the wall time of the whole run.
Baseline measured in the same run: the summed job time is what a serial run would cost, so
wall / summed is the parallel efficiency; the interpreter start-up share is the job count times
the time of an empty `python -c 'import robustlens.jobs'`; a job that computes with torch
also pays `import torch, robustlens.store` (printed too).

    .venv/bin/python benchmarks/default_study.py [--cores 2] [--configfile FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import re
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


EVENT = re.compile(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]\n(?:local)?(?:rule (\w+):\n(?:.*\n)*?    jobid: (\d+)|Finished jobid: (\d+) \(Rule: (\w+)\))")


def job_times(log_path: Path) -> dict[str, list[float]]:
    """Seconds from start to finish of every job in a Snakemake run log, by rule (1 s resolution)."""
    started, times = {}, defaultdict(list)
    for stamp, rule, jobid, finished, _ in EVENT.findall(log_path.read_text()):
        when = datetime.datetime.strptime(stamp, "%a %b %d %H:%M:%S %Y")
        if rule:
            started[jobid] = (rule, when)
        elif finished in started:
            name, start = started[finished]
            times[name].append((when - start).total_seconds())
    times.pop("all", None)
    return times


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
    torch_startup = run([sys.executable, "-c", "import torch, robustlens.store"])

    per_rule = job_times(max((workdir / ".snakemake" / "log").glob("*.snakemake.log")))
    total_jobs = sum(len(v) for v in per_rule.values())
    summed = sum(sum(v) for v in per_rule.values())

    print(f"{'rule':32s} {'jobs':>5s} {'sum s':>8s} {'mean s':>7s}")
    for rule in sorted(per_rule, key=lambda r: -sum(per_rule[r])):
        times = per_rule[rule]
        print(f"{rule:32s} {len(times):5d} {sum(times):8.1f} {sum(times) / len(times):7.2f}")
    print(f"\nwall time of the study with --cores {args.cores}: {wall:.1f} s "
          f"({total_jobs} jobs, summed job time {summed:.1f} s, wall/summed = {wall / summed:.2f})")
    print(f"interpreter start-up: {startup:.2f} s per job, {startup * total_jobs:.1f} s over all jobs "
          f"({100 * startup * total_jobs / summed:.0f}% of summed job time)")
    print(f"start-up of a job that computes with torch (interpreter, torch, zarr, xarray): {torch_startup:.2f} s")
    print(f"dry run on finished results: {dry:.2f} s")
    print(f"results in {workdir}")


if __name__ == "__main__":
    main()
