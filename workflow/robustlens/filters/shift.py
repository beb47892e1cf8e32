"""Coefficient distribution shift between filter samples (Gavrikov & Keuper, CVPR-W 2022,
Sec. 3 "Quantifying distribution shifts", Eq. 10; Sec. 4.2, Fig. 1 and 3): the weighted
symmetric KL divergence of per-axis histograms of PCA coefficients
(:func:`coefficient_shift`), and :func:`shift_table` with its null baselines (seed halves, and
a permutation of the robust/normal labels across models).

Histograms, empty bins and the histogram range: see :mod:`robustlens.filters`.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .basis import FilterBasis, filter_basis
from .common import _filter_rows
from .dataset import _FilterArrays
from .depth import choose_n_depth_bins, depth_bin_edges, depth_bin_index
from .quality import scale_filters

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

#: Histogram bins per PCA axis for the coefficient shift (authors' code: ``bins=70``).
KL_BINS = 70
#: Value given to empty histogram bins before renormalising (authors' code).
EMPTY_BIN_VALUE = float(np.finfo(np.float32).eps)
#: Name of the measure in :func:`shift_table`.
SHIFT_MEASURE = "weighted_symmetric_kl_nats"
#: Histogram range of the coefficient shift: ``pooled`` (per axis, the two samples' pooled
#: range; robustlens) or ``global`` (one range over every projected filter of the dataset, all
#: axes; the authors' code).
HISTOGRAM_RANGES = ("pooled", "global")
SHIFT_COLUMNS = [
    "comparison", "group_a", "group_b", "scope", "bin", "depth_lo", "depth_hi", "n_depth_bins",
    "measure", "histogram_range", "value", "n_filters_a", "n_filters_b", "n_models_a", "n_models_b",
    "n_permutations", "permutation_exact", "p_value", "null_mean", "null_q95",
]


def symmetric_kl(p: Any, q: Any) -> float:
    """Symmetric KL divergence ``KL(p||q) + KL(q||p)`` in nats (natural log), Eq. 10 for one
    axis; p and q are normalised to sum 1 first (as ``scipy.stats.entropy`` does). Infinite
    when one vector has mass where the other has none."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_pq = np.where(p > 0, p * np.log(p / q), 0.0).sum()
        kl_qp = np.where(q > 0, q * np.log(q / p), 0.0).sum()
    return float(kl_pq + kl_qp)


def discrete_distribution(values: Any, value_range: tuple[float, float], bins: int = KL_BINS) -> np.ndarray:
    """The authors' discrete distribution of one coefficient axis: ``numpy.histogram(values,
    range=value_range, bins=bins, density=True)``, empty bins set to float32 machine epsilon,
    renormalised to sum 1. (The epsilon is given on the density scale, as in their code.)"""
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=bins, range=value_range)
    width = (value_range[1] - value_range[0]) / bins
    return _distributions(counts[None, :], np.array([width]))[0]


def _distributions(counts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """counts (..., axes, bins) -> densities with empty bins = eps, renormalised; NaN for an
    axis without any count. ``widths``: bin width per axis."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        density = counts / (n * widths[..., :, None])
    density[density == 0] = EMPTY_BIN_VALUE
    return density / density.sum(axis=-1, keepdims=True)


def _axis_ranges(ya: np.ndarray, yb: np.ndarray, value_range: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) histogram range per axis: the pooled (min, max) of the two samples' coefficients
    on each axis (``histogram_range="pooled"``), or the one ``value_range`` for every axis (how
    ``histogram_range="global"`` arrives here: :func:`global_coefficient_range`). A flat range
    is widened by 0.5 on each side. ``numpy.histogram`` counts a value equal to ``hi`` in the
    last bin, so the extreme coefficients that define a range are never dropped."""
    n_axes = ya.shape[1]
    if value_range is not None:
        lo = np.full(n_axes, float(value_range[0]))
        hi = np.full(n_axes, float(value_range[1]))
    else:
        pooled = np.vstack([ya, yb])
        lo, hi = pooled.min(axis=0), pooled.max(axis=0)
    flat = hi <= lo
    lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
    return lo, hi


def global_coefficient_range(coefficients: np.ndarray) -> tuple[float, float]:
    """One (min, max) over every projected coefficient on every axis: the authors' histogram
    range (``dX_trans.min(), dX_trans.max()`` in their pca notebook, over their whole filter
    database, sparse filters included)."""
    y = np.asarray(coefficients, dtype=np.float64)
    return float(y.min()), float(y.max())


def _axis_counts(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int) -> np.ndarray:
    """(axes, bins) histogram counts of the coefficient rows y, one range per axis."""
    return np.stack([np.histogram(y[:, i], bins=bins, range=(lo[i], hi[i]))[0] for i in range(y.shape[1])])


def _shift_from_counts(counts_a: np.ndarray, counts_b: np.ndarray, widths: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted symmetric KL from (..., axes, bins) counts; NaN where a sample is empty."""
    p, q = _distributions(counts_a, widths), _distributions(counts_b, widths)
    kl = ((p - q) * (np.log(p) - np.log(q))).sum(axis=-1)  # = KL(p||q) + KL(q||p), nats
    return (kl * weights).sum(axis=-1)


def coefficient_shift(
    coeffs_a: Any,
    coeffs_b: Any,
    basis: FilterBasis | None = None,
    bins: int = KL_BINS,
    *,
    value_range: tuple[float, float] | None = None,
) -> float:
    """Weighted symmetric KL divergence between the PCA coefficients of two filter samples
    (Gavrikov & Keuper Eq. 10; the paper reports 0.55 / 0.16 / 0.01 robust vs normal on
    CIFAR-10 / CIFAR-100 / ImageNet).

    ``coeffs_a``, ``coeffs_b``: filters as (n, 9), (n, 3, 3) or (c_out, c_in, 3, 3); each is
    scaled by its own max|F| (idempotent, so pre-scaled filters are fine). Leave sparse filters
    out beforehand (the criterion needs the layer; see the dataset's ``sparse`` coordinate).
    ``basis``: the shared basis; None fits one on both samples pooled. Per axis i: ``bins``
    equal-width bins over the pooled range of both samples' coefficients on that axis (or the
    one ``value_range`` for every axis, which is what the authors' code did with the range of
    their whole dataset), density histogram, empty bins = float32 eps, renormalised; symmetric
    KL in nats; weighted by ``basis.explained_variance_ratio[i]`` and summed. 0 for identical
    samples; symmetric in a and b for a given basis. NaN when a sample is empty.
    """
    xa, xb = scale_filters(_filter_rows(coeffs_a)), scale_filters(_filter_rows(coeffs_b))
    if xa.shape[0] == 0 or xb.shape[0] == 0:
        return float("nan")
    if basis is None:
        basis = filter_basis(np.vstack([xa, xb]), scale=False)
    ya, yb = basis.project(xa), basis.project(xb)
    lo, hi = _axis_ranges(ya, yb, value_range)
    widths = (hi - lo) / bins
    value = _shift_from_counts(_axis_counts(ya, lo, hi, bins), _axis_counts(yb, lo, hi, bins),
                               widths, basis.explained_variance_ratio)
    return float(value)


def _seed_halves(models: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int], list[int]] | None:
    """Split models into two halves by seed: the lower floor(k/2) of the k distinct seeds vs the
    rest. None with fewer than two distinct (known) seeds."""
    known = seeds >= 0
    distinct = sorted(set(seeds[known].tolist()))
    if len(distinct) < 2:
        return None
    first = distinct[: len(distinct) // 2]
    second = distinct[len(distinct) // 2:]
    in_first = np.isin(seeds, first) & known
    in_second = np.isin(seeds, second) & known
    return models[in_first], models[in_second], first, second


def _label_matrix(n_models: int, n_a: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """Boolean (P, n_models) assignments of n_a models to group a: all C(n, n_a) when that is at
    most ``n_permutations`` (exact test), else ``n_permutations`` random ones."""
    total = math.comb(n_models, n_a)
    if total <= n_permutations:
        labels = np.zeros((total, n_models), dtype=bool)
        for row, chosen in enumerate(combinations(range(n_models), n_a)):
            labels[row, list(chosen)] = True
        return labels, True
    rng = np.random.default_rng(seed)
    base = np.zeros(n_models, dtype=bool)
    base[:n_a] = True
    return np.stack([rng.permutation(base) for _ in range(n_permutations)]), False


def _scopes(a: _FilterArrays, n_depth_bins: int) -> list[dict]:
    scopes = [
        {"scope": "overall", "bin": pd.NA, "depth_lo": 0.0, "depth_hi": 1.0, "rows": np.ones(a.model.size, bool)},
        {"scope": "first_layer", "bin": pd.NA, "depth_lo": 0.0, "depth_hi": 0.0, "rows": a.depth_index == 0},
    ]
    if n_depth_bins > 0:
        bins = depth_bin_index(a.depth_index, a.n_conv, n_depth_bins)
        edges = depth_bin_edges(n_depth_bins)
        scopes += [{"scope": "depth_bin", "bin": j, "depth_lo": float(edges[j]), "depth_hi": float(edges[j + 1]),
                    "rows": bins == j} for j in range(n_depth_bins)]
    return scopes


def shift_table(
    ds: "xr.Dataset",
    n_bins_depth: int = 10,
    *,
    bins: int = KL_BINS,
    n_permutations: int = 0,
    seed: int = 0,
    value_range: tuple[float, float] | None = None,
    histogram_range: str = "pooled",
) -> pd.DataFrame:
    """Coefficient distribution shifts (Gavrikov & Keuper Sec. 4.2, Fig. 1) with null baselines.

    Sparse filters are left out and every filter is scaled by its own max|F|. Comparisons:

    - ``robust_vs_normal``: filters of models with eps > 0 vs eps = 0;
    - ``normal_vs_normal`` and ``robust_vs_robust``: the models of one kind split into two halves
      by seed (lower floor(k/2) of the k distinct seeds vs the rest) — the shift expected from
      training noise alone; absent with fewer than two distinct seeds.

    Each comparison has one basis, fitted on all its (non-sparse, scaled) filters of every
    layer, whose explained variance ratios weight the axes in every scope. Scopes: ``overall``
    (all layers), ``first_layer`` (depth 0, the first conv of the model; no filters when it is
    not 3x3) and ``depth_bin`` j = 0..B-1 of the remaining layers: equal-width right-closed bins
    of normalised depth, B from :func:`choose_n_depth_bins` (deciles when every model has at
    least ``n_bins_depth`` layers after the first, fewer bins otherwise, so that no bin is empty
    for any model).

    With ``n_permutations > 0`` the ``robust_vs_normal`` rows get a permutation test: the
    robust/normal labels are shuffled across *models* (group sizes kept; basis and histogram
    ranges are fixed since they use all filters of the comparison); all C(M, M_robust)
    assignments are used when there are at most ``n_permutations`` of them (exact test, p =
    share of assignments with a shift >= the observed one, the observed included), else
    ``n_permutations`` random ones drawn with ``seed`` (p = (1 + #>=) / (1 + n)).

    Histogram range (recorded in the ``histogram_range`` column): ``"pooled"`` (default) bins
    each axis over the pooled (min, max) of the two compared samples on that axis;
    ``"global"`` is the authors' code: one (min, max) over all projected coefficients (all nine
    axes) of every model and layer in ``ds``, sparse filters included (scaled by their own
    max|F| like the others), projected on the comparison's basis; the same range for every
    scope of the comparison. The default differs because a global range spends most of the 70
    bins on the tails of the widest axis and of filters the comparison leaves out, so narrow
    axes get few occupied bins and a shift depends on which other models are in ``ds``.
    ``value_range`` (a fixed range for all axes) cannot be combined with ``"global"``.

    Small samples: the histogram estimator is biased upwards when a scope holds few filters
    (with 70 bins, a bin empty on one side only adds about p ln(p / 1.2e-7) ~ 15 p nats), so
    shifts are comparable only at similar filter counts; read them against the seed-half and
    permutation nulls, which carry the same bias. Compare models of one training dataset at a
    time (the paper's numbers are per dataset): subset ``ds`` first.

    Columns: ``comparison, group_a, group_b, scope, bin`` (nullable int), ``depth_lo, depth_hi,
    n_depth_bins, measure`` (``weighted_symmetric_kl_nats``), ``histogram_range, value,
    n_filters_a, n_filters_b, n_models_a, n_models_b, n_permutations, permutation_exact,
    p_value, null_mean, null_q95``
    (the last five empty/NaN where no permutation test ran).
    """
    if histogram_range not in HISTOGRAM_RANGES:
        raise ValueError(f"histogram_range must be one of {HISTOGRAM_RANGES}, got {histogram_range!r}")
    if histogram_range == "global" and value_range is not None:
        raise ValueError("value_range and histogram_range='global' both fix the histogram range; give one")
    every = _FilterArrays.from_dataset(ds)
    a = every.subset(~every.sparse)
    if a.model.size == 0:
        return pd.DataFrame(columns=SHIFT_COLUMNS)
    if histogram_range == "global":
        # every filter, sparse ones included, for the range; x_rows[i]: row of a's filter i in x
        x = scale_filters(every.coefficients)
        x_rows = np.flatnonzero(~every.sparse)
    else:
        x = scale_filters(a.coefficients)
        x_rows = np.arange(a.model.size)
    del every
    layers = pd.DataFrame({"model": a.model, "depth_index": a.depth_index, "n_conv": a.n_conv})
    n_depth = choose_n_depth_bins(layers, n_bins_depth)
    scopes = _scopes(a, n_depth)

    models, first_row = np.unique(a.model, return_index=True)
    model_robust = a.robust[first_row]
    model_seed = a.seed[first_row]
    model_code = np.searchsorted(models, a.model)

    comparisons = []
    if model_robust.any() and (~model_robust).any():
        comparisons.append(("robust_vs_normal", "robust", "normal", models[model_robust], models[~model_robust], True))
    for kind, is_kind in (("normal", ~model_robust), ("robust", model_robust)):
        halves = _seed_halves(models[is_kind], model_seed[is_kind])
        if halves is not None:
            ma, mb, sa, sb = halves
            comparisons.append((f"{kind}_vs_{kind}", f"{kind} seeds {','.join(map(str, sa))}",
                                f"{kind} seeds {','.join(map(str, sb))}", ma, mb, False))

    rows = []
    for name, group_a, group_b, models_a, models_b, permute in comparisons:
        in_a = np.isin(models, models_a)
        in_b = np.isin(models, models_b)
        comp_models = np.flatnonzero(in_a | in_b)
        in_comp = np.isin(model_code, comp_models)
        basis = filter_basis(x[x_rows[in_comp]], scale=False)
        comparison_range = value_range
        if histogram_range == "global":
            y_every = basis.project(x)  # the scopes' coefficients are rows of it: the range's ends are among them
            comparison_range = global_coefficient_range(y_every)
        labels, exact = (None, False)
        if permute and n_permutations > 0:
            labels, exact = _label_matrix(comp_models.size, int(in_a[comp_models].sum()), n_permutations, seed)
        for scope in scopes:
            sel = in_comp & scope["rows"]
            y = y_every[x_rows[sel]] if histogram_range == "global" else basis.project(x[x_rows[sel]])
            codes = model_code[sel]
            is_a = in_a[codes]
            row = {
                "comparison": name, "group_a": group_a, "group_b": group_b,
                "scope": scope["scope"], "bin": scope["bin"], "depth_lo": scope["depth_lo"],
                "depth_hi": scope["depth_hi"], "n_depth_bins": n_depth, "measure": SHIFT_MEASURE,
                "histogram_range": histogram_range,
                "n_filters_a": int(is_a.sum()), "n_filters_b": int((~is_a).sum()),
                "n_models_a": int(np.unique(codes[is_a]).size), "n_models_b": int(np.unique(codes[~is_a]).size),
                "n_permutations": 0, "permutation_exact": pd.NA, "p_value": np.nan,
                "null_mean": np.nan, "null_q95": np.nan,
            }
            if row["n_filters_a"] == 0 or row["n_filters_b"] == 0:
                rows.append({**row, "value": np.nan})
                continue
            lo, hi = _axis_ranges(y[is_a], y[~is_a], comparison_range)
            widths = (hi - lo) / bins
            per_model = np.stack([_axis_counts(y[codes == m], lo, hi, bins) for m in comp_models])
            observed = _shift_from_counts(per_model[in_a[comp_models]].sum(0),
                                          per_model[~in_a[comp_models]].sum(0),
                                          widths, basis.explained_variance_ratio)
            row["value"] = float(observed)
            if labels is not None:
                flat = per_model.reshape(per_model.shape[0], -1).astype(np.float64)
                counts_a = (labels.astype(np.float64) @ flat).reshape(-1, *per_model.shape[1:])
                counts_b = per_model.sum(0)[None] - counts_a
                with np.errstate(invalid="ignore", divide="ignore"):
                    null = _shift_from_counts(counts_a, counts_b, widths, basis.explained_variance_ratio)
                null = null[np.isfinite(null)]
                tol = 1e-12 * max(1.0, abs(observed))
                n_ge = int((null >= observed - tol).sum())
                row.update({
                    "n_permutations": int(null.size),
                    "permutation_exact": exact,
                    "p_value": (n_ge / null.size if exact else (1 + n_ge) / (1 + null.size)) if null.size else np.nan,
                    "null_mean": float(null.mean()) if null.size else np.nan,
                    "null_q95": float(np.quantile(null, 0.95)) if null.size else np.nan,
                })
            rows.append(row)
    df = pd.DataFrame(rows, columns=SHIFT_COLUMNS)
    df["bin"] = df["bin"].astype("Int64")
    df["permutation_exact"] = df["permutation_exact"].astype("boolean")
    return df
