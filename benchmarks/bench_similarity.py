"""Speed and peak memory of the similarity measures against plain NumPy implementations.

Three parts, every number measured in this run:

1. Each measure (biased CKA, unbiased CKA, Procrustes, k-NN Jaccard) at (n, d) = (5000, 512)
   and (2000, 8192), against a plain NumPy implementation of the same formula:
   CKA from explicit n x n Gram matrices centred by subtracting row and column means
   (Kornblith et al.'s reference code); unbiased CKA from explicit Grams with zeroed diagonals
   and Song et al.'s formula; Procrustes as the sum of ``np.linalg.svd(X'Y)`` singular values;
   k-NN Jaccard from the full cosine matrix, ``argsort`` per row and Python sets.
   Both sides must agree to 1e-8 (checked).
2. RTD: one trial (both directions, i.e. two persistence runs (giotto-ph) on 2b x 2b matrices) at batch b =
   100, 200, 500.
3. Exact streaming CKA reading chunk by chunk from a temporary zarr store, at n = 10,000,
   50,000 and 200,000 with d = 512: peak memory must stay flat as n grows.

Both sides run with the same number of BLAS/OpenMP threads (``--threads``, default 1).
Time: robustlens and the plain implementation run alternately in one process (so drifting
load from other jobs hits both alike); reported is the best of 1 + ``--repeats`` calls each
(a call over 20 s is not repeated; a plain run still going after ``--plain-timeout`` seconds is
stopped and reported as a lower bound).
Peak memory: each (measure, shape) runs in a fresh subprocess, which resets the kernel's
peak-RSS mark (``/proc/self/clear_refs``) just before every call and reports the peak resident
set size (``VmHWM`` in ``/proc/self/status``) minus the RSS at that point (``psutil``): the
extra memory the call needed on top of its inputs (a call on 50 x 64 first loads the
libraries, whose code pages would otherwise count). The largest over the calls is reported.
All children run with glibc's mmap threshold fixed (``FIXED_MMAP_THRESHOLD``) so that freed
buffers go back to the system and a call's peak is not hidden by memory an earlier call left. It covers NumPy and torch allocations
alike (tracemalloc would miss torch's). Linux only.

    .venv/bin/python benchmarks/bench_similarity.py            # full run, a few minutes
    .venv/bin/python benchmarks/bench_similarity.py --quick    # smoke run, small sizes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

MIB = 1024 * 1024
SLOW_S = 20.0


# ---------------------------------------------------------------------------------------------
# Plain NumPy implementations of the same formulas
# ---------------------------------------------------------------------------------------------


def plain_cka(X, Y):
    """Kornblith et al.'s reference: explicit Grams, centred by row/column means."""

    def centred_gram(A):
        K = A @ A.T
        means = K.mean(axis=0)
        return K - means[None, :] - means[:, None] + means.mean()

    K, L = centred_gram(X), centred_gram(Y)
    return np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L))


def plain_cka_unbiased(X, Y):
    """Explicit Grams with zeroed diagonals and Song et al.'s unbiased HSIC."""

    def hsic(K, L):
        n = len(K)
        rk, rl = K.sum(axis=1), L.sum(axis=1)
        return (np.sum(K * L) + rk.sum() * rl.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * rk @ rl) / (n * (n - 3))

    K, L = X @ X.T, Y @ Y.T
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def plain_procrustes(X, Y):
    X, Y = X - X.mean(axis=0), Y - Y.mean(axis=0)
    X, Y = X / np.linalg.norm(X), Y / np.linalg.norm(Y)
    return np.linalg.svd(X.T @ Y, compute_uv=False).sum()


def plain_knn_jaccard(X, Y, k=10):
    def neighbours(A):
        U = A / np.linalg.norm(A, axis=1, keepdims=True)
        C = U @ U.T
        np.fill_diagonal(C, -np.inf)
        return np.argsort(-C, axis=1)[:, :k]

    nx, ny = neighbours(X), neighbours(Y)
    return np.mean([len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(nx, ny)])


def library_functions():
    from robustlens import similarity as S

    return {
        "cka": S.linear_cka,
        "cka_unbiased": lambda X, Y: S.linear_cka(X, Y, unbiased=True),
        "procrustes": S.procrustes_similarity,
        "knn_jaccard": S.knn_jaccard,
    }


PLAIN = {"cka": plain_cka, "cka_unbiased": plain_cka_unbiased, "procrustes": plain_procrustes, "knn_jaccard": plain_knn_jaccard}


# ---------------------------------------------------------------------------------------------
# Child processes: one measurement each, reported as JSON on stdout
# ---------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_bytes() -> int:
    """VmHWM: the peak RSS of this process since the last reset (ru_maxrss is not used: Linux
    carries it over from the parent across fork/exec)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = 0.5 * X + rng.standard_normal((n, d))
    return X, Y


def child_measure_pair(args) -> None:
    """Time robustlens and the plain implementation alternately in one process (so drifting
    load from other jobs hits both alike), printing one JSON line per call as it finishes.
    Each call's peak is measured from a fresh peak-RSS mark. A call slower than SLOW_S is not
    repeated."""
    X, Y = data(args.n, args.d)
    fns = {"ours": library_functions()[args.measure], "plain": PLAIN[args.measure]}
    for fn in fns.values():
        fn(X[:50, :64], Y[:50, :64])  # load lazily loaded libraries (their pages would count as memory)
    slow = set()
    for _ in range(1 + args.repeats):
        for impl, fn in fns.items():
            if impl in slow:
                continue
            reset_peak_rss()
            before = rss_bytes()
            start = time.perf_counter()
            value = float(fn(X, Y))
            elapsed = time.perf_counter() - start
            if elapsed > SLOW_S:
                slow.add(impl)
            print(json.dumps({"impl": impl, "value": value, "time_s": elapsed,
                              "peak_extra_mib": (peak_rss_bytes() - before) / MIB}), flush=True)


def child_rtd(args) -> dict:
    from robustlens.similarity import rtd_trials

    X, Y = data(args.n, args.d)
    rtd_trials(X[:20], Y[:20], n_trials=1, batch=20)  # load the persistence core, warm up
    start = time.perf_counter()
    value = float(rtd_trials(X, Y, n_trials=1, batch=args.n)[0])
    return {"value": value, "time_s": time.perf_counter() - start}


def child_stream(args) -> dict:
    import zarr

    from robustlens.similarity import StreamingLinearCKA, iter_zarr_chunks

    zx = zarr.open_array(os.path.join(args.store, "x.zarr"), mode="r")
    zy = zarr.open_array(os.path.join(args.store, "y.zarr"), mode="r")
    reset_peak_rss()
    before = rss_bytes()
    start = time.perf_counter()
    acc = StreamingLinearCKA()
    for x_chunk, y_chunk in iter_zarr_chunks(_RowPrefix(zx, args.n), _RowPrefix(zy, args.n), args.chunk):
        acc.update(x_chunk, y_chunk)
    biased, unbiased = acc.value(), acc.value(unbiased=True)
    return {"time_s": time.perf_counter() - start, "peak_extra_mib": (peak_rss_bytes() - before) / MIB,
            "rss_before_mib": before / MIB, "n": acc.n, "cka": biased, "cka_unbiased": unbiased}


class _RowPrefix:
    """The first n rows of a zarr array, sliced lazily (reads only what is asked for)."""

    def __init__(self, array, n):
        self.array, self.shape = array, (n, *array.shape[1:])

    def __getitem__(self, rows: slice):
        return self.array[rows.start : min(rows.stop, self.shape[0])]


THREADS = {"n": 1}

#: glibc's default mmap threshold adapts upwards after large frees, after which freed chunk
#: buffers stay in the heap and RSS creeps up with the number of chunks (measured: 197 MiB extra
#: at n = 10,000, 239 MiB at 100,000, with chunks of 5000 x 512). A fixed threshold returns
#: every large buffer to the system, so each call's peak shows what that call holds (and one
#: call does not reuse memory another call left in the heap).
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}




def child_env() -> dict:
    """Environment of a measurement: ``THREADS`` BLAS/OpenMP threads for every library, and
    glibc's mmap threshold fixed (``FIXED_MMAP_THRESHOLD``)."""
    n = str(THREADS["n"])
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, **FIXED_MMAP_THRESHOLD}


def run_child(*argv: str) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is a JSON result."""
    proc = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True, env=child_env())
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_child_lines(*argv: str, timeout: float) -> tuple[list[dict], bool]:
    """Run a child that prints one JSON line per result; stop it after ``timeout`` seconds.
    Returns the results it printed and whether it was stopped."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        out, err = proc.communicate(timeout=timeout)
        stopped = False
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        stopped = True
    if proc.returncode != 0 and not stopped:
        raise RuntimeError(f"child {argv} failed:\n{err[-3000:]}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")], stopped


# ---------------------------------------------------------------------------------------------
# Parent: run the grid and print tables
# ---------------------------------------------------------------------------------------------


def bench_measures(shapes, repeats, plain_timeout) -> list[str]:
    lines = ["| measure | (n, d) | robustlens s | plain NumPy s | speed-up | robustlens peak MiB | plain peak MiB |",
             "|---|---|---:|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for n, d in shapes:
        for measure in PLAIN:
            results, stopped = run_child_lines("pair", measure, str(n), str(d), str(repeats), timeout=plain_timeout)
            ours = [r for r in results if r["impl"] == "ours"]
            plain = [r for r in results if r["impl"] == "plain"]
            if not ours:
                raise RuntimeError(f"{measure} at {(n, d)}: no result within {plain_timeout} s")
            best_ours = min(r["time_s"] for r in ours)
            peak_ours = max(r["peak_extra_mib"] for r in ours)
            if not plain:  # the plain implementation's first call ran past the time limit
                elapsed = plain_timeout - sum(r["time_s"] for r in ours)
                lines.append(f"| {measure} | ({n}, {d}) | {best_ours:.3f} | > {elapsed:.0f} (stopped) | "
                             f"> {elapsed / best_ours:.0f}x | {peak_ours:.0f} | not measured |")
                print(lines[-1], flush=True)
                continue
            if abs(ours[0]["value"] - plain[0]["value"]) > 1e-8:
                raise AssertionError(f"{measure} at {(n, d)}: robustlens {ours[0]['value']} != plain {plain[0]['value']}")
            best_plain = min(r["time_s"] for r in plain)
            calls = f" ({len(plain)} call{'s' if len(plain) > 1 else ''})" if len(plain) < len(ours) else ""
            lines.append(f"| {measure} | ({n}, {d}) | {best_ours:.3f} | {best_plain:.3f}{calls} | {best_plain / best_ours:.1f}x | "
                         f"{peak_ours:.0f} | {max(r['peak_extra_mib'] for r in plain):.0f} |")
            print(lines[-1], flush=True)
    return lines


def bench_rtd(batches, d) -> list[str]:
    lines = ["| batch b | matrix | one trial s (2 persistence runs) | RTD value |", "|---:|---|---:|---:|"]
    print("\n".join(lines), flush=True)
    for b in batches:
        r = run_child("rtd", str(b), str(d))
        lines.append(f"| {b} | {2 * b} x {2 * b} | {r['time_s']:.2f} | {r['value']:.2f} |")
        print(lines[-1], flush=True)
    return lines


def write_store(path, n, d, chunk):
    import zarr

    rng = np.random.default_rng(0)
    zx = zarr.create_array(os.path.join(path, "x.zarr"), shape=(n, d), chunks=(chunk, d), dtype="f4")
    zy = zarr.create_array(os.path.join(path, "y.zarr"), shape=(n, d), chunks=(chunk, d), dtype="f4")
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        x = rng.standard_normal((stop - start, d), dtype=np.float32)
        zx[start:stop] = x
        zy[start:stop] = 0.5 * x + rng.standard_normal((stop - start, d), dtype=np.float32)


def bench_streaming(sizes, d, chunk) -> list[str]:
    lines = ["| n | data read (float32, X and Y) | time s | peak extra MiB | RSS before MiB | CKA | unbiased CKA |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="robustlens-bench-stream-") as tmp:
        start = time.perf_counter()
        write_store(tmp, max(sizes), d, chunk)
        print(f"(wrote the {max(sizes)} x {d} stores in {time.perf_counter() - start:.1f} s)\n", flush=True)
        print("\n".join(lines), flush=True)
        for n in sizes:
            r = run_child("stream", str(n), str(d), tmp, str(chunk))
            assert r["n"] == n
            lines.append(f"| {n} | {2 * n * d * 4 / MIB:.0f} MiB | {r['time_s']:.2f} | {r['peak_extra_mib']:.0f} | "
                         f"{r['rss_before_mib']:.0f} | {r['cka']:.4f} | {r['cka_unbiased']:.4f} |")
            print(lines[-1], flush=True)
    return lines


def machine() -> str:
    from importlib.metadata import version

    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {version('torch')}, numpy {np.__version__}, "
            f"giotto-ph {version('giotto-ph')}, {THREADS['n']} BLAS thread(s), load average at start {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in well under a minute")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/OpenMP threads of every measurement (default 1: on a shared machine, "
                             "multithreaded BLAS timings swing by 10x with other jobs' load)")
    parser.add_argument("--plain-timeout", type=float, default=120.0, help="stop a plain NumPy run after this many seconds")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "pair":
            child_measure_pair(argparse.Namespace(measure=rest[0], n=int(rest[1]), d=int(rest[2]), repeats=int(rest[3])))
        elif kind == "rtd":
            print(json.dumps(child_rtd(argparse.Namespace(n=int(rest[0]), d=int(rest[1])))))
        elif kind == "stream":
            ns = argparse.Namespace(n=int(rest[0]), d=int(rest[1]), store=rest[2], chunk=int(rest[3]))
            print(json.dumps(child_stream(ns)))
        return

    if args.quick:
        shapes, batches, sizes, d_stream, chunk = [(1000, 128), (200, 1024)], [50, 100], [2_000, 10_000, 40_000], 64, 1000
    else:
        shapes, batches, sizes, d_stream, chunk = [(5000, 512), (2000, 8192)], [100, 200, 500], [10_000, 50_000, 200_000], 512, 5000
    THREADS["n"] = args.threads
    start = time.perf_counter()
    print(f"# similarity benchmarks{' (quick)' if args.quick else ''}\n\n{machine()}\n", flush=True)
    print("## measures vs plain NumPy (time: best of repeats; peak: extra RSS over the inputs)\n", flush=True)
    bench_measures(shapes, args.repeats, args.plain_timeout)
    print("\n## RTD, one trial (d = 64)\n", flush=True)
    bench_rtd(batches, 64)
    print(f"\n## streaming CKA from zarr (d = {d_stream}, chunks of {chunk} rows)\n", flush=True)
    bench_streaming(sizes, d_stream, chunk)
    print(f"\ntotal {time.perf_counter() - start:.0f} s, load average at end {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
