"""Layer quality of 3x3 conv filters (Gavrikov & Keuper, CVPR-W 2022, Sec. 3 "Measuring layer
quality"): :func:`sparsity` (Eq. 7), :func:`variance_entropy` (Eq. 8) and
:func:`orthogonality` (Eq. 9), with their helpers, and the per-filter scaling of Eq. 3
(:func:`scale_filters`) that the PCA basis and the coefficient shift use too.

Conventions (sparse filters, scaling, zero banks): see :mod:`robustlens.filters`. The table of
these measures over a filter dataset, :func:`~robustlens.filters.dataset.quality_table`, lives
in :mod:`robustlens.filters.dataset`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .common import N_TAPS, _check_weight, _to_numpy

#: A filter is sparse if max|F| <= SPARSITY_FRACTION * max|W| (paper: max|W| / 100).
SPARSITY_FRACTION = 0.01
#: Maximum variance entropy of 3x3 filters: log10(9).
MAX_VARIANCE_ENTROPY = math.log10(N_TAPS)
#: What :func:`orthogonality` does with all-zero filter banks: ``drop`` (robustlens) or
#: ``keep`` (the authors' code).
ZERO_BANKS = ("drop", "keep")


def scale_filters(filters: Any) -> np.ndarray:
    """Each filter divided by its own max|F| (Gavrikov & Keuper Eq. 3); all-zero filters kept.

    Idempotent: scaling scaled filters changes nothing. Returns float64 rows of 9 taps
    (or of k1*k2 taps for a 4-D weight of another kernel size).
    """
    a = _to_numpy(filters)
    rows = a.reshape(-1, a.shape[-1] * a.shape[-2]) if a.ndim >= 3 else a
    den = np.abs(rows).max(axis=1, keepdims=True)
    den[den == 0] = 1.0
    return rows / den


def sparse_filter_mask(weight: Any) -> np.ndarray:
    """Boolean (c_out, c_in) mask of the sparse filters of one layer.

    A filter F is sparse if ``max|F| <= max|W| / 100`` (Gavrikov & Keuper Sec. 3, the criterion
    of CNN-Filter-DB). In an all-zero layer every filter is sparse.
    """
    w = _check_weight(weight)
    filter_max = np.abs(w).max(axis=(2, 3))
    return filter_max <= SPARSITY_FRACTION * np.abs(w).max()


def sparsity(weight: Any) -> float:
    """Fraction of sparse filters among the c_out * c_in filters of a conv layer
    (Gavrikov & Keuper Eq. 7), with ``max|F| <= max|W| / 100`` as the sparsity criterion.

    ``weight``: (c_out, c_in, 3, 3), numpy or torch. Range [0, 1]; lower = more filters that
    contribute to the feature maps.
    """
    return float(sparse_filter_mask(weight).mean())


def explained_variance_ratio(filters: Any) -> np.ndarray:
    """Explained variance ratios â of the PCA of the rows of ``filters`` (Eq. 4-5): the
    eigenvalues of the covariance of the centred rows, decreasing, normalised to sum 1.
    All zeros when the rows have no variance."""
    x = np.asarray(filters, dtype=np.float64)
    if x.shape[0] < 2:
        raise ValueError("need at least two filters for a PCA")
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    var = s**2 / (x.shape[0] - 1)
    total = var.sum()
    return var / total if total > 0 else np.zeros_like(var)


def entropy10(ratios: Any) -> float:
    """Base-10 entropy ``-sum a log10 a`` of a probability vector (0 log 0 = 0), Eq. 8."""
    a = np.asarray(ratios, dtype=np.float64)
    a = a[a > 0]
    return float(-(a * np.log10(a)).sum())


def variance_entropy(weight: Any) -> float:
    """Variance entropy of a conv layer (Gavrikov & Keuper Eq. 8): the base-10 entropy of the
    PCA explained variance ratios of the layer's non-sparse filters, each filter first scaled by
    its own max|F| (as in the authors' code; the paper's text says "without normalization").

    ``weight``: (c_out, c_in, 3, 3). Range [0, log10(9) ~ 0.954] for 3x3 filters: 0 = all
    variance along one basis vector (homogeneous filters), log10(9) = variance spread evenly (as
    in random, untrained layers); both edges indicate degeneration. NaN when the layer has fewer
    than two non-sparse filters or their scaled versions have no variance.
    """
    w = _check_weight(weight)
    mask = sparse_filter_mask(w).ravel()
    rows = w.reshape(-1, w.shape[2] * w.shape[3])[~mask]
    if rows.shape[0] < 2:
        return float("nan")
    ratios = explained_variance_ratio(scale_filters(rows))
    if not ratios.any():
        return float("nan")
    return entropy10(ratios)


def _bank_matrix(weight: Any) -> np.ndarray:
    w = _check_weight(weight)
    return w.reshape(w.shape[0], -1)


def n_zero_banks(weight: Any) -> int:
    """Number of all-zero filter banks (output channels) of a conv layer: the banks that
    :func:`orthogonality` leaves out (with its default ``zero_banks="drop"``)."""
    return int((np.abs(_bank_matrix(weight)).max(axis=1) == 0).sum())


def orthogonality(weight: Any, zero_banks: str = "drop") -> float:
    """Orthogonality of the filter banks of a conv layer (Gavrikov & Keuper Eq. 9):
    ``1 - sum|Ŵ Ŵᵀ - I| / (c (c - 1))`` with Ŵ the (c, c_in * 9) matrix of unit-normalised
    banks (one row per output channel).

    ``zero_banks="drop"`` (default): all-zero banks are left out (see :func:`n_zero_banks`) and
    c counts the banks kept; NaN when fewer than two non-zero banks. ``zero_banks="keep"``: the
    authors' code (``ortho_cond`` in their orthogonality notebook) and Eq. 9 read literally: an
    all-zero bank stays a zero row of Ŵ and c = c_out. Such a row is orthogonal to every bank
    (zero off-diagonal terms) but its diagonal term is ``|0 - 1| = 1``, so z zero banks give
    ``1 - (S + z) / (c_out (c_out - 1))`` with S the off-diagonal sum of the non-zero banks;
    NaN only when c_out < 2. The default differs because a dead channel is no evidence about
    the diversity of the live ones, and the literal formula both penalises it (diagonal) and
    dilutes the others (denominator). 1 = all banks orthogonal; 0 = parallel banks (feature
    maps identical up to scale and sign). Grouped convs: the stored (c_in / groups) banks.
    """
    if zero_banks not in ZERO_BANKS:
        raise ValueError(f"zero_banks must be one of {ZERO_BANKS}, got {zero_banks!r}")
    banks = _bank_matrix(weight)
    norms = np.linalg.norm(banks, axis=1)
    if zero_banks == "keep":
        kept = banks / np.where(norms > 0, norms, 1.0)[:, None]
    else:
        kept = banks[norms > 0] / norms[norms > 0, None]
    c = kept.shape[0]
    if c < 2:
        return float("nan")
    gram = kept @ kept.T
    off = np.abs(gram - np.eye(c)).sum()
    return float(1.0 - off / (c * (c - 1)))
