"""Figures of the filter study (Gavrikov & Keuper 2022): coefficient shift by depth, the PCA
filter basis, layer quality by depth, and first-layer filters of a robust and a normal model.

matplotlib's object-oriented API on an Agg canvas (no pyplot state, no torch). Every function
takes the tables (or the filter dataset) and one output path or a list of paths, writes the
file(s), and returns the Figure so callers and tests can inspect it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robustlens.filters import MAX_VARIANCE_ENTROPY, layer_weight, quality_by_depth
from robustlens.plots.common import PathLike, new_figure, save

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

ROBUST_COLOR = "C1"
NORMAL_COLOR = "C0"
QUALITY_LABELS = {
    "sparsity": "sparsity (share of sparse filters)",
    "variance_entropy": "variance entropy (log10)",
    "orthogonality": "orthogonality of filter banks",
}


def _bin_label(lo: float, hi: float) -> str:
    return f"({lo:.2g}, {hi:.2g}]"


def plot_kl_by_depth(
    shift: pd.DataFrame,
    path: PathLike,
    *,
    title: str | None = None,
    dpi: int = 150,
    size: tuple[float, float] = (9.0, 4.0),
) -> Figure:
    """Fig. 1 of the paper: weighted symmetric KL of robust vs normal filter coefficients for
    the first conv layer and each depth bin (bars), with the null baselines drawn: the
    seed-half shifts normal-vs-normal and robust-vs-robust (lines) and, when the table has a
    permutation test, the 95% quantile of the label-permutation null (dashed). ``shift``: the
    table of :func:`robustlens.filters.shift_table`. The overall shifts go in the legend."""
    df = shift[shift["scope"].isin(["first_layer", "depth_bin"])].copy()
    keys = df[["scope", "bin", "depth_lo", "depth_hi"]].drop_duplicates()
    keys = keys.assign(order=np.where(keys["scope"] == "first_layer", -1, keys["bin"].fillna(-1).astype(int)))
    keys = keys.sort_values("order").reset_index(drop=True)
    labels = ["first layer" if s == "first_layer" else _bin_label(lo, hi)
              for s, lo, hi in zip(keys["scope"], keys["depth_lo"], keys["depth_hi"])]
    position = {o: i for i, o in enumerate(keys["order"])}
    df["x"] = np.where(df["scope"] == "first_layer", -1, df["bin"].fillna(-1).astype(int))
    df["x"] = df["x"].map(position)

    overall = shift[shift["scope"] == "overall"].set_index("comparison")["value"]
    fig = new_figure(size)
    ax = fig.add_subplot()
    main = df[df["comparison"] == "robust_vs_normal"].sort_values("x")
    if not main.empty:
        label = "robust vs normal"
        if "robust_vs_normal" in overall:
            label += f" (overall {overall['robust_vs_normal']:.3g})"
        ax.bar(main["x"], main["value"], color=ROBUST_COLOR, alpha=0.8, label=label, zorder=2)
        if main["null_q95"].notna().any():
            ax.plot(main["x"], main["null_q95"], "k--", marker="_", label="permutation null, 95% quantile", zorder=3)
    for comparison, color, marker in (("normal_vs_normal", NORMAL_COLOR, "o"), ("robust_vs_robust", "C2", "s")):
        part = df[df["comparison"] == comparison].sort_values("x")
        if part.empty:
            continue
        label = comparison.replace("_vs_", " vs ").replace("_", " ") + " (seed halves"
        label += f", overall {overall[comparison]:.3g})" if comparison in overall else ")"
        ax.plot(part["x"], part["value"], color=color, marker=marker, label=label, zorder=4)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_xlabel("normalised convolution depth (bin)")
    ax.set_ylabel("weighted symmetric KL (nats)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title)
    save(fig, path, dpi)
    return fig


def plot_filter_basis(
    basis: pd.DataFrame,
    path: PathLike,
    *,
    dpi: int = 150,
    size: tuple[float, float] | None = None,
) -> Figure:
    """Fig. 2 of the paper: the nine basis vectors v_0..v_8 as 3x3 images (one row per filter
    set: all / robust / normal), each labelled with its explained variance ratio, on one shared
    symmetric colour scale. ``basis``: the table of :func:`robustlens.filters.basis_table`."""
    subsets = list(dict.fromkeys(basis["subset"]))
    n_comp = int(basis["component"].max()) + 1
    fig = new_figure(size or (1.2 * n_comp + 1.2, 1.5 * len(subsets) + 0.4))
    axes = np.atleast_2d(fig.subplots(len(subsets), n_comp, squeeze=False))
    vmax = float(np.abs(basis["value"]).max()) or 1.0
    image = None
    for r, subset in enumerate(subsets):
        part = basis[basis["subset"] == subset]
        for c in range(n_comp):
            comp = part[part["component"] == c].sort_values("tap")
            ax = axes[r, c]
            image = ax.imshow(comp["value"].to_numpy().reshape(3, 3), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{comp['explained_variance_ratio'].iloc[0]:.2f}", fontsize="small")
            if r == 0:
                ax.set_title(f"$v_{c}$")
            if c == 0:
                ax.set_ylabel(subset)
    fig.colorbar(image, ax=axes, shrink=0.8, label="basis vector weight")
    fig.suptitle("PCA basis of scaled 3x3 filters (below each: explained variance ratio)", fontsize="medium")
    save(fig, path, dpi)
    return fig


def plot_quality_by_depth(
    quality: pd.DataFrame,
    path: PathLike,
    *,
    n_bins: int = 10,
    dpi: int = 150,
    size: tuple[float, float] = (7.0, 8.0),
) -> Figure:
    """Fig. 7 of the paper: sparsity, variance entropy and orthogonality by depth as box plots,
    robust (eps > 0) next to normal (eps = 0). One box element per model: its layers' values in
    that depth group averaged as in :func:`robustlens.filters.quality_by_depth` (first conv layer,
    then the depth bins). ``quality``: the table of :func:`robustlens.filters.quality_table`."""
    df = quality_by_depth(quality, n_bins)
    groups = df[["group", "depth_lo", "depth_hi"]].drop_duplicates().sort_values("group")
    labels = {g: ("first layer" if g == 0 else _bin_label(lo, hi)) for g, lo, hi in groups.itertuples(index=False)}
    position = {g: i for i, g in enumerate(labels)}
    metrics = [m for m in QUALITY_LABELS if m in set(df["metric"])]
    fig = new_figure(size)
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    width = 0.35
    for ax, metric in zip(axes, metrics):
        part = df[df["metric"] == metric]
        for robust, offset, color, name in ((False, -width / 2, NORMAL_COLOR, "normal"), (True, width / 2, ROBUST_COLOR, "robust")):
            data, pos = [], []
            for g in labels:
                values = part[(part["group"] == g) & (part["robust"] == robust)]["value"].dropna().to_numpy()
                if values.size:
                    data.append(values)
                    pos.append(position[g] + offset)
            if data:
                box = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, manage_ticks=False,
                                 medianprops={"color": "black"})
                for patch in box["boxes"]:
                    patch.set(facecolor=color, alpha=0.6)
                ax.plot([], [], color=color, lw=6, alpha=0.6, label=name)
        if metric == "variance_entropy":
            ax.axhline(MAX_VARIANCE_ENTROPY, color="grey", ls=":", lw=1, label="log10(9)")
        ax.set_ylabel(QUALITY_LABELS[metric], fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    axes[-1].set_xticks(range(len(labels)), list(labels.values()), rotation=30, ha="right")
    axes[-1].set_xlabel("normalised convolution depth (bin); one box element per model")
    save(fig, path, dpi)
    return fig


def _filter_grid(ax, weight: np.ndarray):
    """All filters of one layer as a (c_out x c_in) grid of 3x3 tiles separated by gaps, each
    filter scaled by its own max|F|."""
    c_out, c_in = weight.shape[:2]
    den = np.abs(weight).max(axis=(2, 3), keepdims=True)
    den[den == 0] = 1.0
    tiles = weight / den
    canvas = np.full((c_out * 4 - 1, c_in * 4 - 1), np.nan)
    for o in range(c_out):
        for i in range(c_in):
            canvas[o * 4:o * 4 + 3, i * 4:i * 4 + 3] = tiles[o, i]
    image = ax.imshow(canvas, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([4 * i + 1 for i in range(c_in)], [str(i) for i in range(c_in)], fontsize="x-small")
    step = max(1, c_out // 16)
    ax.set_yticks([4 * o + 1 for o in range(0, c_out, step)], [str(o) for o in range(0, c_out, step)], fontsize="x-small")
    ax.set_xlabel("input channel")
    ax.set_ylabel("output channel")
    return image


def plot_first_layer_filters(
    ds: "xr.Dataset",
    path: PathLike,
    *,
    robust_model: str | None = None,
    normal_model: str | None = None,
    dpi: int = 150,
    size: tuple[float, float] | None = None,
) -> Figure:
    """Fig. 4 of the paper: every filter of the shallowest 3x3 conv layer of one robust and one
    normal model side by side (each filter scaled by its own max|F|, shared colour scale
    [-1, 1]). Defaults: the model with the largest eps, and the first normal model by name.
    The panel titles name the layer and its depth, so a model whose first conv is not 3x3
    is visible as such."""
    eps = pd.Series(np.asarray(ds["eps"].values), index=np.asarray(ds["model"].values).astype(object))
    per_model = eps.groupby(level=0).first().sort_index()
    if robust_model is None:
        robust = per_model[per_model > 0]
        if robust.empty:
            raise ValueError("no robust (eps > 0) model in the dataset")
        robust_model = str(robust.idxmax())
    if normal_model is None:
        normal = per_model[per_model == 0]
        if normal.empty:
            raise ValueError("no normal (eps = 0) model in the dataset")
        normal_model = str(normal.index[0])
    panels = []
    for model in (robust_model, normal_model):
        layer, weight = layer_weight(ds, model)
        rows = (np.asarray(ds["model"].values).astype(object) == model) & (np.asarray(ds["layer"].values).astype(object) == layer)
        depth = int(np.asarray(ds["depth_index"].values)[rows][0])
        panels.append((model, float(per_model[model]), layer, depth, weight))
    c_out, c_in = panels[0][4].shape[:2]
    c_in = max(c_in, panels[1][4].shape[1])
    fig = new_figure(size or (2 * (1.0 + 0.3 * c_in) + 1.2, 1.4 + 0.3 * c_out))
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, (model, eps_value, layer, depth, weight) in zip(axes, panels):
        image = _filter_grid(ax, weight)
        kind = "robust" if eps_value > 0 else "normal"
        ax.set_title(f"{kind}: {model} (eps={eps_value:g})\nlayer {layer}, depth index {depth}", fontsize="small")
    fig.colorbar(image, ax=axes, shrink=0.6, label="weight / max|F| of its filter")
    save(fig, path, dpi)
    return fig
