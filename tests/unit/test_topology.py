"""RTD's persistence core: giotto-ph's ``ripser_parallel`` core (what robustlens uses) gives the
same H1 bars as ripser (the authors' reference, kept as the reference here), at 1 and 2 threads,
on random and degenerate cross-barcode matrices; RTD values equal those of the ripser path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from robustlens import similarity as S
from robustlens.similarity import topology
from robustlens.similarity.topology import _h1_bars, _h1_total_persistence, _quantile_normalised_distances, _ripser_h1_bars


def cross_barcode(n, seed, d=64, noise=1.0):
    """The cross-barcode matrix rtd builds for a batch of n random samples (X, Y related)."""
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, d))
    Y = 0.5 * X + noise * g.standard_normal((n, d))
    return S.cross_barcode_matrix(_quantile_normalised_distances(X), _quantile_normalised_distances(Y))


def canonical(bars):
    return bars[np.lexsort((bars[:, 1], bars[:, 0]))]


def assert_same_bars(M, threads):
    """giotto-ph's bars equal ripser's as a multiset, exactly (the same float32 values); the two
    list tied bars in different orders, so the bars are compared sorted. The H1 totals are then
    equal exactly too (``math.fsum`` does not depend on the order)."""
    expected = _ripser_h1_bars(M)
    got = _h1_bars(M, threads=threads)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_array_equal(canonical(got), canonical(expected))
    monkey = pytest.MonkeyPatch()
    try:
        total = _h1_total_persistence(M, threads)
        monkey.setattr(topology, "_h1_bars", lambda M, threads=None: _ripser_h1_bars(M))
        assert _h1_total_persistence(M) == total
    finally:
        monkey.undo()
    return expected


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n, seed", [(50, 0), (50, 1), (120, 2), (200, 3), (300, 4)])
def test_gph_bars_equal_ripser_bars(n, seed, threads):
    bars = assert_same_bars(cross_barcode(n, seed), threads)
    assert len(bars) > n // 2  # a real test: many bars
    assert np.all(np.isfinite(bars))


def test_ripser_reference_is_the_ripser_wrapper():
    from ripser import ripser

    M = cross_barcode(80, 5)
    np.testing.assert_array_equal(_ripser_h1_bars(M), ripser(M, maxdim=1, distance_matrix=True)["dgms"][1])


def test_core_equals_the_gph_wrapper():
    """robustlens calls giotto-ph's compiled core directly (no scikit-learn import); the bars
    equal those of ``gph.ripser_parallel`` without edge collapse."""
    import gph

    M = cross_barcode(100, 6)
    for threads in (1, 2):
        expected = gph.ripser_parallel(M, metric="precomputed", maxdim=1, n_threads=threads, collapse_edges=False)["dgms"][1]
        np.testing.assert_array_equal(_h1_bars(M, threads=threads), expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_gph_bars_equal_ripser_bars_on_degenerate_matrices(threads):
    g = np.random.default_rng(7)
    # ties: distances rounded to a coarse grid, so many edges enter at the same value
    X = np.round(g.standard_normal((60, 4)) * 2) / 2
    Y = X + np.round(g.standard_normal((60, 4)))
    A = np.round(_quantile_normalised_distances(X), 1)
    B = np.round(_quantile_normalised_distances(Y), 1)
    assert len(assert_same_bars(S.cross_barcode_matrix(A, B), threads)) > 0
    # integer points on a small grid: exact ties, and duplicated rows (zero distances off the diagonal)
    P = g.integers(0, 3, size=(80, 2)).astype(float)
    Q = g.integers(0, 3, size=(80, 2)).astype(float)
    D = lambda Z: np.sqrt(((Z[:, None] - Z[None]) ** 2).sum(-1))  # noqa: E731
    M = S.cross_barcode_matrix(D(P), D(Q))
    assert np.sum(M[np.triu_indices(len(M), 1)] == 0) > len(M)
    assert_same_bars(M, threads)
    # every distance equal (a regular simplex), and all zero
    E = np.ones((30, 30)) - np.eye(30)
    assert_same_bars(S.cross_barcode_matrix(E, E), threads)
    assert_same_bars(S.cross_barcode_matrix(E, 0.5 * E), threads)
    assert_same_bars(np.zeros((20, 20)), threads)
    # the cross-barcode is empty when min(A, B) = A (B >= A): both agree on no bars
    A = D(g.standard_normal((25, 3)))
    empty = S.cross_barcode_matrix(A, A + 1.0 - np.eye(25))
    assert len(assert_same_bars(empty, threads)) == 0


def test_zero_diagonal_is_required():
    M = cross_barcode(10, 8)
    M[3, 3] = 0.1
    for bars in (_h1_bars, _ripser_h1_bars):
        with pytest.raises(ValueError, match=r"^the RTD distance matrix must have a zero diagonal$"):
            bars(M)


# The RTD inputs of tests/unit/test_similarity.py: (X, Y, rtd_trials arguments).
def _related_pair(n, p, q, noise, seed):
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, p))
    return X, X @ g.standard_normal((p, q)) + noise * g.standard_normal((n, q))


EXISTING_INPUTS = {
    "identical": lambda: (_related_pair(120, 25, 20, 1.0, 0)[0],) * 2 + ({"n_trials": 2, "batch": 40},),
    "textbook": lambda: (lambda X, g: (X, X + 0.8 * g.standard_normal((7, 3)), {"n_trials": 1, "batch": 7}))(
        *(lambda g: (g.standard_normal((7, 3)), g))(np.random.default_rng(9))),
    "deterministic": lambda: _related_pair(200, 5, 5, 2.0, 10) + ({"n_trials": 3, "batch": 30, "seed": 1},),
    "settings": lambda: _related_pair(9, 3, 3, 1.0, 46) + ({},),
    "batch4": lambda: _related_pair(9, 3, 3, 1.0, 46) + ({"n_trials": 1, "batch": 4, "seed": 3},),
    "larger": lambda: _related_pair(400, 16, 16, 1.0, 11) + ({"n_trials": 2, "batch": 150, "seed": 2},),
}


@pytest.mark.parametrize("name", sorted(EXISTING_INPUTS))
def test_rtd_values_equal_the_ripser_path(name, monkeypatch):
    X, Y, kwargs = EXISTING_INPUTS[name]()
    got = {threads: S.rtd_trials(X, Y, threads=threads, **kwargs) for threads in (None, 1, 2)}
    monkeypatch.setattr(topology, "_h1_bars", lambda M, threads=None: _ripser_h1_bars(M))
    expected = S.rtd_trials(X, Y, **kwargs)
    for values in got.values():
        np.testing.assert_array_equal(values, expected)
    if name != "identical":
        assert np.all(expected > 0)


def test_threads_argument():
    X, Y = _related_pair(50, 4, 4, 1.0, 12)
    assert S.rtd(X, Y, n_trials=2, batch=30, threads=2) == S.rtd(X, Y, n_trials=2, batch=30)
    with pytest.raises(ValueError, match=r"^threads must be at least 1, got 0$"):
        S.rtd_trials(X, Y, threads=0)


def test_rtd_imports_neither_scikit_learn_nor_the_gph_wrapper():
    code = ("import sys, numpy as np; from robustlens.similarity import rtd; "
            "g = np.random.default_rng(0); X = g.standard_normal((30, 4)); "
            "assert rtd(X, X + g.standard_normal((30, 4)), n_trials=1, batch=20) > 0; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'gph', 'ripser')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['gph.modules.gph_ripser']"
