"""Depth of conv layers and depth bins (Gavrikov & Keuper, CVPR-W 2022: the coefficient shift
by depth of Sec. 4.2, Fig. 3, and the layer quality by depth of Sec. 4.3, Fig. 7; no equation of
its own).

``depth_index`` counts all ``nn.Conv2d`` layers in forward order, 0-based;
``normalised_depth = depth_index / (n_conv - 1)``; depth bins are equal-width, right-closed
intervals of normalised depth and the first conv layer falls in none (see
:mod:`robustlens.filters`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

QUALITY_BY_DEPTH_COLUMNS = [
    "model", "eps", "robust", "seed", "group", "scope", "depth_lo", "depth_hi", "n_depth_bins",
    "n_layers", "metric", "value",
]
#: Weight of each layer when averaging a metric over the layers of a depth group (authors'
#: metric_comparison notebook: filters for sparsity and entropy, output channels for
#: orthogonality); None = sum.
QUALITY_WEIGHTS = {"sparsity": "n_filters", "variance_entropy": "n_filters", "orthogonality": "n_banks", "n_zero_banks": None}


def normalised_depth(depth_index: int, n_conv: int) -> float:
    """depth_index / (n_conv - 1); 0.0 for a model with a single conv layer."""
    return float(depth_index) / (n_conv - 1) if n_conv > 1 else 0.0


def depth_bin_index(depth_index: Any, n_conv: Any, n_bins: int) -> np.ndarray:
    """0-based depth bin of each layer: bin j holds normalised depths in ``(j/B, (j+1)/B]``
    (right-closed, as ``pd.cut``); -1 for the first conv layer (depth 0). Integer arithmetic,
    so a layer on a bin edge is never misplaced by rounding: j = ceil(d * B / (n - 1)) - 1."""
    d = np.asarray(depth_index, dtype=np.int64)
    den = np.asarray(n_conv, dtype=np.int64) - 1
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    safe = np.maximum(den, 1)
    j = (d * n_bins + safe - 1) // safe - 1
    return np.where((d <= 0) | (den <= 0), -1, j)


def depth_bin_edges(n_bins: int) -> np.ndarray:
    """Edges 0, 1/B, ..., 1 of the B equal-width depth bins."""
    return np.linspace(0.0, 1.0, n_bins + 1)


def choose_n_depth_bins(layers: pd.DataFrame, n_bins: int = 10) -> int:
    """How many equal-width depth bins to use for the layers after the first.

    ``layers``: one row per 3x3 layer with columns ``model``, ``depth_index``, ``n_conv``
    (duplicates are fine). Start from ``min(n_bins, fewest layers after the first among the
    models)`` — deciles when every model has at least ``n_bins`` such layers — and lower B until
    *every model* has at least one layer in *every* bin (skipped 1x1 convs make the 3x3 layers
    unevenly spaced). Per-model coverage keeps every bin non-empty for any split of the models
    (robust/normal, seed halves, permuted labels). 0 when some model has no layer after the
    first.
    """
    df = layers[["model", "depth_index", "n_conv"]].drop_duplicates()
    df = df[df["depth_index"] > 0]
    all_models = layers["model"].unique()
    if df.empty or df["model"].nunique() < len(all_models):
        return 0
    counts = df.groupby("model").size()
    b = int(min(n_bins, counts.min()))
    while b > 1:
        bins = depth_bin_index(df["depth_index"].to_numpy(), df["n_conv"].to_numpy(), b)
        covered = pd.DataFrame({"model": df["model"].to_numpy(), "bin": bins}).groupby("model")["bin"].nunique()
        if (covered == b).all():
            break
        b -= 1
    return b


def quality_by_depth(quality: pd.DataFrame, n_bins: int = 10) -> pd.DataFrame:
    """Layer quality per model and depth group, as in the paper's Fig. 7 (authors'
    ``metric_comparison`` notebook): group 0 = the first conv layer (scope ``first_layer``),
    groups 1..B = the equal-width depth bins of the remaining layers (scope ``depth_bin``, B from
    :func:`choose_n_depth_bins`); per model and group the layers' values averaged with weights
    :data:`QUALITY_WEIGHTS` (sparsity and variance entropy by number of filters, orthogonality by
    number of banks; ``n_zero_banks`` summed); NaN layer values are left out.

    ``quality``: the table of :func:`quality_table`. Columns: ``model, eps, robust, seed, group,
    scope, depth_lo, depth_hi, n_depth_bins, n_layers, metric, value``.
    """
    if quality.empty:
        return pd.DataFrame(columns=QUALITY_BY_DEPTH_COLUMNS)
    n_depth = choose_n_depth_bins(quality, n_bins)
    q = quality.copy()
    if n_depth > 0:
        q["group"] = depth_bin_index(q["depth_index"].to_numpy(), q["n_conv"].to_numpy(), n_depth) + 1
    else:
        q["group"] = np.where(q["depth_index"].to_numpy() == 0, 0, -1)
    q = q[q["group"] >= 0]
    edges = depth_bin_edges(max(n_depth, 1))
    rows = []
    for (model, group, metric), part in q.groupby(["model", "group", "metric"], sort=True):
        weight_col = QUALITY_WEIGHTS.get(metric, "n_filters")
        values = part["value"].to_numpy(dtype=np.float64)
        ok = np.isfinite(values)
        if weight_col is None:
            value = float(values[ok].sum())
        else:
            weights = part[weight_col].to_numpy(dtype=np.float64)[ok]
            value = float((values[ok] * weights).sum() / weights.sum()) if weights.sum() > 0 else np.nan
        first = part.iloc[0]
        rows.append({
            "model": model, "eps": first["eps"], "robust": first["robust"], "seed": first["seed"],
            "group": int(group), "scope": "first_layer" if group == 0 else "depth_bin",
            "depth_lo": 0.0 if group == 0 else float(edges[group - 1]),
            "depth_hi": 0.0 if group == 0 else float(edges[group]),
            "n_depth_bins": n_depth, "n_layers": int(len(part)), "metric": metric, "value": value,
        })
    return pd.DataFrame(rows, columns=QUALITY_BY_DEPTH_COLUMNS)
