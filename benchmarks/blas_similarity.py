"""Linear CKA (biased, unbiased) and Procrustes against the best plain-NumPy formula per shape.

For each shape (n, d), float64, X standard normal and Y = 0.5 X + noise, at 1 and 2 BLAS/OpenMP
threads (NumPy's BLAS and torch pinned alike: threadpoolctl plus torch.set_num_threads, in one
subprocess per thread count with the OMP/OPENBLAS/MKL variables set before numpy and torch are
imported), robustlens and the plain formula run alternately; reported is the median of
``--repeats`` calls each (one call at (10000, 8192)) and the ratio plain / robustlens (> 1:
robustlens faster).

The plain baselines (below) take the cheaper route for the shape: for CKA the feature route
(centre, then X'X and Y'Y, which NumPy computes with BLAS syrk, and X'Y: n (d^2/2 + d^2/2 +
d^2) multiply-adds) when n > 2d, and the Gram route otherwise (XX' and YY' by syrk, n^2 d
multiply-adds, centred through their row and column means); only the terms the estimator
needs; Procrustes from the d x d product when n > d, else from the n x n R factors of QRs of
Xc' (the SVD of a d x d product would dominate). No timing is asserted.

    .venv/bin/python benchmarks/blas_similarity.py [--repeats 3] [--shapes 5000x512,1500x6000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SHAPES = "5000x512,10000x512,5000x2048,1500x6000,10000x8192"
#: Shapes with more entries than this are timed once per implementation (a call at
#: (10000, 8192) takes 10-60 s), the others ``--repeats`` times.
ONCE_ABOVE = 20_000_000


def baseline_route(measure: str, n: int, d: int) -> str:
    """The cheaper plain route for the shape (see the module docstring)."""
    if measure == "procrustes":
        return "features" if n > d else "qr"
    return "features" if n > 2 * d else "gram"


def plain_cka(X, Y, unbiased):
    n, d = X.shape
    if baseline_route("cka", n, d) == "features":
        Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
        xy, xx, yy = Xc.T @ Yc, Xc.T @ Xc, Yc.T @ Yc
        kl, kk, ll = float(np.vdot(xy, xy)), float(np.vdot(xx, xx)), float(np.vdot(yy, yy))
        if unbiased:
            a, b = np.einsum("ij,ij->i", Xc, Xc), np.einsum("ij,ij->i", Yc, Yc)
    else:  # Gram route
        K, L = X @ X.T, Y @ Y.T
        for G in (K, L):
            m = G.mean(axis=0)
            G -= m[None, :]
            G -= m[:, None]
            G += m.mean()
        kl, kk, ll = float(np.vdot(K, L)), float(np.vdot(K, K)), float(np.vdot(L, L))
        if unbiased:
            a, b = np.diagonal(K).copy(), np.diagonal(L).copy()
    if not unbiased:
        return kl / np.sqrt(kk * ll)

    def hsic(t, sa, sb, sab):  # Song et al. 2012 on centred Grams (1'K = 0)
        return (t - sab + sa * sb / ((n - 1) * (n - 2)) - 2 * sab / (n - 2)) / (n * (n - 3))

    sa, sb = a.sum(), b.sum()
    return hsic(kl, sa, sb, a @ b) / np.sqrt(hsic(kk, sa, sa, a @ a) * hsic(ll, sb, sb, b @ b))


def plain_procrustes(X, Y):
    n, d = X.shape
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    nx, ny = np.sqrt(np.vdot(Xc, Xc)), np.sqrt(np.vdot(Yc, Yc))
    if baseline_route("procrustes", n, d) == "features":
        M = Xc.T @ Yc
    else:  # singular values of Xc'Yc = those of Rx Ry' with Xc' = Qx Rx
        M = np.linalg.qr(Xc.T, mode="r") @ np.linalg.qr(Yc.T, mode="r").T
    return np.linalg.svd(M, compute_uv=False).sum() / (nx * ny)


def child(threads: int, shapes: list[tuple[int, int]], repeats: int, only: set[str]) -> None:
    global np
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    torch.set_num_threads(threads)
    from robustlens import similarity as S

    measures = {
        "cka": (lambda X, Y: S.linear_cka(X, Y), lambda X, Y: plain_cka(X, Y, False)),
        "cka_unbiased": (lambda X, Y: S.linear_cka(X, Y, unbiased=True), lambda X, Y: plain_cka(X, Y, True)),
        "procrustes": (S.procrustes_similarity, plain_procrustes),
    }
    for n, d in shapes:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((n, d))
        Y = 0.5 * X + rng.standard_normal((n, d))
        for name, (ours, plain) in measures.items():
            if name not in only:
                continue
            times = {"ours": [], "plain": []}
            values = {}
            for _ in range(repeats if n * d <= ONCE_ABOVE else 1):
                for impl, fn in (("plain", plain), ("ours", ours)):
                    start = time.perf_counter()
                    values[impl] = float(fn(X, Y))
                    times[impl].append(time.perf_counter() - start)
            assert abs(values["ours"] - values["plain"]) <= 1e-10 * abs(values["plain"]), (name, values)
            print(json.dumps({"threads": threads, "n": n, "d": d, "measure": name,
                              "route": baseline_route(name, n, d),
                              "plain_s": float(np.median(times["plain"])), "ours_s": float(np.median(times["ours"]))}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", default=SHAPES)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--measures", default="cka,cka_unbiased,procrustes")
    parser.add_argument("--child", type=int, default=None)
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    if args.child is not None:
        child(args.child, shapes, args.repeats, set(args.measures.split(",")))
        return
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        env = dict(os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.path.join(root, "workflow") + os.pathsep + env.get("PYTHONPATH", "")
        out = subprocess.run([sys.executable, __file__, "--child", str(threads), "--shapes", args.shapes, "--repeats", str(args.repeats),
                              "--measures", args.measures],
                             env=env, check=True, capture_output=True, text=True).stdout
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    print(f"| (n, d) | threads | measure | baseline route | plain s | robustlens s | plain / robustlens |")
    print("|---|---:|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| ({r['n']}, {r['d']}) | {r['threads']} | {r['measure']} | {r['route']} | {r['plain_s']:.3f} | {r['ours_s']:.3f} | {r['plain_s'] / r['ours_s']:.2f}x |")


if __name__ == "__main__":
    main()
