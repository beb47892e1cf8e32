"""Linear centred kernel alignment (CKA): in memory, exact streaming, and minibatch.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels K = XX', L = YY'
(Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", ICML):

* biased HSIC tr(KHLH)/(n-1)^2, H = I - 11'/n (:func:`linear_cka`, the default; range [0, 1]);
* the unbiased HSIC_1 of Song et al. 2012 (JMLR 13, "Feature selection via dependence
  maximization"), with K~, L~ the Grams with zeroed diagonals (:func:`unbiased_hsic_from_terms`;
  ``linear_cka(unbiased=True)``, range [-1, 1], n >= 4):

      HSIC_u(K, L) = [ tr(K~L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1 ] / (n(n-3))

* both exactly, in one pass over sample chunks (:class:`StreamingLinearCKA`,
  :func:`linear_cka_streaming`, :func:`iter_zarr_chunks`);
* the minibatch CKA of Nguyen, Raghu & Kornblith 2021 ("Do Wide and Deep Networks Learn the
  Same Things?", ICLR), a different estimator (:class:`MinibatchLinearCKA`,
  :func:`linear_cka_minibatch`):

      CKA_mb = mean_b HSIC_u(K_b, L_b) / sqrt( mean_b HSIC_u(K_b, K_b) * mean_b HSIC_u(L_b, L_b) )
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from robustlens.similarity.validation import (
    OFFSET_LIMIT,
    RepresentationError,
    _as_float64,
    _centre_columns,
    _explicit_or_input_device,
    _finite_float,
    _matmul,
    _require_finite,
    _subtract_outer,
    _take_rows,
    _validated_pair,
)


def _feature_route_is_cheaper(n: int, p: int, q: int) -> bool:
    """Compare the multiply-adds of the two exact routes to ||Xc'Yc||_F^2, ||Xc'Xc||_F^2, ||Yc'Yc||_F^2.

    Feature space: X'Y, X'X, Y'Y cost n (pq + p^2 + q^2) and hold p x q, p x p, q x q matrices.
    Gram: K = XX', L = YY' cost n^2 (p + q) and hold two n x n matrices.
    """
    return p * q + p * p + q * q <= n * (p + q)


def _centred_gram(A):
    """HKH for K = AA' (A a NumPy array, whose matmul is BLAS syrk, or a torch tensor on a
    device), centred in place through its row and column means (no centred copy of A). An
    entry of the raw K carries a rounding error of order eps ||a_i|| ||a_j||, which centring
    does not remove: when the column means are large against the spread (n ||mu||^2 >
    OFFSET_LIMIT ||Ac||_F^2, tested on K alone: n ||mu||^2 = 1'K1 / n, the mean of K's column
    means times n, and ||A||_F^2 = tr K) the Gram of a centred copy is formed instead."""
    K = A @ A.T
    means = K.mean(0)
    offset = A.shape[0] * float(means.mean())
    if not offset <= OFFSET_LIMIT * (float(K.diagonal().sum()) - offset) and math.isfinite(offset):
        Ac = _centre_columns(A)
        K = Ac @ Ac.T
        means = K.mean(0)
    K -= means[None, :]
    K -= means[:, None]
    K += means.mean()
    return K


def _squared_norm(M: np.ndarray) -> float:
    """||M||_F^2 by one BLAS dot product (no squared copy)."""
    return float(np.vdot(M, M))


def _offset_is_small(gram: np.ndarray, mean: np.ndarray, n: int) -> bool:
    """Whether every column's n mu_j^2 is at most OFFSET_LIMIT times its centred sum of squares
    (X'X)_jj - n mu_j^2. False for NaN/Inf (comparisons with NaN are False)."""
    offset = n * mean * mean
    return bool(np.all(offset <= OFFSET_LIMIT * (np.diagonal(gram) - offset)))


def _offset_corrected_products(X: np.ndarray, Y: np.ndarray, row_norms: bool):
    """(||Xc'Yc||^2, ||Xc'Xc||^2, ||Yc'Yc||^2, a, b) from the raw products, Xc'Yc = X'Y - n mu_x mu_y',
    without centred copies of X and Y; None when a column's mean is large against its spread.
    With ``row_norms``, a and b are the squared norms of the centred rows,
    a_i = ||x_i||^2 - 2 x_i.mu_x + ||mu_x||^2 (else None).

    Rounding: an entry of X'Y carries an error of order eps ||x_i|| ||y_j|| with
    ||x_i||^2 = ||xc_i||^2 + n mu_i^2, and the subtraction of n mu_i mu_j cancels that offset
    part. With n mu_i^2 <= OFFSET_LIMIT ||xc_i||^2 the error is at most (1 + OFFSET_LIMIT) times
    that of the products of centred data, which keeps the value within ~1e-14 relative of the
    centred computation (so do the sums over the row norms, whose errors are of order
    eps (||x_i||^2 + ||mu||^2)); data with larger offsets (e.g. a translated representation)
    are centred first instead (the caller's fallback). The test costs nothing: it reads the
    diagonal of X'X, which is computed anyway."""
    n = X.shape[0]
    mean_x = X.mean(axis=0)
    xx = X.T @ X
    if not _offset_is_small(xx, mean_x, n):
        return None
    mean_y = Y.mean(axis=0)
    yy = Y.T @ Y
    if not _offset_is_small(yy, mean_y, n):
        return None
    xy = X.T @ Y
    _subtract_outer(xx, n * mean_x, mean_x)
    _subtract_outer(yy, n * mean_y, mean_y)
    _subtract_outer(xy, n * mean_x, mean_y)
    a = b = None
    if row_norms:
        a, b = (np.einsum("ij,ij->i", A, A) - 2.0 * (A @ mean) + float(np.vdot(mean, mean)) for A, mean in ((X, mean_x), (Y, mean_y)))
    return _squared_norm(xy), _squared_norm(xx), _squared_norm(yy), a, b


class _CentredProducts:
    """tr(KL), tr(KK), tr(LL) of the centred linear Grams K = Xc Xc', L = Yc Yc', and (with
    ``row_norms``) their diagonals a = diag(K), b = diag(L) (the squared norms of the centred
    rows, needed only by the unbiased estimator; None otherwise).

    Feature route: tr(KL) = ||Xc'Yc||_F^2 etc., from the raw products corrected by n mu mu'
    (:func:`_offset_corrected_products`; on the CPU, when no column's mean is large against its
    spread), else from column-centred copies. Gram route: the
    n x n Grams of the raw data, centred as HKH (only two n x n matrices are made; the data are
    not copied). ``route`` "auto" picks the cheaper by shape (:func:`_feature_route_is_cheaper`).

    On the CPU everything is computed in NumPy float64 on the tensors' buffers (no copy): its
    matmul uses the BLAS symmetric rank-k update (syrk) for X'X and XX', half the work of the
    general product torch uses, and the squared sums are BLAS dot products. On other devices
    (CUDA) the same formulas run in torch float64.
    """

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, route: str = "auto", row_norms: bool = True):
        n, p = X.shape
        q = Y.shape[1]
        if route == "auto":
            route = "features" if _feature_route_is_cheaper(n, p, q) else "gram"
        if route not in ("features", "gram"):
            raise ValueError(f"route must be 'auto', 'features' or 'gram', not {route!r}")
        self.n, self.route = n, route
        self.a = self.b = None
        if X.device.type == "cpu" and Y.device.type == "cpu":
            with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs are reported by the caller
                self._numpy(X.numpy(), Y.numpy(), route, row_norms)
        else:
            self._torch(X, Y, route, row_norms)

    def _numpy(self, X: np.ndarray, Y: np.ndarray, route: str, row_norms: bool) -> None:
        if route == "features":
            corrected = _offset_corrected_products(X, Y, row_norms)
            if corrected is None:
                Xc, Yc = _centre_columns(X), _centre_columns(Y)
                a, b = (np.einsum("ij,ij->i", Xc, Xc), np.einsum("ij,ij->i", Yc, Yc)) if row_norms else (None, None)
                corrected = _squared_norm(Xc.T @ Yc), _squared_norm(Xc.T @ Xc), _squared_norm(Yc.T @ Yc), a, b
            self.kl, self.kk, self.ll, self.a, self.b = corrected
        else:
            K, L = _centred_gram(X), _centred_gram(Y)
            if row_norms:
                self.a, self.b = np.diagonal(K).copy(), np.diagonal(L).copy()
            self.kl, self.kk, self.ll = float(np.vdot(K, L)), _squared_norm(K), _squared_norm(L)

    def _torch(self, X: torch.Tensor, Y: torch.Tensor, route: str, row_norms: bool) -> None:
        if route == "features":
            Xc, Yc = _centre_columns(X), _centre_columns(Y)
            self.kl, self.kk, self.ll = (float(torch.sum(m * m)) for m in (_matmul(Xc.T, Yc), _matmul(Xc.T, Xc), _matmul(Yc.T, Yc)))
            if row_norms:
                self.a, self.b = torch.sum(Xc * Xc, dim=1), torch.sum(Yc * Yc, dim=1)
        else:
            K, L = _centred_gram(X), _centred_gram(Y)
            if row_norms:
                self.a, self.b = torch.diagonal(K).clone(), torch.diagonal(L).clone()
            K, L = K.reshape(-1), L.reshape(-1)
            self.kl, self.kk, self.ll = float(K @ L), float(K @ K), float(L @ L)

    def finiteness_witness(self) -> float:
        """NaN or Inf if X or Y has a NaN/Inf entry: a NaN/Inf in column j makes every centred
        entry of column j (feature route) or every centred Gram entry (Gram route) non-finite."""
        rows = 0.0 if self.a is None else float(self.a.sum()) + float(self.b.sum())
        return rows + self.kl + self.kk + self.ll

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
    products = _CentredProducts(Xt, Yt, route, row_norms=unbiased)
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
            self.device = _explicit_or_input_device(None, X_chunk, Y_chunk)
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
    acc = MinibatchLinearCKA(device=_explicit_or_input_device(device, X, Y))
    for idx in np.array_split(order, max(1, n // batch_size)):
        acc.update(_take_rows(X, idx), _take_rows(Y, idx))
    return acc.value()
