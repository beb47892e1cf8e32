"""RTD's persistence computation: ripser (the authors' reference, robustlens before giotto-ph)
against giotto-ph's ``ripser_parallel`` core (robustlens now) at 1 and 2 threads.

For each batch size b, one RTD trial's two cross-barcode matrices (2b x 2b, both directions,
built exactly as ``rtd`` builds them: Euclidean distances of b random samples divided by their
0.9 quantile, X standard normal in d = 64, Y = 0.5 X + standard normal noise, seed b) are
handed to

* ripser: ``topology._ripser_h1_bars``, ripser's C++ core as ``ripser.ripser(M, maxdim=1,
  distance_matrix=True)`` calls it (single-threaded);
* giotto-ph: ``topology._h1_bars``, what ``gph.ripser_parallel(M, metric="precomputed",
  maxdim=1, n_threads=t, collapse_edges=False)`` calls, with t = 1 and t = 2.

Building the matrices (the same for all) is not timed. Each (b, implementation) runs 3 times,
the implementations alternating within each round so that drifting load hits all alike; the
median is reported. Every run's bars must equal ripser's as a multiset and the H1 totals must be
equal (checked; the run stops otherwise).

    .venv/bin/python benchmarks/rtd_speed.py                  # b = 100, 200, 300, 400, 500
    .venv/bin/python benchmarks/rtd_speed.py --batches 50 100  # smoke run
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import numpy as np  # noqa: E402

from robustlens.similarity import cross_barcode_matrix  # noqa: E402
from robustlens.similarity.topology import _h1_bars, _quantile_normalised_distances, _ripser_h1_bars  # noqa: E402


def trial_matrices(b: int, d: int) -> list[np.ndarray]:
    g = np.random.default_rng(b)
    X = g.standard_normal((b, d))
    Y = 0.5 * X + g.standard_normal((b, d))
    A, B = _quantile_normalised_distances(X), _quantile_normalised_distances(Y)
    return [cross_barcode_matrix(A, B), cross_barcode_matrix(B, A)]


def canonical(bars: np.ndarray) -> np.ndarray:
    return bars[np.lexsort((bars[:, 1], bars[:, 0]))]


def total(bars: np.ndarray) -> float:
    import math

    return math.fsum((bars[:, 1] - bars[:, 0]).tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[100, 200, 300, 400, 500])
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    impls = {
        "ripser": lambda M: _ripser_h1_bars(M),
        "giotto-ph, 1 thread": lambda M: _h1_bars(M, threads=1),
        "giotto-ph, 2 threads": lambda M: _h1_bars(M, threads=2),
    }
    warm = trial_matrices(20, args.d)[0]
    for fn in impls.values():  # load the libraries
        fn(warm)

    print(f"{datetime.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"ripser {version('ripser')}, giotto-ph {version('giotto-ph')}, numpy {np.__version__}, "
          f"load average at start {os.getloadavg()[0]:.2f}\n", flush=True)
    print("| batch b | matrices | H1 bars | RTD value | ripser s | giotto-ph 1 thread s | giotto-ph 2 threads s "
          "| speed-up 1 thread | speed-up 2 threads |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for b in args.batches:
        mats = trial_matrices(b, args.d)
        times = {name: [] for name in impls}
        reference = None
        for _ in range(args.repeats):
            for name, fn in impls.items():
                start = time.perf_counter()
                bars = [fn(M) for M in mats]
                times[name].append(time.perf_counter() - start)
                if reference is None:
                    reference = bars
                for got, ref in zip(bars, reference):
                    if got.shape != ref.shape or not np.array_equal(canonical(got), canonical(ref)) or total(got) != total(ref):
                        raise AssertionError(f"b = {b}: {name}'s bars differ from ripser's")
        med = {name: statistics.median(t) for name, t in times.items()}
        n_bars = sum(len(r) for r in reference)
        value = sum(total(r) for r in reference) / 2  # the symmetrised RTD of the batch
        one, two = med["giotto-ph, 1 thread"], med["giotto-ph, 2 threads"]
        print(f"| {b} | 2 x {2 * b} x {2 * b} | {n_bars} | {value:.4f} | {med['ripser']:.3f} | {one:.3f} | {two:.3f} "
              f"| {med['ripser'] / one:.2f}x | {med['ripser'] / two:.2f}x |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
