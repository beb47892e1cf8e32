"""Orthogonal Procrustes similarity of two representations (Schönemann 1966).

s = ||X'Y||_* (nuclear norm) of column-centred X and Y scaled to unit Frobenius norm; it is
max over orthogonal Q of tr(Q'X'Y), so the orthogonal Procrustes distance is

    min_Q ||X Q - Y||_F^2 = 2 - 2 s,

and ``scipy.spatial.procrustes`` reports the disparity 1 - s^2. Range [0, 1], higher = more
similar (:func:`procrustes_similarity`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from robustlens.similarity.validation import (
    OFFSET_LIMIT,
    _centre_columns,
    _finite_float,
    _require_finite,
    _subtract_outer,
    _validated_pair,
)

def _centred_factor(X):
    """(F, ||Xc||_F) with Xc the column-centred X (a NumPy array or a torch tensor) and F = Xc,
    or its n x n reduction when wide."""
    Xc = _centre_columns(X)
    return _reduce_to_sample_space(Xc), _frobenius_norm(Xc)


def _frobenius_norm(A) -> float:
    """||A||_F; for a NumPy array by one BLAS dot product (no squared copy)."""
    if isinstance(A, np.ndarray):
        return float(np.sqrt(np.vdot(A, A)))
    return float(torch.linalg.matrix_norm(A))


def _reduce_to_sample_space(X):
    """An n x n matrix R' with ||R'^T M||_* = ||X^T M||_* for every M, when X (n x p) is wide.

    QR of X' = Q R (Q: p x n, orthonormal columns) gives X'M = Q (R M), and left-multiplying
    by Q preserves singular values. Only R (n x n) is formed; no p x p matrix.
    """
    n, p = X.shape
    if p <= n:
        return X
    if isinstance(X, np.ndarray):
        return np.linalg.qr(X.T, mode="r").T
    return torch.linalg.qr(X.T, mode="r").R.T


def _nuclear_norm(M) -> float:
    """The sum of the singular values of M (NumPy's LAPACK for an array, torch's for a tensor)."""
    if isinstance(M, np.ndarray):
        return float(np.linalg.svd(M, compute_uv=False).sum())
    return float(torch.linalg.svdvals(M).sum())


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
    p x q matrix: memory is O(n^2 + n (p + q)). Float64 on ``device`` (default the input
    tensor's): on the CPU in NumPy throughout (:func:`_procrustes_ratio`).
    """
    Xt, Yt = _validated_pair(X, Y, device)
    on_cpu = Xt.device.type == "cpu" and Yt.device.type == "cpu"
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf inputs are reported below
        value = _procrustes_ratio(Xt.numpy(), Yt.numpy()) if on_cpu else _procrustes_ratio(Xt, Yt)
    _require_finite(value, Xt, Yt)
    return float(np.clip(_finite_float(value, "Procrustes similarity"), 0.0, 1.0))


def _procrustes_ratio(X, Y) -> float:
    """||Xc'Yc||_* / (||Xc||_F ||Yc||_F) for NumPy arrays (the CPU: every product, QR and SVD
    in NumPy's BLAS and LAPACK, so no second thread pool, torch's, competes with the first
    one's spinning threads) or torch tensors (CUDA). Tall NumPy inputs with moderate column
    means skip the centred copies (:func:`_offset_corrected_cross_product`)."""
    n = X.shape[0]
    corrected = None
    if isinstance(X, np.ndarray) and X.shape[1] <= n and Y.shape[1] <= n:
        corrected = _offset_corrected_cross_product(X, Y)
    if corrected is not None:
        product, norm_x, norm_y = corrected
    else:
        Fx, norm_x = _centred_factor(X)
        Fy, norm_y = _centred_factor(Y)
        product = Fx.T @ Fy
    if not np.isfinite(norm_x + norm_y):  # NaN/Inf in X or Y: the caller reports which
        return math.nan
    return _nuclear_norm(product) / (norm_x * norm_y)


def _offset_corrected_cross_product(X: np.ndarray, Y: np.ndarray):
    """(Xc'Yc, ||Xc||_F, ||Yc||_F) from the raw data, Xc'Yc = X'Y - n mu_x mu_y' and
    ||Xc||_F^2 = ||X||_F^2 - n ||mu_x||^2, without centred copies; None (centre instead) unless
    n ||mu||^2 <= OFFSET_LIMIT ||Xc||_F^2 for both. The rounding error of X'Y is of order
    eps ||X||_F ||Y||_F with ||X||_F^2 = ||Xc||_F^2 + n ||mu_x||^2, so under that bound it is at
    most (1 + OFFSET_LIMIT) times that of the product of centred copies (the similarity is
    normalised by ||Xc||_F ||Yc||_F); NaN/Inf fail the test and take the centring route."""
    n = X.shape[0]
    mean_x, mean_y = X.mean(axis=0), Y.mean(axis=0)
    offset_x, offset_y = n * float(np.vdot(mean_x, mean_x)), n * float(np.vdot(mean_y, mean_y))
    spread_x, spread_y = float(np.vdot(X, X)) - offset_x, float(np.vdot(Y, Y)) - offset_y
    if not (offset_x <= OFFSET_LIMIT * spread_x and offset_y <= OFFSET_LIMIT * spread_y):
        return None
    product = X.T @ Y
    _subtract_outer(product, n * mean_x, mean_y)
    return product, float(np.sqrt(spread_x)), float(np.sqrt(spread_y))
