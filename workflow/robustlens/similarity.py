"""Representational similarity of two networks' activations on the same probe inputs.

Every measure takes two representations ``X`` (n x p) and ``Y`` (n x q) of the *same* n inputs
in the same order (``numpy.ndarray``, ``torch.Tensor`` or anything ``numpy.asarray`` accepts),
computes in float64 and returns a Python float. Measures raise instead of returning NaN:
a NaN/Inf entry, a representation whose rows are all identical, or fewer than two rows raise
:class:`RepresentationError` (a ``ValueError``); invalid settings raise ``ValueError``.

Measures (the conventions are in ``/work/shared/DESIGN.md``; users trip over sign and scale):

========================  =========  ===========  ==========================================
function                  range      direction    reference
========================  =========  ===========  ==========================================
linear_cka                [0, 1]     higher=sim.  Kornblith et al. 2019 (biased HSIC)
linear_cka(unbiased=...)  [-1, 1]    higher=sim.  Song et al. 2012 (unbiased HSIC), n >= 4
linear_cka_streaming      as above   higher=sim.  exact, one pass over sample chunks
linear_cka_minibatch      [-1, 1]    higher=sim.  Nguyen et al. 2021 (a different estimator)
procrustes_similarity     [0, 1]     higher=sim.  orthogonal Procrustes (nuclear norm)
knn_jaccard               [0, 1]     higher=sim.  k-NN Jaccard, cosine neighbours
rtd                       [0, inf)   lower=sim.   Barannikov et al. 2022 (a distance)
========================  =========  ===========  ==========================================

Dense linear algebra runs in torch on ``device`` (default: the input tensor's device, else the
CPU); RTD runs on the CPU (ripser).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

__all__ = [
    "RepresentationError",
    "validate_representation",
    "linear_cka",
    "linear_cka_unbiased",
    "StreamingLinearCKA",
    "linear_cka_streaming",
    "iter_zarr_chunks",
    "MinibatchLinearCKA",
    "linear_cka_minibatch",
    "procrustes_similarity",
    "knn_jaccard",
    "rtd",
    "rtd_trials",
    "permutation_baseline",
]


# --------------------------------------------------------------------------------------------
# Validation and input conversion
# --------------------------------------------------------------------------------------------


class RepresentationError(ValueError):
    """A representation cannot be compared: NaN/Inf entries, no variance, or too few rows."""


def validate_representation(X, where: str) -> None:
    """Raise :class:`RepresentationError` naming ``where`` if ``X`` cannot be compared.

    ``where`` says which representation this is, e.g. ``"model cnn-eps1-s0, layer block2,
    probe natural"``; it is put in the message. Checks, in order: ``X`` has two dimensions
    (n_samples, n_features), at least 2 rows, no NaN or Inf entry, and nonzero total variance
    (not all rows identical).
    """
    X = _check_structure(X, where)
    isfinite = torch.isfinite if isinstance(X, torch.Tensor) else np.isfinite
    if not bool(isfinite(X).all()):
        raise RepresentationError(f"{where}: representation contains NaN or Inf values")
    _check_not_constant(X, where)


def _check_structure(X, where: str):
    """X (as a tensor or numpy array) if it is a real (n_samples, n_features) matrix with n >= 2."""
    if not isinstance(X, torch.Tensor):
        X = np.asarray(X)
        if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
            raise RepresentationError(f"{where}: representation has dtype {X.dtype}, not real numbers")
    if X.ndim != 2:
        raise RepresentationError(f"{where}: representation has shape {tuple(X.shape)}, expected (n_samples, n_features)")
    if X.shape[0] < 2:
        raise RepresentationError(f"{where}: representation has {X.shape[0]} sample(s); at least 2 are needed")
    if X.shape[1] < 1:
        raise RepresentationError(f"{where}: representation has no features")
    return X


def _check_not_constant(X, where: str) -> None:
    """Raise if all rows are identical. Exact, and O(n_features) unless rows 0 and 1 are equal."""
    if bool((X[1] != X[0]).any()):
        return
    if bool((X == X[:1]).all()):
        raise RepresentationError(f"{where}: representation has zero variance (all {X.shape[0]} rows identical)")


def _require_finite(witness: float, X, Y) -> None:
    """Raise the precise error if ``witness`` (a sum over quantities of X and Y that is NaN or
    Inf whenever X or Y has a NaN or Inf entry, e.g. their squared row norms) is not finite.

    This is how the measures check their inputs for NaN/Inf without an extra pass over the
    data: the witness comes from products they compute anyway. A non-finite witness from finite
    data means float64 overflow, also raised: squared norms overflow for entries beyond ~1e154,
    CKA's squared Frobenius norms of the cross-products (fourth powers) already beyond ~1e77."""
    if np.isfinite(witness):
        return
    validate_representation(X, "X")
    validate_representation(Y, "Y")
    raise RepresentationError("X or Y has values too large for float64 products (overflow)")


def _resolve_device(device, *arrays) -> torch.device:
    """``device`` if given, else the device of the first tensor among ``arrays``, else the CPU."""
    if device is not None:
        return torch.device(device)
    for a in arrays:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def _as_float64(X, device: torch.device) -> torch.Tensor:
    """``X`` as a float64 torch tensor on ``device`` (no copy when it already is one)."""
    if isinstance(X, torch.Tensor):
        return X.detach().to(device=device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(X, dtype=np.float64), device=device)


def _validated_pair(X, Y, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """X and Y as float64 tensors on one device, checked for shape, equal row counts and
    nonconstant rows. NaN/Inf entries are *not* checked here: each measure checks them through
    :func:`_require_finite` (or :func:`validate_representation`) before returning."""
    X, Y = _check_structure(X, "X"), _check_structure(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must describe the same samples: {X.shape[0]} rows vs {Y.shape[0]}")
    _check_not_constant(X, "X")
    _check_not_constant(Y, "Y")
    dev = _resolve_device(device, X, Y)
    return _as_float64(X, dev), _as_float64(Y, dev)


def _take_rows(A, idx: np.ndarray):
    """Rows ``idx`` of a tensor (on its device) or of an array-like (as numpy)."""
    if isinstance(A, torch.Tensor):
        return A[torch.as_tensor(idx, device=A.device)]
    return np.asarray(A)[idx]


def _matmul(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """A @ B; on the CPU through NumPy, whose matmul uses BLAS syrk when B is A's own transpose
    (half the multiply-adds of a general product) and which measured faster than torch's CPU
    matmul on the benchmark machine (benchmarks/similarity.md). The result shares no memory
    with A or B."""
    if A.device.type == "cpu" and B.device.type == "cpu":
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs are reported by the caller
            return torch.from_numpy(A.numpy() @ B.numpy())
    return A @ B


def _centre_columns(X: torch.Tensor) -> torch.Tensor:
    """HX, H = I - 11'/n: each feature (column) minus its mean over samples."""
    return X - X.mean(dim=0, keepdim=True)


def _finite_float(value, what: str) -> float:
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{what} is not finite ({value}); the inputs are degenerate")
    return value


# --------------------------------------------------------------------------------------------
# Linear CKA: biased (Kornblith et al. 2019) and unbiased (Song et al. 2012) HSIC
# --------------------------------------------------------------------------------------------


def _feature_route_is_cheaper(n: int, p: int, q: int) -> bool:
    """Compare the multiply-adds of the two exact routes to ||Xc'Yc||_F^2, ||Xc'Xc||_F^2, ||Yc'Yc||_F^2.

    Feature space: X'Y, X'X, Y'Y cost n (pq + p^2 + q^2) and hold p x q, p x p, q x q matrices.
    Gram: K = XX', L = YY' cost n^2 (p + q) and hold two n x n matrices.
    """
    return p * q + p * p + q * q <= n * (p + q)


def _centred_gram(A: torch.Tensor) -> torch.Tensor:
    """HKH for K = AA', centred through its row and column means (no centred copy of A)."""
    K = _matmul(A, A.T)
    means = K.mean(dim=0)
    K -= means[None, :]
    K -= means[:, None]
    K += means.mean()
    return K


class _CentredProducts:
    """tr(KL), tr(KK), tr(LL) of the centred linear Grams K = Xc Xc', L = Yc Yc', and their
    diagonals a = diag(K), b = diag(L) (the squared norms of the centred rows).

    Feature route: tr(KL) = ||Xc'Yc||_F^2 etc., from the column-centred data. Gram route: the
    n x n Grams of the raw data, centred as HKH (only two n x n matrices are made; the data are
    not copied). ``route`` "auto" picks the cheaper by shape (:func:`_feature_route_is_cheaper`).
    """

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, route: str = "auto"):
        n, p = X.shape
        q = Y.shape[1]
        if route == "auto":
            route = "features" if _feature_route_is_cheaper(n, p, q) else "gram"
        if route == "features":
            Xc, Yc = _centre_columns(X), _centre_columns(Y)
            self.kl, self.kk, self.ll = (float(torch.sum(m * m)) for m in (_matmul(Xc.T, Yc), _matmul(Xc.T, Xc), _matmul(Yc.T, Yc)))
            self.a, self.b = torch.sum(Xc * Xc, dim=1), torch.sum(Yc * Yc, dim=1)
        elif route == "gram":
            K, L = _centred_gram(X), _centred_gram(Y)
            self.a, self.b = torch.diagonal(K).clone(), torch.diagonal(L).clone()
            K, L = K.reshape(-1), L.reshape(-1)
            self.kl, self.kk, self.ll = float(K @ L), float(K @ K), float(L @ L)
        else:
            raise ValueError(f"route must be 'auto', 'features' or 'gram', not {route!r}")
        self.n, self.route = n, route

    def finiteness_witness(self) -> float:
        """NaN or Inf if X or Y has a NaN/Inf entry: a NaN/Inf in column j makes every centred
        entry of column j (feature route) or every centred Gram entry (Gram route) non-finite."""
        return float(self.a.sum()) + float(self.b.sum()) + self.kl + self.kk + self.ll

    def biased_hsics(self) -> tuple[float, float, float]:
        """(n-1)^2 times the biased HSICs of (K, L), (K, K), (L, L); the factor cancels in CKA."""
        return self.kl, self.kk, self.ll

    def unbiased_hsics(self) -> tuple[float, float, float]:
        """HSIC_u of (K, L), (K, K), (L, L). HSIC_u with a linear kernel is invariant to
        translating the data, so it is evaluated on the centred Grams, where 1'K = 0 and hence
        tr(K~L~) = tr(KL) - sum a_i b_i, 1'K~1 = -sum a_i, 1'L~1 = -sum b_i, 1'K~L~1 = sum a_i b_i."""
        n, a, b = self.n, self.a, self.b
        sa, sb = float(a.sum()), float(b.sum())
        saa, sbb, sab = float(a @ a), float(b @ b), float(a @ b)
        return (
            unbiased_hsic_from_terms(n, self.kl - sab, -sa, -sb, sab),
            unbiased_hsic_from_terms(n, self.kk - saa, -sa, -sa, saa),
            unbiased_hsic_from_terms(n, self.ll - sbb, -sb, -sb, sbb),
        )


def unbiased_hsic_from_terms(n: int, trace_kl: float, sum_k: float, sum_l: float, sum_kl: float) -> float:
    """Unbiased HSIC of Song et al. 2012 (JMLR 13, "Feature selection via dependence
    maximization", the unbiased estimator HSIC_1) from its four terms:

        HSIC_u(K, L) = [ tr(K~L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1 ] / (n(n-3))

    with K~, L~ the Gram matrices with their diagonals set to zero; ``trace_kl`` = tr(K~L~),
    ``sum_k`` = 1'K~1, ``sum_l`` = 1'L~1, ``sum_kl`` = 1'K~L~1. Needs n >= 4.
    """
    if n < 4:
        raise ValueError(f"unbiased HSIC needs at least 4 samples, got {n}")
    return (trace_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 * sum_kl / (n - 2)) / (n * (n - 3))


def _cka_from_hsics(hsic_xy: float, hsic_xx: float, hsic_yy: float, unbiased: bool) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), clipped to its range against rounding."""
    if not (hsic_xx > 0 and hsic_yy > 0):
        raise RepresentationError(
            f"self-similarity HSIC(K,K)={hsic_xx:.3g}, HSIC(L,L)={hsic_yy:.3g} is not positive; "
            "CKA is undefined (too few or degenerate samples)"
        )
    value = _finite_float(hsic_xy / (np.sqrt(hsic_xx) * np.sqrt(hsic_yy)), "CKA")  # the product of the HSICs can overflow
    return float(np.clip(value, -1.0 if unbiased else 0.0, 1.0))


def linear_cka(X, Y, unbiased: bool = False, device=None, *, route: str = "auto") -> float:
    """Linear centred kernel alignment of two representations of the same n inputs.

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels K = XX', L = YY'
    (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", ICML).

    * ``unbiased=False`` (default): the biased HSIC tr(KHLH)/(n-1)^2, H = I - 11'/n. Then
      CKA = ||Xc'Yc||_F^2 / (||Xc'Xc||_F ||Yc'Yc||_F) with Xc = HX. Range [0, 1]. Inflated
      when features far outnumber samples (two independent random representations score high).
    * ``unbiased=True``: the unbiased HSIC_u of Song et al. 2012 (see
      :func:`unbiased_hsic_from_terms`). Range [-1, 1]; ~0 for independent representations.
      Needs n >= 4 (``ValueError`` otherwise). The unbiased estimator with a linear kernel is
      invariant to translating X or Y, so it is computed on centred data, where 1'K~1 = -sum_i a_i,
      (K~1)_i = -a_i with a_i = ||xc_i||^2, and the four terms reduce to
      tr(K~L~) = tr(KL) - sum a_i b_i, 1'K~1 = -sum a_i, 1'L~1 = -sum b_i, 1'K~L~1 = sum a_i b_i.

    Higher = more similar. Invariant to orthogonal transformations, isotropic scaling and
    translation of either representation; not to arbitrary invertible linear maps.

    The route is chosen by shape: the feature-space products Xc'Yc, Xc'Xc, Yc'Yc (p x q, p x p,
    q x q) when features are few, the n x n Gram matrices (of the raw data, centred as HKH, so
    the data are never copied) when samples are few; both are exact up to rounding
    (``route="features"``/``"gram"`` forces one). Computed with torch float64 on ``device``
    (default: the input tensor's device, else the CPU). For more samples than fit in memory
    see :class:`StreamingLinearCKA` (exact) and :func:`linear_cka_minibatch` (Nguyen et al.).
    """
    Xt, Yt = _validated_pair(X, Y, device)
    if unbiased and Xt.shape[0] < 4:
        raise ValueError(f"unbiased CKA needs at least 4 samples, got {Xt.shape[0]}")
    products = _CentredProducts(Xt, Yt, route)
    _require_finite(products.finiteness_witness(), Xt, Yt)
    hsics = products.unbiased_hsics() if unbiased else products.biased_hsics()
    return _cka_from_hsics(*hsics, unbiased=unbiased)


def linear_cka_unbiased(X, Y, device=None) -> float:
    """``linear_cka(X, Y, unbiased=True)``: linear CKA with the unbiased HSIC of Song et al. 2012."""
    return linear_cka(X, Y, unbiased=True, device=device)


# --------------------------------------------------------------------------------------------
# Exact streaming CKA
# --------------------------------------------------------------------------------------------


class StreamingLinearCKA:
    """Exact linear CKA (biased and unbiased) in one pass over sample chunks.

    Call :meth:`update` with row chunks ``(X_chunk, Y_chunk)`` of the two representations (same
    samples, same order, any chunk sizes), then :meth:`value`. Memory is O(p^2 + q^2 + pq),
    independent of the number of samples n; the result equals :func:`linear_cka` on the
    concatenated data up to float64 rounding.

    Derivation. Write x_i, y_i for the rows, a_i = ||x_i||^2, b_i = ||y_i||^2, K = XX', L = YY',
    K~ = K - diag(a), L~ = L - diag(b), s_x = sum_i x_i, s_y = sum_i y_i. Every quantity either
    HSIC needs is a function of these per-sample accumulable sums:

        n, s_x, s_y, X'X, Y'Y, X'Y, sum a, sum b, sum a^2, sum b^2, sum ab,
        sum a_i x_i, sum b_i x_i, sum a_i y_i, sum b_i y_i.

    Biased (Kornblith et al. 2019): tr(KHLH) = ||Xc'Yc||_F^2 with the centred cross-product
    Xc'Yc = X'Y - s_x s_y' / n (likewise Xc'Xc, Yc'Yc).

    Unbiased (Song et al. 2012; see :func:`unbiased_hsic_from_terms`), expanding each term:

        tr(K~L~) = sum_{i != j} (x_i.x_j)(y_i.y_j) = ||X'Y||_F^2 - sum_i a_i b_i
        1'K~1    = ||s_x||^2 - sum_i a_i                  (1'L~1 likewise)
        (K~1)_i  = x_i.s_x - a_i,   (L~1)_i = y_i.s_y - b_i
        1'K~L~1  = sum_i (x_i.s_x - a_i)(y_i.s_y - b_i)
                 = s_x'(X'Y)s_y - s_y.(sum_i a_i y_i) - s_x.(sum_i b_i x_i) + sum_i a_i b_i

    and for HSIC_u(K, K): tr(K~K~) = ||X'X||_F^2 - sum a_i^2,
    1'K~K~1 = s_x'(X'X)s_x - 2 s_x.(sum_i a_i x_i) + sum a_i^2 (L likewise).

    Numerical stability: both HSICs are invariant to translating X or Y, so every chunk is
    shifted by the column means of the *first* chunk before accumulating; the accumulated data
    are then nearly centred and the expansions above do not cancel catastrophically.
    """

    def __init__(self, device=None):
        self.device = torch.device(device) if device is not None else None
        self.n = 0
        self._shift_x = self._shift_y = None

    def _initialise(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        p, q = X.shape[1], Y.shape[1]
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=self.device)  # noqa: E731
        self._shift_x, self._shift_y = X.mean(dim=0), Y.mean(dim=0)
        self._first_x, self._first_y = X[0].clone(), Y[0].clone()
        self._x_varies = self._y_varies = False
        self.s_x, self.s_y = zeros(p), zeros(q)
        self.xx, self.yy, self.xy = zeros(p, p), zeros(q, q), zeros(p, q)
        self.a_x, self.b_x, self.a_y, self.b_y = zeros(p), zeros(p), zeros(q), zeros(q)
        self.sum_a = self.sum_b = self.sum_aa = self.sum_bb = self.sum_ab = 0.0

    def update(self, X_chunk, Y_chunk) -> "StreamingLinearCKA":
        """Add the rows of one chunk (X_chunk: m x p, Y_chunk: m x q, same m samples)."""
        if self.device is None:
            self.device = _resolve_device(None, X_chunk, Y_chunk)
        X = _as_float64(X_chunk, self.device)
        Y = _as_float64(Y_chunk, self.device)
        if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(f"chunks must be (m, p) and (m, q) with equal m, got {tuple(X.shape)} and {tuple(Y.shape)}")
        if X.shape[0] == 0:
            return self
        if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
            raise RepresentationError(f"chunk at rows {self.n}..{self.n + X.shape[0]} contains NaN or Inf values")
        if self._shift_x is None:
            self._initialise(X, Y)
        elif X.shape[1] != self.s_x.shape[0] or Y.shape[1] != self.s_y.shape[0]:
            raise ValueError(f"chunk feature counts {X.shape[1]}, {Y.shape[1]} differ from earlier chunks")
        self._x_varies = self._x_varies or bool((X != self._first_x).any())
        self._y_varies = self._y_varies or bool((Y != self._first_y).any())
        X = X - self._shift_x
        Y = Y - self._shift_y
        a = torch.sum(X * X, dim=1)
        b = torch.sum(Y * Y, dim=1)
        self.n += X.shape[0]
        self.s_x += X.sum(dim=0)
        self.s_y += Y.sum(dim=0)
        self.xx += _matmul(X.T, X)
        self.yy += _matmul(Y.T, Y)
        self.xy += _matmul(X.T, Y)
        self.a_x += a @ X
        self.b_x += b @ X
        self.a_y += a @ Y
        self.b_y += b @ Y
        self.sum_a += float(a.sum())
        self.sum_b += float(b.sum())
        self.sum_aa += float(a @ a)
        self.sum_bb += float(b @ b)
        self.sum_ab += float(a @ b)
        return self

    def _biased_hsics(self) -> tuple[float, float, float]:
        """tr(KHLH), tr(KHKH), tr(LHLH) from the centred cross-products."""
        n = self.n
        cxy = self.xy - torch.outer(self.s_x, self.s_y) / n
        cxx = self.xx - torch.outer(self.s_x, self.s_x) / n
        cyy = self.yy - torch.outer(self.s_y, self.s_y) / n
        return tuple(float(torch.sum(m * m)) for m in (cxy, cxx, cyy))

    def _unbiased_hsics(self) -> tuple[float, float, float]:
        """HSIC_u(K, L), HSIC_u(K, K), HSIC_u(L, L) from the expansions in the class docstring."""
        n, sx, sy = self.n, self.s_x, self.s_y
        sum_k = float(sx @ sx) - self.sum_a
        sum_l = float(sy @ sy) - self.sum_b
        xy = unbiased_hsic_from_terms(
            n,
            float(torch.sum(self.xy * self.xy)) - self.sum_ab,
            sum_k,
            sum_l,
            float(sx @ self.xy @ sy) - float(sy @ self.a_y) - float(sx @ self.b_x) + self.sum_ab,
        )
        xx = unbiased_hsic_from_terms(
            n,
            float(torch.sum(self.xx * self.xx)) - self.sum_aa,
            sum_k,
            sum_k,
            float(sx @ self.xx @ sx) - 2.0 * float(sx @ self.a_x) + self.sum_aa,
        )
        yy = unbiased_hsic_from_terms(
            n,
            float(torch.sum(self.yy * self.yy)) - self.sum_bb,
            sum_l,
            sum_l,
            float(sy @ self.yy @ sy) - 2.0 * float(sy @ self.b_y) + self.sum_bb,
        )
        return xy, xx, yy

    def value(self, unbiased: bool = False) -> float:
        """Linear CKA of all rows seen so far; biased HSIC by default, unbiased with ``unbiased=True``."""
        if self.n < 2:
            raise RepresentationError(f"streaming CKA has seen {self.n} sample(s); at least 2 are needed")
        if unbiased and self.n < 4:
            raise ValueError(f"unbiased CKA needs at least 4 samples, got {self.n}")
        for name, varies in (("X", self._x_varies), ("Y", self._y_varies)):
            if not varies:
                raise RepresentationError(f"{name}: representation has zero variance (all {self.n} rows identical)")
        hsics = self._unbiased_hsics() if unbiased else self._biased_hsics()
        return _cka_from_hsics(*hsics, unbiased=unbiased)


def linear_cka_streaming(chunks: Iterable[tuple], unbiased: bool = False, device=None) -> float:
    """Exact linear CKA over an iterable of ``(X_chunk, Y_chunk)`` row chunks, in one pass.

    Equal to :func:`linear_cka` on the concatenated rows (see :class:`StreamingLinearCKA` for
    the derivation); memory does not grow with the number of samples. Pair with
    :func:`iter_zarr_chunks` to stream from zarr stores.
    """
    acc = StreamingLinearCKA(device=device)
    for X_chunk, Y_chunk in chunks:
        acc.update(X_chunk, Y_chunk)
    return acc.value(unbiased=unbiased)


def iter_zarr_chunks(array_x, array_y, chunk_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x_rows, y_rows)`` numpy chunks of at most ``chunk_size`` rows from two arrays.

    Works for anything sliceable along its first axis that ``numpy.asarray`` turns into an array:
    ``zarr.Array``, (lazy) ``xarray.DataArray``, ``numpy.ndarray``; only one chunk of each is
    read into memory at a time. Trailing axes are flattened, so (n, c, h, w) activations come
    out as (m, c*h*w). Choose ``chunk_size`` as a multiple of the store's row chunking to read
    each stored chunk once.
    """
    n = array_x.shape[0]
    if array_y.shape[0] != n:
        raise ValueError(f"arrays must have the same number of rows: {n} vs {array_y.shape[0]}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        x = np.asarray(array_x[start:stop])
        y = np.asarray(array_y[start:stop])
        yield x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)


# --------------------------------------------------------------------------------------------
# Minibatch CKA (Nguyen et al. 2021)
# --------------------------------------------------------------------------------------------


class MinibatchLinearCKA:
    """Minibatch CKA of Nguyen, Raghu & Kornblith 2021 ("Do Wide and Deep Networks Learn the
    Same Things?", ICLR), accumulated over minibatches:

        CKA_mb = mean_b HSIC_u(K_b, L_b) / sqrt( mean_b HSIC_u(K_b, K_b) * mean_b HSIC_u(L_b, L_b) )

    with HSIC_u the unbiased estimator of Song et al. 2012 on each minibatch b (each batch
    needs >= 4 samples). It is the ratio of averaged unbiased HSICs, *not* a mean of per-batch
    CKAs. Each :meth:`update` call is one minibatch, so data streamed from a store can be fed
    batch by batch (e.g. from :func:`iter_zarr_chunks`; the batches should then be a random
    partition, i.e. the stored row order unrelated to the content). Memory is that of one batch.
    """

    def __init__(self, device=None):
        self.device = torch.device(device) if device is not None else None
        self.n_batches = 0
        self._sums = [0.0, 0.0, 0.0]

    def update(self, X_batch, Y_batch) -> "MinibatchLinearCKA":
        """Add one minibatch (rows of X and Y for the same m >= 4 samples)."""
        if X_batch.shape[0] < 4:
            raise ValueError(f"each minibatch needs at least 4 samples for the unbiased HSIC, got {X_batch.shape[0]}")
        X, Y = _validated_pair(X_batch, Y_batch, self.device)
        products = _CentredProducts(X, Y)
        _require_finite(products.finiteness_witness(), X, Y)
        for i, h in enumerate(products.unbiased_hsics()):
            self._sums[i] += h
        self.n_batches += 1
        return self

    def value(self) -> float:
        if self.n_batches == 0:
            raise ValueError("no minibatch was added")
        xy, xx, yy = (s / self.n_batches for s in self._sums)
        return _cka_from_hsics(xy, xx, yy, unbiased=True)


def linear_cka_minibatch(X, Y, batch_size: int, seed: int = 0, device=None) -> float:
    """Minibatch unbiased CKA (Nguyen et al. 2021, ICLR) over fixed, seeded minibatches.

    The samples are shuffled by ``numpy.random.default_rng(seed).permutation(n)`` and split into
    max(1, n // batch_size) consecutive minibatches (``numpy.array_split``: sizes differ by at
    most one, every sample is used once); see :class:`MinibatchLinearCKA` for the estimator.

    This is a *different estimator* from the full unbiased CKA (``linear_cka(X, Y,
    unbiased=True)``): each HSIC_u(K_b, L_b) is unbiased for the population HSIC, so the
    averaged HSICs, and therefore the ratio, approach the population (and full-sample unbiased)
    CKA as the number of samples grows, but for a finite sample the two differ by a sampling
    error that shrinks with n and with the batch size, and the value depends on ``seed``.
    Use it when X and Y do not fit in memory together with an n x n Gram; use
    :class:`StreamingLinearCKA` when the exact full-sample value is wanted.
    """
    if batch_size < 4:
        raise ValueError(f"batch_size must be at least 4 (unbiased HSIC), got {batch_size}")
    n = X.shape[0]
    if Y.shape[0] != n:
        raise ValueError(f"X and Y must describe the same samples: {n} rows vs {Y.shape[0]}")
    order = np.random.default_rng(seed).permutation(n)
    acc = MinibatchLinearCKA(device=_resolve_device(device, X, Y))
    for idx in np.array_split(order, max(1, n // batch_size)):
        acc.update(_take_rows(X, idx), _take_rows(Y, idx))
    return acc.value()


# --------------------------------------------------------------------------------------------
# Orthogonal Procrustes similarity
# --------------------------------------------------------------------------------------------


def _centred_factor(X: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(F, ||Xc||_F) with Xc the column-centred X and F = Xc, or its n x n reduction when wide."""
    Xc = _centre_columns(X)
    return _reduce_to_sample_space(Xc), float(torch.linalg.matrix_norm(Xc))


def _reduce_to_sample_space(X: torch.Tensor) -> torch.Tensor:
    """An n x n matrix R' with ||R'^T M||_* = ||X^T M||_* for every M, when X (n x p) is wide.

    QR of X' = Q R (Q: p x n, orthonormal columns) gives X'M = Q (R M), and left-multiplying
    by Q preserves singular values. Only R (n x n) is formed; no p x p matrix.
    """
    n, p = X.shape
    if p <= n:
        return X
    return torch.linalg.qr(X.T, mode="r").R.T


def procrustes_similarity(X, Y, device=None) -> float:
    """Orthogonal Procrustes similarity s = ||X'Y||_* of centred, unit-Frobenius-norm X and Y.

    Centre each column, scale each matrix to ||X||_F = ||Y||_F = 1, return the nuclear norm
    (sum of singular values) of X'Y. This is max over orthogonal Q of tr(Q'X'Y) (Schönemann
    1966), so the orthogonal Procrustes distance is

        min_Q ||X Q - Y||_F^2 = 2 - 2 s,   i.e. distance = sqrt(2 - 2 s),

    and ``scipy.spatial.procrustes`` (which also allows a scaling) reports the disparity
    1 - s^2. Range [0, 1], higher = more similar; invariant to orthogonal transformations,
    isotropic scaling and translation. Different feature counts p != q are allowed: the value
    is that of the narrower representation padded with zero columns (padding changes neither
    s nor the distance).

    When features exceed samples (p > n) the matrix is first reduced to n x n by a QR
    decomposition of X' (see :func:`_reduce_to_sample_space`), so X'Y is never formed as a
    p x q matrix: memory is O(n^2 + n (p + q)). Torch float64 on ``device``.
    """
    Xt, Yt = _validated_pair(X, Y, device)
    Fx, norm_x = _centred_factor(Xt)
    Fy, norm_y = _centred_factor(Yt)
    _require_finite(norm_x + norm_y, Xt, Yt)
    nuclear = torch.linalg.svdvals(_matmul(Fx.T, Fy)).sum() / (norm_x * norm_y)
    value = _finite_float(nuclear, "Procrustes similarity")
    return float(np.clip(value, 0.0, 1.0))


# --------------------------------------------------------------------------------------------
# k-NN Jaccard similarity
# --------------------------------------------------------------------------------------------


def _row_norms(X: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each row."""
    return torch.linalg.vector_norm(X, dim=1)


def _cosine_neighbours(X: torch.Tensor, norms: torch.Tensor, k: int, block_elements: int = 1 << 23) -> torch.Tensor:
    """Indices (n x k) of each row's k most cosine-similar other rows (the row itself excluded).

    For a fixed row i, cos(x_i, x_j) = x_i.x_j / (|x_i| |x_j|) ranks the j like x_i.x_j / |x_j|,
    so only the candidates' norms are divided out (of a block of dot products) and the data are
    never copied. An all-zero row has cosine 0 to every row (as in scikit-learn). Similarities
    are computed in row blocks of at most ``block_elements`` entries: memory O(n * block), not
    n^2. Ties are broken arbitrarily.
    """
    n = X.shape[0]
    inverse_norms = 1.0 / torch.where(norms > 0, norms, torch.ones_like(norms))
    block = max(1, block_elements // n)
    out = torch.empty((n, k), dtype=torch.long, device=X.device)
    for start in range(0, n, block):
        stop = min(start + block, n)
        scores = _matmul(X[start:stop], X.T)
        scores *= inverse_norms[None, :]
        rows = torch.arange(stop - start, device=X.device)
        scores[rows, rows + start] = -torch.inf  # exclude the sample itself
        out[start:stop] = torch.topk(scores, k, dim=1, sorted=False).indices
    return out


def _mean_jaccard_of_index_sets(A: torch.Tensor, B: torch.Tensor) -> float:
    """Mean over rows of |A_i ∩ B_i| / |A_i ∪ B_i| for two n x k arrays of distinct indices per row."""
    k = A.shape[1]
    both = torch.sort(torch.cat([A, B], dim=1), dim=1).values
    intersection = (both[:, 1:] == both[:, :-1]).sum(dim=1).to(torch.float64)
    return float(torch.mean(intersection / (2 * k - intersection)))


def knn_jaccard(X, Y, k: int = 10, device=None, *, center: bool = False) -> float:
    """Mean Jaccard similarity of the k-nearest-neighbour sets of each sample in X and in Y.

    For each sample i, N_X(i) are the k samples with the highest cosine similarity to x_i
    (i itself excluded), N_Y(i) likewise in Y; the value is mean_i |N_X ∩ N_Y| / |N_X ∪ N_Y|
    (Klabunde et al.'s k-NN Jaccard similarity). Range [0, 1]; higher = more similar; a random
    pairing of neighbourhoods gives about k / (2(n-1)). Invariant to orthogonal transformations
    and isotropic scaling (cosine), *not* to translation. Requires 1 <= k < n (``ValueError``).
    Torch float64 on ``device``; memory O(n * block), not n^2.

    ``center``: subtract each feature's (column's) mean over the n inputs from X and from Y
    before taking cosine neighbours, as the universality paper's code does; the value is then
    also invariant to translation. Default False (robustlens' convention, DESIGN.md): with a
    large common feature mean (e.g. post-ReLU activations) uncentred cosine neighbours are
    dominated by that mean, and centred ones are not, so the two can differ a lot.
    """
    n = X.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must satisfy 1 <= k < n_samples = {n}, got k={k}")
    Xt, Yt = _validated_pair(X, Y, device)
    if center:
        Xt, Yt = _centre_columns(Xt), _centre_columns(Yt)
    norms_x, norms_y = _row_norms(Xt), _row_norms(Yt)
    _require_finite(float(norms_x.sum()) + float(norms_y.sum()), Xt, Yt)
    return _mean_jaccard_of_index_sets(_cosine_neighbours(Xt, norms_x, k), _cosine_neighbours(Yt, norms_y, k))


# --------------------------------------------------------------------------------------------
# Representation Topology Divergence (Barannikov et al. 2022)
# --------------------------------------------------------------------------------------------


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
    costs over a second in every comparison job. tests/test_similarity.py checks the equality."""
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


def _as_numpy_float64(X) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().to(torch.float64).numpy()
    return np.asarray(X, dtype=np.float64)


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


# --------------------------------------------------------------------------------------------
# Null distribution
# --------------------------------------------------------------------------------------------


def permutation_baseline(measure: Callable | str, X, Y, n_permutations: int = 100, seed: int = 0,
                         measure_kwargs: dict | None = None, **kwargs) -> np.ndarray:
    """Values of ``measure(X, Y[perm], **kwargs)`` for ``n_permutations`` random row permutations.

    Shuffling the rows of Y breaks the sample correspondence while keeping both marginal
    geometries: the result is the null distribution a similarity value is compared with (for a
    similarity, the observed value should exceed the null; for RTD, fall below it).
    ``measure`` is a function or a name in :data:`robustlens.measures.MEASURES`; ``kwargs`` go
    to it, and so do the entries of ``measure_kwargs``, which is how to pass an argument whose
    name this function uses itself (RTD's ``seed``: ``measure_kwargs={"seed": 0}``).
    Permutations come from ``numpy.random.default_rng(seed)``. Returns a float64 array.
    """
    kwargs = {**kwargs, **(measure_kwargs or {})}
    if isinstance(measure, str):
        from robustlens.measures import get_function

        measure = get_function(measure)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    values = np.empty(n_permutations)
    for i in range(n_permutations):
        values[i] = measure(X, _take_rows(Y, rng.permutation(n)), **kwargs)
    return values
