"""Representational similarity measures against independent computations and known values."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from robustlens import similarity as S
from robustlens.similarity.cka import _CentredProducts, _feature_route_is_cheaper
from robustlens.similarity.knn import _cosine_neighbours
from robustlens.similarity.topology import _h1_bars, _h1_total_persistence, _quantile_normalised_distances
from robustlens.similarity.validation import _subtract_outer
from robustlens.measures import MEASURES, Measure, get_function


def rng(seed=0):
    return np.random.default_rng(seed)


def related_pair(n=300, p=25, q=20, noise=1.0, seed=0):
    """Y is a noisy linear image of X: a similarity strictly between 0 and 1."""
    g = rng(seed)
    X = g.standard_normal((n, p))
    Y = X @ g.standard_normal((p, q)) + noise * g.standard_normal((n, q))
    return X, Y


def random_orthogonal(d, seed=0):
    q, r = np.linalg.qr(rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------------------------------------
# Independent textbook implementations (written from the papers' formulas, not from the module)
# ---------------------------------------------------------------------------------------------


def textbook_biased_cka(X, Y):
    """Kornblith et al.: centred Grams H K H with the explicit centring matrix H."""
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L))


def song_unbiased_hsic_loops(K, L):
    """Song et al. 2012 unbiased HSIC, every sum an explicit loop over i != j."""
    n = len(K)
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    trace = sum(Kt[i, j] * Lt[j, i] for i in range(n) for j in range(n))
    sum_k = sum(Kt[i, j] for i in range(n) for j in range(n))
    sum_l = sum(Lt[i, j] for i in range(n) for j in range(n))
    sum_kl = sum(Kt[i, j] * Lt[j, m] for i in range(n) for j in range(n) for m in range(n))
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 * sum_kl / (n - 2)) / (n * (n - 3))


def textbook_unbiased_cka(X, Y):
    K, L = X @ X.T, Y @ Y.T  # uncentred: the unbiased estimator needs no centring
    hxy, hxx, hyy = (song_unbiased_hsic_loops(a, b) for a, b in ((K, L), (K, K), (L, L)))
    return hxy / np.sqrt(hxx * hyy)


def vectorised_unbiased_hsic(K, L):
    n = len(K)
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return (np.trace(Kt @ Lt) + one @ Kt @ one * (one @ Lt @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ Kt @ Lt @ one) / (n * (n - 3))


def vr_h1_total_persistence(D):
    """Total H1 persistence of the Vietoris-Rips filtration of D: standard Z/2 column reduction
    of the boundary matrix of the 2-skeleton (Edelsbrunner & Harer), no ripser."""
    m = len(D)
    simplices = [((v,), 0.0) for v in range(m)]
    simplices += [((i, j), D[i, j]) for i, j in itertools.combinations(range(m), 2)]
    simplices += [((i, j, k), max(D[i, j], D[i, k], D[j, k])) for i, j, k in itertools.combinations(range(m), 3)]
    simplices.sort(key=lambda s: (s[1], len(s[0]), s[0]))
    index = {s: t for t, (s, _) in enumerate(simplices)}
    columns = [
        {index[face] for face in itertools.combinations(s, len(s) - 1)} if len(s) > 1 else set()
        for s, _ in simplices
    ]
    low_owner = {}
    total = 0.0
    for t, column in enumerate(columns):
        while column and max(column) in low_owner:
            column ^= columns[low_owner[max(column)]]
        if column:
            low = max(column)
            low_owner[low] = t
            if len(simplices[t][0]) == 3:  # a triangle kills an H1 class born at an edge
                total += simplices[t][1] - simplices[low][1]
    return total


def paper_rtd_one_direction(X, Y):
    """RTD(X, Y) from Barannikov et al.'s definition, built here from scratch."""
    A = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    B = np.sqrt(((Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1))
    A, B = A / np.quantile(A, 0.9), B / np.quantile(B, 0.9)
    b = len(A)
    M = np.block([[np.zeros((b, b)), A.T], [A, np.minimum(A, B)]])
    return vr_h1_total_persistence(M)


# ---------------------------------------------------------------------------------------------
# Known values: identity, invariances, hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_identical_inputs_give_perfect_similarity_and_zero_rtd():
    X, _ = related_pair(n=120)
    assert S.linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert S.linear_cka(X, X, unbiased=True) == pytest.approx(1.0, abs=1e-12)
    assert S.procrustes_similarity(X, X) == pytest.approx(1.0, abs=1e-12)
    assert S.knn_jaccard(X, X, k=5) == 1.0
    assert S.rtd(X, X, n_trials=2, batch=40) == pytest.approx(0.0, abs=1e-7)


def test_orthogonal_transform_and_isotropic_scaling_leave_similarity_at_one():
    X, _ = related_pair(n=150, p=12)
    Y = 3.7 * X @ random_orthogonal(12, seed=5)
    shifted = Y + 10.0  # CKA, Procrustes and RTD are also translation invariant; cosine k-NN is not
    assert S.linear_cka(X, shifted) == pytest.approx(1.0, abs=1e-10)
    assert S.linear_cka(X, shifted, unbiased=True) == pytest.approx(1.0, abs=1e-10)
    assert S.procrustes_similarity(X, shifted) == pytest.approx(1.0, abs=1e-10)
    assert S.knn_jaccard(X, Y, k=10) == pytest.approx(1.0)
    assert S.rtd(X, shifted, n_trials=1, batch=40) == pytest.approx(0.0, abs=1e-5)


# A 4 x 2 example worked by hand: both centred, X'X = diag(2, 2), Y'Y = diag(2, 8), X'Y = diag(2, 4).
X_HAND = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
Y_HAND = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.0, -2.0]])


def test_biased_cka_hand_computed_and_textbook():
    # ||X'Y||^2 / (||X'X|| ||Y'Y||) = (4 + 16) / (sqrt(8) sqrt(68)) = 5 / sqrt(34)
    assert S.linear_cka(X_HAND, Y_HAND) == pytest.approx(5 / np.sqrt(34), rel=1e-12)
    X, Y = related_pair(n=60, p=7, q=9, seed=3)
    assert S.linear_cka(X, Y) == pytest.approx(textbook_biased_cka(X, Y), rel=1e-10)


def test_unbiased_cka_matches_song_formula_with_loops():
    X, Y = related_pair(n=9, p=3, q=4, seed=4)
    X += 5.0  # the unbiased estimator is translation invariant; the loops see uncentred Grams
    assert S.linear_cka(X, Y, unbiased=True) == pytest.approx(textbook_unbiased_cka(X, Y), rel=1e-9)


def test_procrustes_hand_computed_and_scipy_disparity():
    from scipy.spatial import procrustes

    # X / ||X||_F = X / 2, Y / ||Y||_F = Y / sqrt(10): nuclear norm of diag(2, 4) / (2 sqrt(10))
    assert S.procrustes_similarity(X_HAND, Y_HAND) == pytest.approx(3 / np.sqrt(10), rel=1e-12)
    X, Y = related_pair(n=80, p=6, q=6, noise=2.0, seed=6)
    s = S.procrustes_similarity(X, Y)
    assert 0.2 < s < 0.95
    assert procrustes(X, Y)[2] == pytest.approx(1 - s**2, rel=1e-9)  # disparity = 1 - s^2


def test_procrustes_with_features_far_exceeding_samples_forms_no_d_by_d_matrix():
    g = rng(7)
    n, d = 12, 200_000  # a d x d float64 matrix would need 320 GB
    X = g.standard_normal((n, d))
    Y = 0.5 * X + g.standard_normal((n, d))
    Yq = g.standard_normal((n, 50))

    def thin_svd_reference(A, B):  # ||A'B||_* = ||S_a U_a' U_b S_b||_* from thin SVDs (n x n)
        A, B = A - A.mean(0), B - B.mean(0)
        A, B = A / np.linalg.norm(A), B / np.linalg.norm(B)
        ua, sa, _ = np.linalg.svd(A, full_matrices=False)
        ub, sb, _ = np.linalg.svd(B, full_matrices=False)
        return np.linalg.svd((sa[:, None] * ua.T) @ (ub * sb), compute_uv=False).sum()

    assert S.procrustes_similarity(X, Y) == pytest.approx(thin_svd_reference(X, Y), rel=1e-9)
    assert S.procrustes_similarity(X, Yq) == pytest.approx(thin_svd_reference(X, Yq), rel=1e-9)


def test_knn_jaccard_hand_computed():
    # points at angles 0, 10, 90, 100 degrees vs 0, 80, 90, 170 degrees; k = 1 cosine neighbours
    # X: 0->1, 1->0, 2->3, 3->2.  Y: 0->1, 1->2, 2->1, 3->2.  Jaccard per sample 1, 0, 0, 1.
    def at(degrees):
        r = np.radians(degrees)
        return np.stack([np.cos(r), np.sin(r)], axis=1)

    assert S.knn_jaccard(at([0, 10, 90, 100]), at([0, 80, 90, 170]), k=1) == pytest.approx(0.5)


def test_knn_jaccard_matches_sklearn_nearest_neighbours():
    from sklearn.neighbors import NearestNeighbors

    X, Y = related_pair(n=150, p=10, q=8, noise=1.5, seed=8)
    k = 7

    def neighbour_sets(A):
        idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(A).kneighbors(A, return_distance=False)
        return [set(row) - {i} if i in row else set(row[:k]) for i, row in enumerate(idx)]

    expected = np.mean([len(a & b) / len(a | b) for a, b in zip(neighbour_sets(X), neighbour_sets(Y))])
    assert S.knn_jaccard(X, Y, k=k) == pytest.approx(expected, rel=1e-12)


def brute_force_knn_jaccard(X, Y, k, center):
    """Written from the definition: optionally subtract column means, cosine of every pair, the
    k most similar other rows, mean Jaccard of the two neighbour sets."""
    def neighbour_sets(A):
        A = np.asarray(A, dtype=np.float64)
        if center:
            A = A - A.mean(axis=0)
        unit = A / np.linalg.norm(A, axis=1, keepdims=True)
        cos = unit @ unit.T
        np.fill_diagonal(cos, -np.inf)
        return [set(np.argsort(-row)[:k].tolist()) for row in cos]

    return float(np.mean([len(a & b) / len(a | b) for a, b in zip(neighbour_sets(X), neighbour_sets(Y))]))


def test_knn_jaccard_center_equals_brute_force_centred_cosine_neighbours():
    # a large common feature mean (as in post-ReLU activations): uncentred cosine neighbours are
    # dominated by it; the universality paper's code centres the columns first
    X, Y = related_pair(n=120, p=6, q=8, noise=0.3, seed=21)
    g = rng(22)
    X = X + 8.0 + g.uniform(0, 4, size=6)
    Y = Y + 20.0 + g.uniform(0, 4, size=8)
    k = 6
    centred = S.knn_jaccard(X, Y, k=k, center=True)
    plain = S.knn_jaccard(X, Y, k=k)
    assert centred == pytest.approx(brute_force_knn_jaccard(X, Y, k, center=True), abs=1e-12)
    assert plain == pytest.approx(brute_force_knn_jaccard(X, Y, k, center=False), abs=1e-12)
    assert S.knn_jaccard(X, Y, k=k, center=False) == plain  # the default is no centring
    assert centred - plain > 0.1  # the mean hides the shared structure from uncentred neighbours
    # centring makes the value translation invariant; without it a shift changes it
    shift = 100.0 * g.standard_normal(6)
    assert S.knn_jaccard(X + shift, Y, k=k, center=True) == pytest.approx(centred, abs=1e-12)
    assert S.knn_jaccard(X + shift, Y, k=k) != pytest.approx(plain, abs=1e-3)


def test_knn_center_setting_reaches_the_measure_and_is_recorded_on_knn_rows_only():
    from robustlens.similarity_comparisons import measure_kwargs, similarity_matrix_rows, similarity_rows

    X, Y = related_pair(n=60, p=6, q=5, noise=0.5, seed=23)
    X, Y = X + 10.0, Y + 10.0
    labels = np.arange(60) % 3

    def store(A):
        return xr.Dataset({"block1": (("sample", "feature"), A), "label": ("sample", labels)})

    base = {"measures": ["cka", "knn_jaccard"], "knn_k": 4, "rtd": {"layers": []},
            "baseline": {"measures": ["knn_jaccard"], "n_permutations": 3, "seed": 0}}
    for center in (False, True):
        settings = {**base, "knn_center": center}
        assert measure_kwargs("knn_jaccard", settings) == {"k": 4, "center": center}
        assert "center" not in measure_kwargs("cka", settings)
        rows = {r["measure"]: r for r in similarity_rows(store(X), store(Y), ["block1"], settings, {"probe": "natural"})}
        assert rows["knn_jaccard"]["knn_center"] is center and "knn_center" not in rows["cka"]
        assert rows["knn_jaccard"]["value"] == pytest.approx(brute_force_knn_jaccard(X, Y, 4, center), abs=1e-12)
        null = S.permutation_baseline("knn_jaccard", X, Y, n_permutations=3, seed=0, measure_kwargs={"k": 4, "center": center})
        assert rows["knn_jaccard"]["baseline_mean"] == pytest.approx(null.mean())
        matrix = similarity_matrix_rows({"a": store(X), "b": store(Y)}, ["block1"], ["knn_jaccard"], settings, {})
        assert [(r["knn_center"], r["value"]) for r in matrix] == [(center, rows["knn_jaccard"]["value"])]


def test_rtd_matches_definition_with_textbook_persistence():
    g = rng(9)
    X = g.standard_normal((7, 3))
    Y = X + 0.8 * g.standard_normal((7, 3))
    expected = (paper_rtd_one_direction(X, Y) + paper_rtd_one_direction(Y, X)) / 2
    got = S.rtd_trials(X, Y, n_trials=1, batch=7)  # one batch holding every sample
    assert expected > 0.01
    assert got[0] == pytest.approx(expected, rel=1e-5)  # ripser works in float32
    # one direction, so the orientation of the block matrix is checked too
    A = _quantile_normalised_distances(X)
    B = _quantile_normalised_distances(Y)
    one_way = _h1_total_persistence(S.cross_barcode_matrix(A, B))
    assert one_way == pytest.approx(paper_rtd_one_direction(X, Y), rel=1e-5)


def test_cross_barcode_is_empty_when_the_second_graph_adds_no_shorter_edge():
    # B >= A everywhere: min(A, B) = A, so the R-Cross-Barcode(A, B) has no bars; the reverse
    # direction (off-diagonal B, lower right A) has bars.
    g = rng(22)
    X = g.standard_normal((12, 3))
    A = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    B = A + np.abs(np.subtract.outer(X[:, 0], X[:, 0]))  # symmetric, zero diagonal, >= A
    assert _h1_total_persistence(S.cross_barcode_matrix(A, B)) == 0.0
    assert _h1_total_persistence(S.cross_barcode_matrix(B, A)) > 0.01
    assert _h1_total_persistence(S.cross_barcode_matrix(B, A)) == pytest.approx(vr_h1_total_persistence(S.cross_barcode_matrix(B, A)), rel=1e-5)


def test_h1_bars_equal_ripser_wrapper():
    """robustlens calls ripser's C++ core directly; the bars equal those of ripser.ripser."""
    from ripser import ripser

    X, Y = related_pair(n=60, p=5, q=5, noise=1.0, seed=3)
    M = S.cross_barcode_matrix(_quantile_normalised_distances(X), _quantile_normalised_distances(Y))
    expected = ripser(M, maxdim=1, distance_matrix=True)["dgms"][1]
    assert len(expected) > 3
    np.testing.assert_array_equal(_h1_bars(M), expected)


def test_rtd_is_deterministic_for_a_seed_and_symmetric():
    X, Y = related_pair(n=200, p=5, q=5, noise=2.0, seed=10)
    a = S.rtd_trials(X, Y, n_trials=3, batch=30, seed=1)
    assert np.array_equal(a, S.rtd_trials(X, Y, n_trials=3, batch=30, seed=1))
    assert not np.array_equal(a, S.rtd_trials(X, Y, n_trials=3, batch=30, seed=2))
    assert np.array_equal(a, S.rtd_trials(Y, X, n_trials=3, batch=30, seed=1))
    assert S.rtd(X, Y, n_trials=3, batch=30, seed=1) == pytest.approx(a.mean())
    assert (a > 0).all()


# ---------------------------------------------------------------------------------------------
# Equivalent routes and estimators
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(200, 8, 6), (15, 60, 40)])
@pytest.mark.parametrize("unbiased", [False, True])
def test_gram_route_equals_feature_route(shape, unbiased):
    n, p, q = shape
    X, Y = related_pair(n=n, p=p, q=q, seed=11)
    features = S.linear_cka(X, Y, unbiased=unbiased, route="features")
    gram = S.linear_cka(X, Y, unbiased=unbiased, route="gram")
    assert features == pytest.approx(gram, rel=1e-10)
    assert S.linear_cka(X, Y, unbiased=unbiased) == pytest.approx(gram, rel=1e-10)


def test_torch_input_gives_the_numpy_value():
    X, Y = related_pair(n=90, seed=12)
    Xt, Yt = torch.from_numpy(X).float(), torch.from_numpy(Y).float()
    Xf, Yf = Xt.double().numpy(), Yt.double().numpy()
    assert S.linear_cka(Xt, Yt, unbiased=True) == pytest.approx(S.linear_cka(Xf, Yf, unbiased=True), rel=1e-12)
    assert S.procrustes_similarity(Xt, Yt) == pytest.approx(S.procrustes_similarity(Xf, Yf), rel=1e-12)
    assert S.knn_jaccard(Xt, Yt) == pytest.approx(S.knn_jaccard(Xf, Yf))


@pytest.mark.parametrize("unbiased", [False, True])
def test_streaming_equals_in_memory_with_uneven_chunks(unbiased):
    X, Y = related_pair(n=500, p=16, q=11, seed=13)
    X, Y = X + 50.0, Y - 20.0  # an offset the one-pass sums must survive
    sizes = [1, 7, 130, 3, 200, 159]
    bounds = np.cumsum([0, *sizes])
    chunks = [(X[a:b], Y[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    expected = S.linear_cka(X, Y, unbiased=unbiased)
    assert S.linear_cka_streaming(chunks, unbiased=unbiased) == pytest.approx(expected, abs=1e-6)
    assert S.linear_cka_streaming(chunks, unbiased=unbiased) == pytest.approx(expected, rel=1e-9)


def test_streaming_from_zarr_and_xarray_equals_in_memory(tmp_path):
    X, Y = related_pair(n=333, p=4 * 3, q=9, seed=14)
    zx = zarr.create_array(tmp_path / "x.zarr", shape=(333, 4, 3), chunks=(50, 4, 3), dtype="f8")
    zx[:] = X.reshape(333, 4, 3)  # conv-like trailing axes are flattened per chunk
    zy = xr.DataArray(Y, dims=("sample", "feature"))
    acc = S.StreamingLinearCKA()
    for x_chunk, y_chunk in S.iter_zarr_chunks(zx, zy, chunk_size=100):
        assert x_chunk.shape[0] <= 100 and x_chunk.shape[1] == 12
        acc.update(x_chunk, y_chunk)
    assert acc.n == 333
    assert acc.value() == pytest.approx(S.linear_cka(X, Y), abs=1e-6)
    assert acc.value(unbiased=True) == pytest.approx(S.linear_cka(X, Y, unbiased=True), abs=1e-6)


def test_minibatch_cka_is_the_ratio_of_averaged_unbiased_hsics():
    X, Y = related_pair(n=40, p=5, q=5, noise=2.0, seed=15)
    batches = np.array_split(rng(3).permutation(40), 40 // 10)
    h = np.array([[vectorised_unbiased_hsic(a @ a.T, b @ b.T) for a, b in ((X[i], Y[i]), (X[i], X[i]), (Y[i], Y[i]))] for i in batches])
    ratio_of_means = h[:, 0].mean() / np.sqrt(h[:, 1].mean() * h[:, 2].mean())
    mean_of_ratios = np.mean(h[:, 0] / np.sqrt(h[:, 1] * h[:, 2]))
    got = S.linear_cka_minibatch(X, Y, batch_size=10, seed=3)
    assert got == pytest.approx(ratio_of_means, rel=1e-10)
    assert abs(got - mean_of_ratios) > 1e-6


def test_minibatch_cka_approaches_full_unbiased_cka_on_a_large_sample():
    X, Y = related_pair(n=4000, p=40, q=40, noise=3.0, seed=16)
    full = S.linear_cka(X, Y, unbiased=True)
    values = np.array([S.linear_cka_minibatch(X, Y, batch_size=200, seed=s) for s in range(6)])
    spread = values.std(ddof=1)  # the estimator's sampling error over random minibatch partitions
    assert 0.3 < full < 0.9
    assert spread > 0
    assert np.all(np.abs(values - full) < 5 * spread + 1e-3)
    assert abs(values.mean() - full) < 4 * spread / np.sqrt(len(values)) + 1e-3


# ---------------------------------------------------------------------------------------------
# Null: independent representations sit at the permutation baseline
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cka", "cka_unbiased", "procrustes", "knn_jaccard"])
def test_independent_noise_is_within_the_permutation_baseline(name):
    g = rng(17)
    X, Y = g.standard_normal((150, 20)), g.standard_normal((150, 15))
    fn = get_function(name)
    null = S.permutation_baseline(fn, X, Y, n_permutations=40, seed=0)
    value = fn(X, Y)
    assert null.shape == (40,) and null.std() > 0
    assert abs(value - null.mean()) < 4 * null.std()
    assert fn(X, X @ g.standard_normal((20, 15)) + 0.3 * g.standard_normal((150, 15))) > null.max()


def test_permutation_baseline_shuffles_rows_of_y_with_the_seed():
    X, Y = related_pair(n=50, seed=18)
    null = S.permutation_baseline("cka", X, Y, n_permutations=3, seed=4)
    g = np.random.default_rng(4)
    expected = [S.linear_cka(X, Y[g.permutation(50)]) for _ in range(3)]
    np.testing.assert_allclose(null, expected, rtol=1e-12)
    np.testing.assert_array_equal(null, S.permutation_baseline(S.linear_cka, X, Y, n_permutations=3, seed=4))
    # a measure argument named like one of permutation_baseline's own (RTD's seed)
    rtd_null = S.permutation_baseline("rtd", X, Y, n_permutations=2, seed=4, measure_kwargs={"seed": 1, "n_trials": 1, "batch": 20})
    g = np.random.default_rng(4)
    np.testing.assert_array_equal(rtd_null, [S.rtd(X, Y[g.permutation(50)], n_trials=1, batch=20, seed=1) for _ in range(2)])


# ---------------------------------------------------------------------------------------------
# Errors instead of NaN
# ---------------------------------------------------------------------------------------------


def test_validate_representation_names_the_representation():
    where = "model cnn-eps1-s0, layer block2, probe natural"
    X = rng().standard_normal((10, 3))
    S.validate_representation(X, where)  # fine
    bad = {"NaN": X.copy(), "Inf": X.copy(), "zero variance": np.ones((10, 3)), "2 are needed": X[:1]}
    bad["NaN"][2, 1] = np.nan
    bad["Inf"][0, 0] = np.inf
    for message, value in bad.items():
        with pytest.raises(S.RepresentationError, match=message) as info:
            S.validate_representation(value, where)
        assert where in str(info.value)
    with pytest.raises(S.RepresentationError, match="zero variance"):
        S.validate_representation(torch.ones(5, 2), where)
    assert issubclass(S.RepresentationError, ValueError)


@pytest.mark.parametrize("shape", [(30, 25), (200, 5)])  # CKA's Gram route and feature route
@pytest.mark.parametrize("name", ["cka", "cka_unbiased", "procrustes", "knn_jaccard", "rtd"])
def test_measures_raise_rather_than_return_nan(name, shape):
    fn = get_function(name)
    kwargs = {"batch": 20, "n_trials": 1} if name == "rtd" else {}
    X, Y = related_pair(n=shape[0], p=shape[1], q=shape[1], seed=19)
    nan, inf = X.copy(), Y.copy()
    nan[3, 3] = np.nan
    inf[-1, 0] = -np.inf
    with pytest.raises(S.RepresentationError, match="NaN or Inf"):
        fn(nan, Y, **kwargs)
    with pytest.raises(S.RepresentationError, match="NaN or Inf"):
        fn(X, inf, **kwargs)
    with pytest.raises(S.RepresentationError, match="zero variance"):
        fn(X, np.full_like(Y, 2.0), **kwargs)
    with pytest.raises(ValueError, match="same samples"):
        fn(X, Y[:-1], **kwargs)
    if name != "rtd":  # finite entries whose float64 products overflow
        with pytest.raises(S.RepresentationError, match="too large"):
            fn(X * 1e200, Y, **kwargs)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("route", ["features", "gram"])
def test_cka_is_scale_invariant_up_to_where_its_terms_overflow(unbiased, route):
    """CKA(sX, Y) = CKA(X, Y) (Kornblith et al. 2019: invariant to isotropic scaling) for every
    scale whose HSIC(K, K) is still a finite float64: with ||X||_F = ||Y||_F = 1, scales 1e76
    and 1e3 give HSICs up to 1e304 and 1e12 whose product overflows, which once turned CKA into
    a silent 0; at 1e78 the HSIC itself overflows and the error says so."""
    X, Y = related_pair(n=20, p=5, q=5, seed=21)
    X, Y = X / np.linalg.norm(X), Y / np.linalg.norm(Y)  # HSIC(K, K) <= ||X||_F^4 = 1
    reference = S.linear_cka(X, Y, unbiased=unbiased, route=route)
    for scale_x, scale_y in ((1e-60, 1.0), (1e60, 1e-30), (1e76, 1e3), (1e3, 1e76)):
        value = S.linear_cka(X * scale_x, Y * scale_y, unbiased=unbiased, route=route)
        assert value == pytest.approx(reference, rel=1e-9), (scale_x, scale_y)
    with pytest.raises(S.RepresentationError, match="too large"):
        S.linear_cka(X * 1e78, Y, unbiased=unbiased, route=route)


def test_invalid_settings_raise():
    X, Y = related_pair(n=10, seed=20)
    with pytest.raises(ValueError, match="k must"):
        S.knn_jaccard(X, Y, k=10)
    with pytest.raises(ValueError, match="at least 4"):
        S.linear_cka(X[:3], Y[:3], unbiased=True)
    assert 0 <= S.linear_cka(X[:3], Y[:3]) <= 1  # biased CKA is fine with 3 samples
    with pytest.raises(ValueError, match="at least 4"):
        S.linear_cka_minibatch(X, Y, batch_size=3)
    with pytest.raises(ValueError, match="at least 4"):
        S.StreamingLinearCKA().update(X[:3], Y[:3]).value(unbiased=True)
    with pytest.raises(S.RepresentationError, match="zero variance"):
        S.linear_cka_streaming([(X[:5], np.full((5, 3), 0.1)), (X[5:], np.full((5, 3), 0.1))])
    with pytest.raises(S.RepresentationError, match="NaN or Inf"):
        S.StreamingLinearCKA().update(X, Y).update(X * np.nan, Y)
    with pytest.raises(ValueError, match="route"):
        S.linear_cka(X, Y, route="fast")


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_entries_directions_and_functions():
    assert set(MEASURES) == {
        "cka", "cka_unbiased", "procrustes", "knn_jaccard", "rtd",
        "agreement", "jsd_similarity", "cohen_kappa", "error_consistency",
    }
    assert not MEASURES["rtd"].higher_is_similar
    assert all(m.higher_is_similar for name, m in MEASURES.items() if name != "rtd")
    for name in ("agreement", "jsd_similarity", "cohen_kappa", "error_consistency"):
        assert MEASURES[name].function == f"robustlens.predictive.{name}"
        assert MEASURES[name].kind == "predictive"
    X, Y = related_pair(n=40, seed=21)
    assert get_function("cka_unbiased")(X, Y) == S.linear_cka(X, Y, unbiased=True)
    assert get_function("procrustes") is S.procrustes_similarity
    with pytest.raises(KeyError, match="known"):
        get_function("cka_fast")
    with pytest.raises(AttributeError):
        MEASURES["cka"].higher_is_similar = False  # frozen
    assert isinstance(MEASURES["cka"], Measure)


def test_registry_imports_neither_torch_nor_numpy():
    code = "import sys, robustlens.measures; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


# ---------------------------------------------------------------------------------------------
# Validation messages, boundaries, defaults and estimator details (independent references)
# ---------------------------------------------------------------------------------------------


def test_mut_structure_errors_name_the_input_and_its_shape():
    X, Y = related_pair(n=10, p=3, q=4, seed=30)
    with pytest.raises(S.RepresentationError, match=r"^X: representation has shape \(10, 3, 1\), expected \(n_samples, n_features\)$"):
        S.linear_cka(X[:, :, None], Y)
    with pytest.raises(S.RepresentationError, match=r"^Y: representation has shape \(10,\), expected"):
        S.procrustes_similarity(X, Y[:, 0])
    with pytest.raises(S.RepresentationError, match=r"^X: representation has 1 sample\(s\); at least 2 are needed$"):
        S.linear_cka(X[:1], Y[:1])
    with pytest.raises(S.RepresentationError, match=r"^Y: representation has no features$"):
        S.linear_cka(X, Y[:, :0])
    with pytest.raises(S.RepresentationError, match=r"^X: representation has dtype complex128, not real numbers$"):
        S.linear_cka(X + 1j, Y)
    with pytest.raises(ValueError, match=r"^X and Y must describe the same samples: 10 rows vs 9$"):
        S.linear_cka(X, Y[:9])
    with pytest.raises(ValueError, match=r"^X and Y must describe the same samples: 10 rows vs 9$"):
        S.linear_cka_minibatch(X, Y[:9], batch_size=4)
    with pytest.raises(ValueError, match=r"^X and Y must describe the same samples: 10 rows vs 9$"):
        S.rtd_trials(X, Y[:9], n_trials=1, batch=5)


def test_mut_zero_variance_and_nan_errors_name_x_or_y():
    X, Y = related_pair(n=10, p=3, q=4, seed=31)
    const = np.full((10, 3), 2.5)
    for fn in (S.linear_cka, S.procrustes_similarity, S.knn_jaccard):
        with pytest.raises(S.RepresentationError, match=r"^X: representation has zero variance \(all 10 rows identical\)$"):
            fn(const, Y) if fn is not S.knn_jaccard else fn(const, Y, k=3)
        with pytest.raises(S.RepresentationError, match=r"^Y: representation has zero variance \(all 10 rows identical\)$"):
            fn(X, const) if fn is not S.knn_jaccard else fn(X, const, k=3)
        nx, ny = X.copy(), Y.copy()
        nx[4, 1] = np.nan
        ny[2, 2] = np.inf
        kw = {"k": 3} if fn is S.knn_jaccard else {}
        with pytest.raises(S.RepresentationError, match=r"^X: representation contains NaN or Inf values$"):
            fn(nx, Y, **kw)
        with pytest.raises(S.RepresentationError, match=r"^Y: representation contains NaN or Inf values$"):
            fn(X, ny, **kw)
        with pytest.raises(S.RepresentationError, match=r"^X or Y has values too large for float64 products \(overflow\)$"):
            fn(X, Y * 1e200, **kw)
    nx = X.copy()
    nx[0, 0] = np.nan
    with pytest.raises(S.RepresentationError, match=r"^X: representation contains NaN"):
        S.rtd_trials(nx, Y, n_trials=1, batch=5)
    with pytest.raises(S.RepresentationError, match=r"^Y: representation contains NaN"):
        S.rtd_trials(X, nx, n_trials=1, batch=5)


def test_mut_smallest_valid_shapes_and_input_types_are_accepted():
    g = rng(32)
    # two samples: biased CKA of any two nonconstant 2-row representations is 1 (rank-one centred data)
    X2, Y2 = g.standard_normal((2, 3)), g.standard_normal((2, 5))
    assert S.linear_cka(X2, Y2) == pytest.approx(textbook_biased_cka(X2, Y2), rel=1e-12)
    S.validate_representation(X2, "two rows")
    # rows 0 and 2 equal, row 1 different: not constant
    X3 = np.array([[1.0, 2.0], [3.0, 1.0], [1.0, 2.0]])
    Y3 = g.standard_normal((3, 2))
    assert S.linear_cka(X3, Y3) == pytest.approx(textbook_biased_cka(X3, Y3), rel=1e-12)
    # a single feature
    X1, Y1 = g.standard_normal((12, 1)), g.standard_normal((12, 1))
    assert S.linear_cka(X1, Y1) == pytest.approx(textbook_biased_cka(X1, Y1), rel=1e-12)
    # integers, float32 and nested lists are real matrices too (computed in float64)
    Xi = g.integers(-5, 6, size=(15, 4))
    Yi = g.integers(-5, 6, size=(15, 3))
    assert S.linear_cka(Xi, Yi) == pytest.approx(textbook_biased_cka(Xi.astype(float), Yi.astype(float)), rel=1e-12)
    assert S.linear_cka(Xi.tolist(), Yi.tolist()) == pytest.approx(textbook_biased_cka(Xi.astype(float), Yi.astype(float)), rel=1e-12)
    Xf, Yf = related_pair(n=40, p=6, q=5, seed=33)
    Xf, Yf = Xf.astype(np.float32), Yf.astype(np.float32)
    ref = textbook_biased_cka(Xf.astype(np.float64), Yf.astype(np.float64))
    assert S.linear_cka(Xf, Yf) == pytest.approx(ref, rel=1e-12)
    assert S.linear_cka(Xf, Yf, route="gram") == pytest.approx(ref, rel=1e-12)
    # unbiased CKA with exactly four samples
    X4, Y4 = related_pair(n=4, p=3, q=2, seed=34)
    assert S.linear_cka(X4, Y4, unbiased=True) == pytest.approx(textbook_unbiased_cka(X4, Y4), rel=1e-9)
    with pytest.raises(ValueError, match=r"^unbiased CKA needs at least 4 samples, got 3$"):
        S.linear_cka(X4[:3, :2], Y4[:3], unbiased=True)


def test_mut_unbiased_cka_can_be_negative_and_is_not_clipped_at_zero():
    # independent representations: the unbiased estimate scatters around 0, here below it
    for seed in range(40):
        g = rng(100 + seed)
        X, Y = g.standard_normal((12, 3)), g.standard_normal((12, 2))
        expected = textbook_unbiased_cka(X, Y)
        if expected < -0.05:
            break
    assert expected < -0.05
    assert S.linear_cka(X, Y, unbiased=True) == pytest.approx(expected, rel=1e-9)
    assert S.linear_cka_unbiased(X, Y) == pytest.approx(expected, rel=1e-9)
    assert S.linear_cka_streaming([(X[:5], Y[:5]), (X[5:], Y[5:])], unbiased=True) == pytest.approx(expected, rel=1e-9)
    # a single minibatch holding every sample is the full unbiased CKA
    assert S.linear_cka_minibatch(X, Y, batch_size=12) == pytest.approx(expected, rel=1e-9)
    acc = S.MinibatchLinearCKA()
    assert acc.update(X, Y).value() == pytest.approx(expected, rel=1e-9)


def test_mut_similarities_never_exceed_one_on_identical_inputs():
    # documented ranges: rounding must not push a perfect match above 1
    for seed in range(25):
        g = rng(200 + seed)
        n, p = 7 + seed, 1 + seed % 6
        X = g.standard_normal((n, p)) * 10.0 ** g.uniform(-3, 3)
        for value in (S.linear_cka(X, X), S.linear_cka(X, 3 * X, unbiased=True), S.procrustes_similarity(X, 0.3 * X)):
            assert value <= 1.0
            assert value == pytest.approx(1.0, abs=1e-12)


def test_mut_feature_route_choice_follows_the_multiply_add_count():
    # feature route costs n (pq + p^2 + q^2) multiply-adds, Gram route n^2 (p + q)
    for n, p, q in itertools.product([1, 2, 3, 5, 10, 40], [1, 2, 3, 7, 20], [1, 2, 4, 9, 30]):
        features, gram = n * (p * q + p * p + q * q), n * n * (p + q)
        assert _feature_route_is_cheaper(n, p, q) == (features <= gram), (n, p, q)
    assert _feature_route_is_cheaper(3, 2, 2)  # a tie: 3 * 12 == 9 * 4
    X, Y = related_pair(n=50, p=3, q=2, seed=35)
    assert _CentredProducts(torch.from_numpy(X), torch.from_numpy(Y)).route == "features"
    X, Y = related_pair(n=5, p=30, q=20, seed=35)
    assert _CentredProducts(torch.from_numpy(X), torch.from_numpy(Y)).route == "gram"


def test_mut_unbiased_hsic_from_terms_matches_song_on_gram_matrices():
    for n in (4, 5, 9):
        g = rng(40 + n)
        A, B = g.standard_normal((n, 3)), g.standard_normal((n, 2)) + 1.0
        K, L = A @ A.T, B @ B.T
        Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
        one = np.ones(n)
        got = S.unbiased_hsic_from_terms(n, np.trace(Kt @ Lt), one @ Kt @ one, one @ Lt @ one, one @ Kt @ Lt @ one)
        assert got == pytest.approx(song_unbiased_hsic_loops(K, L), rel=1e-9)
    with pytest.raises(ValueError, match=r"^unbiased HSIC needs at least 4 samples, got 3$"):
        S.unbiased_hsic_from_terms(3, 1.0, 1.0, 1.0, 1.0)


def test_mut_minibatch_with_unequal_batch_sizes_and_defaults():
    # 43 samples in 4 batches of 11, 11, 11, 10: the per-batch 1/(n(n-3)) factors do not cancel
    X, Y = related_pair(n=43, p=5, q=4, noise=2.0, seed=36)
    for seed, batch_size, kwargs in ((0, 10, {}), (5, 10, {"seed": 5}), (1, 4, {"seed": 1}), (2, 30, {"seed": 2})):
        order = np.random.default_rng(seed).permutation(43)
        batches = np.array_split(order, max(1, 43 // batch_size))
        h = np.array([[vectorised_unbiased_hsic(a @ a.T, b @ b.T) for a, b in ((X[i], Y[i]), (X[i], X[i]), (Y[i], Y[i]))] for i in batches])
        expected = h[:, 0].mean() / np.sqrt(h[:, 1].mean() * h[:, 2].mean())
        assert S.linear_cka_minibatch(X, Y, batch_size=batch_size, **kwargs) == pytest.approx(expected, rel=1e-10)
        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
        assert S.linear_cka_minibatch(Xt, Yt, batch_size=batch_size, **kwargs) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match=r"^batch_size must be at least 4 \(unbiased HSIC\), got 3$"):
        S.linear_cka_minibatch(X, Y, batch_size=3)


def test_mut_minibatch_accumulator_checks():
    X, Y = related_pair(n=20, p=2, q=3, seed=37)
    acc = S.MinibatchLinearCKA()
    with pytest.raises(ValueError, match=r"^no minibatch was added$"):
        acc.value()
    with pytest.raises(ValueError, match=r"^each minibatch needs at least 4 samples for the unbiased HSIC, got 3$"):
        acc.update(X[:3], Y[:3])
    h = []
    for rows in (slice(0, 4), slice(4, 9), slice(9, 20)):  # 4, 5 and 11 samples, 2 features
        acc.update(X[rows], Y[rows])
        a, b = X[rows], Y[rows]
        h.append([vectorised_unbiased_hsic(a @ a.T, b @ b.T), vectorised_unbiased_hsic(a @ a.T, a @ a.T), vectorised_unbiased_hsic(b @ b.T, b @ b.T)])
        m = np.mean(h, axis=0)
        assert acc.value() == pytest.approx(m[0] / np.sqrt(m[1] * m[2]), rel=1e-10)
    bad = X[:6].copy()
    bad[1, 0] = np.nan
    with pytest.raises(S.RepresentationError, match=r"^X: representation contains NaN"):
        S.MinibatchLinearCKA(device="cpu").update(bad, Y[:6])
    with pytest.raises(S.RepresentationError, match=r"^Y: representation contains NaN"):
        S.MinibatchLinearCKA().update(Y[:6], bad)


def test_mut_streaming_edge_cases_and_messages():
    X, Y = related_pair(n=30, p=3, q=4, seed=38)
    # the default is the biased CKA; two samples suffice for it, four for the unbiased one
    assert S.linear_cka_streaming([(X[:7], Y[:7]), (X[7:], Y[7:])]) == pytest.approx(textbook_biased_cka(X, Y), rel=1e-9)
    assert S.StreamingLinearCKA().update(X[:2], Y[:2]).value() == pytest.approx(textbook_biased_cka(X[:2], Y[:2]), rel=1e-9)
    acc = S.StreamingLinearCKA(device="cpu").update(X[:1], Y[:1]).update(X[1:4], Y[1:4])
    assert acc.value(unbiased=True) == pytest.approx(textbook_unbiased_cka(X[:4], Y[:4]), rel=1e-8)
    with pytest.raises(S.RepresentationError, match=r"^streaming CKA has seen 1 sample\(s\); at least 2 are needed$"):
        S.StreamingLinearCKA().update(X[:1], Y[:1]).value()
    with pytest.raises(ValueError, match=r"^unbiased CKA needs at least 4 samples, got 3$"):
        S.StreamingLinearCKA().update(X[:3], Y[:3]).value(unbiased=True)
    # an empty first chunk is skipped
    acc = S.StreamingLinearCKA().update(X[:0], Y[:0]).update(X, Y)
    assert acc.n == 30 and acc.value() == pytest.approx(textbook_biased_cka(X, Y), rel=1e-9)
    with pytest.raises(ValueError, match=r"^chunks must be \(m, p\) and \(m, q\) with equal m, got \(5, 3\) and \(4, 4\)$"):
        S.StreamingLinearCKA().update(X[:5], Y[:4])
    with pytest.raises(ValueError, match=r"^chunks must be \(m, p\) and \(m, q\) with equal m, got \(5,\) and \(5, 4\)$"):
        S.StreamingLinearCKA().update(X[:5, 0], Y[:5])
    acc = S.StreamingLinearCKA().update(X[:10], Y[:10])
    with pytest.raises(ValueError, match=r"^chunk feature counts 2, 4 differ from earlier chunks$"):
        acc.update(X[10:15, :2], Y[10:15])
    with pytest.raises(ValueError, match=r"^chunk feature counts 3, 5 differ from earlier chunks$"):
        acc.update(X[10:15], np.hstack([Y[10:15], Y[10:15, :1]]))
    bad = X[10:17].copy()
    bad[2, 1] = np.inf
    with pytest.raises(S.RepresentationError, match=r"^chunk at rows 10\.\.17 contains NaN or Inf values$"):
        acc.update(bad, Y[10:17])
    # constant representations, whichever side, spread over chunks whose rows share entries
    const = np.tile([1.0, 2.0, 3.0], (30, 1))
    with pytest.raises(S.RepresentationError, match=r"^X: representation has zero variance \(all 30 rows identical\)$"):
        S.linear_cka_streaming([(const[:12], Y[:12]), (const[12:], Y[12:])])
    with pytest.raises(S.RepresentationError, match=r"^Y: representation has zero variance \(all 30 rows identical\)$"):
        S.linear_cka_streaming([(Y[:12], const[:12]), (Y[12:], const[12:])])
    Xs = const.copy()
    Xs[20, 0] = 5.0  # shares two entries with the first row, differs in one
    assert S.linear_cka_streaming([(Xs[:12], Y[:12]), (Xs[12:], Y[12:])]) == pytest.approx(textbook_biased_cka(Xs, Y), rel=1e-9)


@pytest.mark.parametrize("unbiased", [False, True])
def test_mut_streaming_survives_large_feature_specific_offsets(unbiased):
    X, Y = related_pair(n=120, p=4, q=3, seed=39)
    Xo = X + np.array([3e6, -3e6, 1e6, -2e6])
    Yo = Y + np.array([-4e6, 2e6, 5e6])
    chunks = [(Xo[a:a + 25], Yo[a:a + 25]) for a in range(0, 120, 25)]
    expected = textbook_unbiased_cka(X, Y) if unbiased else textbook_biased_cka(X, Y)
    assert S.linear_cka_streaming(chunks, unbiased=unbiased) == pytest.approx(expected, rel=1e-8)


def test_mut_tiny_hsics_far_below_one_are_positive():
    # small-scale data have HSICs far below 1; CKA is scale invariant
    X, Y = related_pair(n=30, p=4, q=3, seed=41)
    assert S.linear_cka(1e-4 * X, 1e-3 * Y, unbiased=True) == pytest.approx(textbook_unbiased_cka(X, Y), rel=1e-8)
    assert S.linear_cka(1e-4 * X, 1e-3 * Y) == pytest.approx(textbook_biased_cka(X, Y), rel=1e-9)


def test_mut_cosine_neighbours_in_several_blocks_and_with_a_zero_row():
    X, _ = related_pair(n=23, p=4, q=2, seed=42)
    X[5] = 0.0  # an all-zero row has cosine 0 to every row
    k = 4

    def brute(A):
        norms = np.linalg.norm(A, axis=1)
        safe = np.where(norms > 0, norms, 1.0)
        cos = (A / safe[:, None]) @ (A / safe[:, None]).T
        np.fill_diagonal(cos, -np.inf)
        return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in cos]

    expected = brute(X)
    Xt = torch.from_numpy(X)
    for block_elements in (23, 3 * 23, 10 * 23, 1 << 23):
        got = _cosine_neighbours(Xt, torch.linalg.vector_norm(Xt, dim=1), k, block_elements=block_elements)
        got = [set(r.tolist()) for r in got]
        assert all(5 not in row and i not in row and len(row) == k for i, row in enumerate(got))
        # the zero row's own neighbours are all ties (cosine 0); every other row's are unique
        assert got[:5] + got[6:] == expected[:5] + expected[6:]


def test_mut_knn_jaccard_default_k_is_ten():
    X, Y = related_pair(n=60, p=6, q=5, noise=1.0, seed=45)
    assert S.knn_jaccard(X, Y) == pytest.approx(brute_force_knn_jaccard(X, Y, 10, center=False), abs=1e-12)
    assert S.knn_jaccard(X, Y) != pytest.approx(brute_force_knn_jaccard(X, Y, 11, center=False), abs=1e-6)


def test_mut_rtd_settings_and_quantile_normalisation():
    X, Y = related_pair(n=9, p=3, q=3, noise=1.0, seed=46)
    trials = S.rtd_trials(X, Y)
    assert trials.shape == (10,)  # n_trials defaults to 10; batch min(500, 9) holds every sample
    expected = (paper_rtd_one_direction(X, Y) + paper_rtd_one_direction(Y, X)) / 2
    np.testing.assert_allclose(trials, expected, rtol=1e-5)
    # the smallest batch; scale invariance (distances are divided by their 0.9 quantile)
    assert S.rtd_trials(X, Y, n_trials=1, batch=4, seed=3).shape == (1,)
    assert S.rtd(1e-3 * X, 1e-3 * Y, n_trials=1, batch=9) == pytest.approx(expected, rel=1e-5)
    assert S.rtd(torch.from_numpy(X).float(), torch.from_numpy(Y).float(), n_trials=1, batch=9) == pytest.approx(
        (paper_rtd_one_direction(X.astype(np.float32).astype(float), Y.astype(np.float32).astype(float))
         + paper_rtd_one_direction(Y.astype(np.float32).astype(float), X.astype(np.float32).astype(float))) / 2, rel=1e-5)
    with pytest.raises(ValueError, match=r"^n_trials must be at least 1, got 0$"):
        S.rtd_trials(X, Y, n_trials=0)
    with pytest.raises(ValueError, match=r"^batch must be at least 4, got 3$"):
        S.rtd_trials(X, Y, batch=3)
    # 19 identical rows and one other: over 90% of the distances are 0
    Z = np.zeros((20, 2))
    Z[7] = [1.0, 2.0]
    with pytest.raises(S.RepresentationError, match=r"^RTD: the 0\.9 quantile of the batch's distances is 0 \(too many identical rows\)$"):
        S.rtd(Z, rng(47).standard_normal((20, 2)), n_trials=1, batch=20)


def test_mut_cross_barcode_matrix_layout_and_small_entry_threshold():
    g = rng(48)
    P, Q = g.standard_normal((6, 2)), g.standard_normal((6, 2))
    A = 1e-3 * np.sqrt(((P[:, None] - P[None]) ** 2).sum(-1))  # mean of A about 1e-3
    B = 1e-3 * np.sqrt(((Q[:, None] - Q[None]) ** 2).sum(-1))
    expected = np.block([[np.zeros((6, 6)), A.T], [A, np.minimum(A, B)]])
    expected[expected < 1e-6 * A.mean()] = 0.0
    np.testing.assert_array_equal(S.cross_barcode_matrix(A, B), expected)
    M = expected.copy()
    M[2, 2] = 0.5
    with pytest.raises(ValueError, match=r"^the RTD distance matrix must have a zero diagonal$"):
        _h1_bars(M)


def test_mut_iter_chunks_settings():
    X, Y = related_pair(n=10, p=3, q=4, seed=49)
    chunks = list(S.iter_zarr_chunks(X, Y, chunk_size=1))
    assert len(chunks) == 10 and all(x.shape == (1, 3) and y.shape == (1, 4) for x, y in chunks)
    np.testing.assert_array_equal(np.vstack([x for x, _ in chunks]), X)
    with pytest.raises(ValueError, match=r"^arrays must have the same number of rows: 10 vs 9$"):
        next(S.iter_zarr_chunks(X, Y[:9], chunk_size=2))
    with pytest.raises(ValueError, match=r"^chunk_size must be positive, got 0$"):
        next(S.iter_zarr_chunks(X, Y, chunk_size=0))


def test_mut_permutation_baseline_defaults():
    X, Y = related_pair(n=15, p=3, q=2, seed=50)
    null = S.permutation_baseline(textbook_biased_cka, X, Y)
    g = np.random.default_rng(0)
    expected = [textbook_biased_cka(X, Y[g.permutation(15)]) for _ in range(100)]
    np.testing.assert_allclose(null, expected, rtol=1e-12)
    Yt = torch.from_numpy(Y)
    g = np.random.default_rng(0)
    seen = S.permutation_baseline(lambda a, b: float(np.asarray(b)[0, 0]), X, Yt, n_permutations=3)
    np.testing.assert_array_equal(seen, [Y[g.permutation(15)][0, 0] for _ in range(3)])


def test_mut_measures_do_not_warn_on_nan_inf_or_overflowing_inputs():
    import warnings

    X, Y = related_pair(n=30, p=4, q=3, seed=51)
    bad = X.copy()
    bad[0, 0], bad[1, 1] = np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fn in (S.linear_cka, S.procrustes_similarity):
            for route_X, message in ((bad, "NaN or Inf"), (X * 1e200, "too large")):
                with pytest.raises(S.RepresentationError, match=message):
                    fn(route_X, Y)
        with pytest.raises(S.RepresentationError, match="NaN or Inf"):
            S.linear_cka(bad, Y, route="gram")
        with pytest.raises(S.RepresentationError, match="too large"):
            S.linear_cka(X * 1e200, Y, route="gram")


@pytest.mark.parametrize("unbiased", [False, True])
def test_gram_route_stays_accurate_under_large_mean_offsets(unbiased):
    # raw Grams of translated data lose ~offset^2/spread of their digits to rounding; the Gram
    # route must then centre the data first and agree with the (centred) feature route
    X, Y = related_pair(n=40, p=60, q=50, seed=41)
    X, Y = X + 1e6, Y - 3e5
    features = S.linear_cka(X, Y, unbiased=unbiased, route="features")
    gram = S.linear_cka(X, Y, unbiased=unbiased, route="gram")
    assert gram == pytest.approx(features, rel=1e-9)


@pytest.mark.parametrize("rows", [1, 63, 64, 65, 200])
def test_subtract_outer_in_row_blocks_equals_numpy_outer(rows):
    A, u, v = rng(rows).standard_normal((rows, 70)), rng(1).standard_normal(rows), rng(2).standard_normal(70)
    expected = A - np.outer(u, v)
    _subtract_outer(A, u, v)
    np.testing.assert_array_equal(A, expected)


def test_offset_corrected_products_equal_centred_products():
    # the biased CKA and Procrustes skip the centred copies for moderate offsets
    X, Y = related_pair(n=300, p=20, q=30, seed=42)
    X, Y = np.maximum(X, 0) + 0.5, np.maximum(Y, 0)
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    assert S.linear_cka(X, Y) == pytest.approx(S.linear_cka(Xc, Yc), rel=1e-12)
    assert S.procrustes_similarity(X, Y) == pytest.approx(S.procrustes_similarity(Xc, Yc), rel=1e-12)
    # the unbiased estimator's row norms from the raw rows, ||x_i||^2 - 2 x_i.mu + ||mu||^2
    assert S.linear_cka(X, Y, unbiased=True) == pytest.approx(S.linear_cka(Xc, Yc, unbiased=True), rel=1e-12)
    assert S.linear_cka(X, Y, unbiased=True) == pytest.approx(textbook_unbiased_cka(X, Y), rel=1e-9)
