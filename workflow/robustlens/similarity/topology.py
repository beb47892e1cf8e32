"""Representation Topology Divergence (Barannikov, Trofimov, Balabin, Burnaev 2022,
"Representation Topology Divergence: A Method for Comparing Neural Network Representations",
ICML).

For a batch with Euclidean distance matrices A (in X) and B (in Y), each divided by its 0.9
quantile, R-Cross-Barcode_1(X, Y) is the H1 persistence barcode of the Vietoris-Rips
filtration of

    [[0,  A'        ],
     [A,  min(A, B) ]]

(:func:`cross_barcode_matrix`), RTD(X, Y) is the sum of its bar lengths, and the value is
(RTD(X, Y) + RTD(Y, X)) / 2 averaged over random batches (:func:`rtd`, :func:`rtd_trials`).
A distance: 0 = same topology, lower = more similar. Runs on the CPU: giotto-ph's Vietoris-Rips
core (``ripser_parallel``), which gives the same bars as ripser (the authors' reference) in less
time, and can use several threads.
"""

from __future__ import annotations

import numpy as np

from robustlens.similarity.validation import RepresentationError, _as_numpy_float64, validate_representation


def _quantile_normalised_distances(X: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix of the rows of X divided by its 0.9 quantile (over all b^2 entries)."""
    from scipy.spatial.distance import pdist, squareform

    D = squareform(pdist(X, metric="euclidean"))
    scale = np.quantile(D, 0.9)
    if not scale > 0:
        raise RepresentationError("RTD: the 0.9 quantile of the batch's distances is 0 (too many identical rows)")
    return D / scale


def cross_barcode_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The 2b x 2b matrix whose Vietoris-Rips filtration gives R-Cross-Barcode(A, B).

        [[0,  A'         ],
         [A,  min(A, B)  ]]

    (Barannikov et al. 2022, definition of the R-Cross-Barcode; the same layout as the authors'
    reference code, github.com/IlyaTrofimov/RTD ``rtd/barcodes.py``, which also sets entries
    below 1e-6 times the mean of A to zero.) The first b vertices are at distance zero
    from each other, the second b carry min(A, B), and vertex i of the first copy is at A_ij
    from vertex j of the second. The matrix is symmetric: ripser reads only one triangle
    (the upper one in ripser.py 0.6), so both off-diagonal blocks must hold A (A' = A).
    """
    b = A.shape[0]
    M = np.zeros((2 * b, 2 * b))
    M[b:, :b] = A
    M[:b, b:] = A.T
    M[b:, b:] = np.minimum(A, B)
    M[M < 1e-6 * A.mean()] = 0.0
    return M


def _check_zero_diagonal(M: np.ndarray) -> None:
    if np.any(np.diagonal(M) != 0):
        raise ValueError("the RTD distance matrix must have a zero diagonal")


#: giotto-ph's C++ core (module ``gph.modules.gph_ripser``), loaded by :func:`_gph_core`.
_GPH_CORE = None


def _gph_core():
    """giotto-ph's compiled Vietoris-Rips module, loaded from its file without running
    ``gph/__init__.py``: that imports scikit-learn (0.5-0.9 s measured) in every comparison job,
    for nearest-neighbour code that a precomputed distance matrix never uses. Registered in
    ``sys.modules`` under its own name, so a later ``import gph`` reuses it."""
    global _GPH_CORE
    if _GPH_CORE is None:
        import importlib.machinery
        import importlib.util
        import sys
        from pathlib import Path

        name = "gph.modules.gph_ripser"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.find_spec("gph")  # a top-level name: found, not imported
            if spec is None or not spec.submodule_search_locations:
                raise ImportError("RTD needs giotto-ph (pip install giotto-ph==0.2.4, see requirements.txt)")
            folder = Path(spec.submodule_search_locations[0]) / "modules"
            paths = [folder / f"gph_ripser{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
            path = next((p for p in paths if p.is_file()), None)
            if path is None:
                raise ImportError(f"giotto-ph's gph_ripser extension is not in {folder}")
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            sys.modules[name] = module
        _GPH_CORE = module
    return _GPH_CORE


def _default_threads() -> int:
    """The job's thread count: torch's intra-op threads, which ``configure_torch`` sets to the
    rule's ``threads:`` (1 by default)."""
    import torch

    return max(1, int(torch.get_num_threads()))


def _h1_bars(M: np.ndarray, threads: int | None = None) -> np.ndarray:
    """H1 persistence bars (birth, death), float64, of the Vietoris-Rips filtration of the
    distance matrix M (zero diagonal), from giotto-ph's C++ core with ``threads`` threads
    (default: :func:`_default_threads`): exactly what ``gph.ripser_parallel(M,
    metric="precomputed", maxdim=1, n_threads=threads, collapse_edges=False)["dgms"][1]``
    computes (the upper triangle as float32, the enclosing radius as threshold), without the
    wrapper's scikit-learn import. Never with ``collapse_edges``: on cross-barcode matrices the
    edge collapse costs far more than it saves (measured 1.1 s vs 0.05 s at b = 100).

    The bars equal those of ripser's core (:func:`_ripser_h1_bars`, the authors' reference) as
    a multiset, float for float (in the same order, except that the two list tied bars in
    different orders); tests/unit/test_topology.py checks that at 1 and 2 threads."""
    _check_zero_diagonal(M)
    n = len(M)
    if threads is None:
        threads = _default_threads()
    threads = max(1, int(threads))
    upper = np.asarray(M[np.triu_indices(n, 1)], dtype=np.float32)
    diagonal = np.zeros(n, dtype=np.float32)
    # giotto-ph's threshold for a dense matrix without one: the enclosing radius (min over rows
    # of the row maximum), above which the complex is a cone and has no homology.
    thresh = float(np.min(np.max(M, axis=1))) if n else np.inf
    result = _gph_core().rips_dm(upper, diagonal, 2, 1, thresh, threads, False)
    return np.reshape(np.asarray(result.births_and_deaths_by_dim()[1], dtype=float), (-1, 2))


def _ripser_h1_bars(M: np.ndarray) -> np.ndarray:
    """The reference for :func:`_h1_bars`: the H1 bars from ripser's C++ core, exactly what
    ``ripser.ripser(M, maxdim=1, distance_matrix=True)["dgms"][1]`` computes (its dense path
    hands the core the upper triangle as float32), i.e. what the authors' code computes.
    Used by the tests and benchmarks/rtd_speed.py."""
    from pyRipser import doRipsFiltrationDM

    _check_zero_diagonal(M)
    upper = np.asarray(M[np.triu_indices(len(M), 1)], dtype=np.float32)
    result = doRipsFiltrationDM(upper, 1, np.inf, 2, False)
    return np.reshape(np.asarray(result["births_and_deaths_by_dim"][1], dtype=float), (-1, 2))


def _h1_total_persistence(M: np.ndarray, threads: int | None = None) -> float:
    """Sum of the H1 bar lengths of the Vietoris-Rips filtration of distance matrix M.

    ``math.fsum``: the correctly rounded sum (each length, a difference of two float32 values,
    is exact in float64), so the value does not depend on the order of the bars, which
    persistence codes break ties in differently (ripser and giotto-ph list tied bars in
    different orders)."""
    import math

    bars = _h1_bars(M, threads)
    bars = bars[np.isfinite(bars[:, 1])]
    return math.fsum((bars[:, 1] - bars[:, 0]).tolist())


def _rtd_of_batch(X: np.ndarray, Y: np.ndarray, threads: int | None = None) -> float:
    """(RTD(X, Y) + RTD(Y, X)) / 2 of one batch: RTD(X, Y) = total H1 length of R-Cross-Barcode."""
    A = _quantile_normalised_distances(X)
    B = _quantile_normalised_distances(Y)
    return (_h1_total_persistence(cross_barcode_matrix(A, B), threads)
            + _h1_total_persistence(cross_barcode_matrix(B, A), threads)) / 2


def rtd_trials(X, Y, n_trials: int = 10, batch: int = 500, seed: int = 0, threads: int | None = None) -> np.ndarray:
    """RTD of each of ``n_trials`` random batches (see :func:`rtd`), as a float64 array.

    Trial t uses ``min(batch, n)`` distinct samples drawn (the same indices for X and Y) by
    ``numpy.random.default_rng(seed)``; the result is deterministic for a seed and does not
    depend on ``threads`` (the persistence computation's threads; default: torch's intra-op
    thread count, which a job sets to its rule's ``threads:``).
    """
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if batch < 4:
        raise ValueError(f"batch must be at least 4, got {batch}")
    validate_representation(X, "X")
    validate_representation(Y, "Y")
    Xn, Yn = _as_numpy_float64(X), _as_numpy_float64(Y)
    n = Xn.shape[0]
    if Yn.shape[0] != n:
        raise ValueError(f"X and Y must describe the same samples: {n} rows vs {Yn.shape[0]}")
    rng = np.random.default_rng(seed)
    size = min(batch, n)
    values = np.empty(n_trials)
    for t in range(n_trials):
        idx = np.sort(rng.choice(n, size=size, replace=False))
        values[t] = _rtd_of_batch(Xn[idx], Yn[idx], threads)
    return values


def rtd(X, Y, n_trials: int = 10, batch: int = 500, seed: int = 0, threads: int | None = None) -> float:
    """Representation Topology Divergence (Barannikov, Trofimov, Balabin, Burnaev 2022,
    "Representation Topology Divergence: A Method for Comparing Neural Network
    Representations", ICML).

    For each of ``n_trials`` random batches of ``batch`` samples (same indices in X and Y, drawn
    with ``seed``): A, B = Euclidean distance matrices of the batch in X and in Y, each divided
    by its 0.9 quantile; R-Cross-Barcode_1(X, Y) = H1 persistence barcode (giotto-ph's
    ``ripser_parallel``, precomputed distances, maxdim=1; the same bars as ripser's, which the
    authors use) of [[0, A'], [A, min(A, B)]]
    (:func:`cross_barcode_matrix`); RTD(X, Y) = sum of its bar lengths. The value is
    (RTD(X, Y) + RTD(Y, X)) / 2 averaged over the trials (:func:`rtd_trials` gives each trial).

    A distance: 0 for representations with the same topology (e.g. X and an isometric, or
    isotropically scaled, copy of it); lower = more similar. Range [0, inf), growing with the
    batch size, so compare values only at equal ``batch``. Cost per trial: two persistence runs
    on 2b x 2b matrices, measured 0.03 s at b = 100, 0.26 s at b = 200 and 2.6 s at b = 500 with
    one thread (2.6-3.6x faster than ripser at b = 100, 300-500, 1.9x at b = 200;
    benchmarks/rtd_speed.py, benchmarks/similarity.md), so the defaults cost about 26 s per pair
    of layers. ``threads`` (default: torch's intra-op thread count, i.e. the job's ``threads:``)
    parallelises the H1 reduction; the value does not depend on it.
    """
    return float(np.mean(rtd_trials(X, Y, n_trials=n_trials, batch=batch, seed=seed, threads=threads)))
