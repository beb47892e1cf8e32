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
A distance: 0 = same topology, lower = more similar. Runs on the CPU (ripser).
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


def _h1_bars(M: np.ndarray) -> np.ndarray:
    """H1 persistence bars (birth, death) of the Vietoris-Rips filtration of the distance matrix
    M (zero diagonal), from ripser's C++ core: exactly what ``ripser.ripser(M, maxdim=1,
    distance_matrix=True)["dgms"][1]`` computes (its dense path hands the core the upper
    triangle as float32), without importing the Python wrapper, whose scikit-learn import
    costs over a second in every comparison job. tests/unit/test_similarity.py checks the
    equality."""
    from pyRipser import doRipsFiltrationDM

    if np.any(np.diagonal(M) != 0):
        raise ValueError("the RTD distance matrix must have a zero diagonal")
    upper = np.asarray(M[np.triu_indices(len(M), 1)], dtype=np.float32)
    result = doRipsFiltrationDM(upper, 1, np.inf, 2, False)
    return np.reshape(np.asarray(result["births_and_deaths_by_dim"][1], dtype=float), (-1, 2))


def _h1_total_persistence(M: np.ndarray) -> float:
    """Sum of the H1 bar lengths of the Vietoris-Rips filtration of distance matrix M (ripser)."""
    bars = _h1_bars(M)
    bars = bars[np.isfinite(bars[:, 1])]
    return float(np.sum(bars[:, 1] - bars[:, 0]))


def _rtd_of_batch(X: np.ndarray, Y: np.ndarray) -> float:
    """(RTD(X, Y) + RTD(Y, X)) / 2 of one batch: RTD(X, Y) = total H1 length of R-Cross-Barcode."""
    A = _quantile_normalised_distances(X)
    B = _quantile_normalised_distances(Y)
    return (_h1_total_persistence(cross_barcode_matrix(A, B)) + _h1_total_persistence(cross_barcode_matrix(B, A))) / 2


def rtd_trials(X, Y, n_trials: int = 10, batch: int = 500, seed: int = 0) -> np.ndarray:
    """RTD of each of ``n_trials`` random batches (see :func:`rtd`), as a float64 array.

    Trial t uses ``min(batch, n)`` distinct samples drawn (the same indices for X and Y) by
    ``numpy.random.default_rng(seed)``; the result is deterministic for a seed.
    """
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
        values[t] = _rtd_of_batch(Xn[idx], Yn[idx])
    return values


def rtd(X, Y, n_trials: int = 10, batch: int = 500, seed: int = 0) -> float:
    """Representation Topology Divergence (Barannikov, Trofimov, Balabin, Burnaev 2022,
    "Representation Topology Divergence: A Method for Comparing Neural Network
    Representations", ICML).

    For each of ``n_trials`` random batches of ``batch`` samples (same indices in X and Y, drawn
    with ``seed``): A, B = Euclidean distance matrices of the batch in X and in Y, each divided
    by its 0.9 quantile; R-Cross-Barcode_1(X, Y) = H1 persistence barcode (ripser,
    ``distance_matrix=True``, maxdim=1) of [[0, A'], [A, min(A, B)]]
    (:func:`cross_barcode_matrix`); RTD(X, Y) = sum of its bar lengths. The value is
    (RTD(X, Y) + RTD(Y, X)) / 2 averaged over the trials (:func:`rtd_trials` gives each trial).

    A distance: 0 for representations with the same topology (e.g. X and an isometric, or
    isotropically scaled, copy of it); lower = more similar. Range [0, inf), growing with the
    batch size, so compare values only at equal ``batch``. Cost per trial: two ripser runs on
    2b x 2b matrices, measured 0.1 s at b = 100, 0.8 s at b = 200 and 10 s at b = 500 (one
    core, benchmarks/similarity.md), so the defaults cost about 100 s per pair of layers.
    """
    return float(np.mean(rtd_trials(X, Y, n_trials=n_trials, batch=batch, seed=seed)))
