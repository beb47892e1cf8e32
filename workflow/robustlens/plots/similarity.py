"""Figures of the similarity stage (similarity.smk): CKA by layer and each measure vs eps per
layer (from similarity.csv; x as in robustlens.universality: the eps of same-eps pairs, or min
eps and eps distance of all pairs), and the pairwise heatmaps (similarity_matrix.csv)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps

from robustlens.measures import MEASURES
from robustlens.plots.common import figure_size, new_figure, require_rows, save
from robustlens.universality import X_LABEL, design_analyses, pair_design


def plot_cka_by_layer(similarity: pd.DataFrame, paths: list[str], figure: dict, dpi: int, probe: str = "natural") -> None:
    """Mean CKA per layer (unbiased CKA when present), one line per eps of the same-eps pairs;
    in designs with one model per eps (no two same-eps pairs of different eps), one line per
    smaller eps min(eps_a, eps_b) of all pairs."""
    df = similarity[similarity["probe"] == probe]
    measure = "cka_unbiased" if "cka_unbiased" in set(df["measure"]) else "cka"
    df = df[df["measure"] == measure]
    require_rows(df, f"{measure} on the {probe!r} probe")
    design = pair_design(df)
    x, df = design_analyses(df, design)[-1]  # same_eps: eps; all_pairs: min_eps
    df = df.groupby(["layer", "model_a", "model_b", "x"], as_index=False, sort=False)["value"].mean()
    layers = list(dict.fromkeys(similarity.loc[similarity["probe"] == probe, "layer"]))
    fig = new_figure(figure_size(figure, (6, 4)), layout=None)
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    x_values = sorted(df["x"].unique())
    name = "eps" if x == "eps" else "min eps"
    for i, value in enumerate(x_values):
        sub = df[df["x"] == value].groupby("layer")["value"]
        mean, err = sub.mean().reindex(layers), sub.std().reindex(layers).fillna(0)
        ax.errorbar(np.arange(len(layers)), mean.values, yerr=err.values, marker="o", capsize=3,
                    color=cmap(i / max(1, len(x_values) - 1)), label=f"{name} = {value:g}")
    ax.set_xticks(np.arange(len(layers)), layers, rotation=30)
    ax.set_ylabel(f"{'unbiased ' if measure == 'cka_unbiased' else ''}linear CKA (mean ± sd over pairs)")
    pairs = "same-eps models" if design == "same_eps" else "all pairs, by their smaller eps"
    ax.set_title(figure.get("title", f"Similarity of {pairs} by layer ({probe} probe)"))
    ax.legend(fontsize=7)
    save(fig, paths, dpi, tight=True)


def mean_and_range(df: pd.DataFrame) -> tuple[float, float, float]:
    """Mean, smallest and largest pair value of a group (a description of the spread: no
    interval is claimed; the tables report the calibrated slope interval of the eps trend)."""
    values = df["value"].to_numpy(dtype=float)
    return float(values.mean()), float(values.min()), float(values.max())


def plot_similarity_vs_eps(similarity: pd.DataFrame, paths: list[str], figure: dict, dpi: int) -> None:
    """One panel per (measure, layer): the mean pair value vs x with the range of the pair
    values (band; with 2-5 seeds a bootstrap interval of the mean does not hold its level), one
    colour per probe (values of made probes averaged over both models' images). x follows the
    design (:func:`robustlens.universality.design_analyses`): the eps of same-eps pairs (solid
    lines); with one model per eps, all pairs against min(eps_a, eps_b) (solid) and
    |eps_a - eps_b| (dashed)."""
    keys = ["probe", "measure", "layer", "model_a", "model_b", "eps_a", "eps_b", "seed_a", "seed_b"]
    values = similarity.groupby(keys, as_index=False, sort=False)["value"].mean()
    if values.empty:
        raise ValueError("no rows to plot: the similarity table is empty")
    design = pair_design(values)
    analyses = design_analyses(values, design)[::-1]  # all_pairs: min_eps (solid) first
    measures = list(dict.fromkeys(values["measure"]))
    layers = list(dict.fromkeys(values["layer"]))
    fig = new_figure(figure_size(figure, (12, 9)), layout=None)
    axes = fig.subplots(len(measures), len(layers), squeeze=False, sharex=True)
    for i, measure in enumerate(measures):
        for j, layer in enumerate(layers):
            ax = axes[i][j]
            for style, (x, pairs) in zip(("-", "--"), analyses):
                sub = pairs[(pairs["measure"] == measure) & (pairs["layer"] == layer)]
                for k, (probe, group) in enumerate(sub.groupby("probe", sort=False)):
                    xs, groups = zip(*sorted(group.groupby("x")))
                    stats = np.array([mean_and_range(g) for g in groups])
                    label = probe if design == "same_eps" else f"{probe}, {X_LABEL[x]}"
                    ax.plot(xs, stats[:, 0], marker="o", ls=style, color=f"C{k}", label=label)
                    ax.fill_between(xs, stats[:, 1], stats[:, 2], color=f"C{k}", alpha=0.15)
            if not ax.lines:
                ax.axis("off")
                continue
            if i == 0:
                ax.set_title(layer, fontsize=9)
            if j == 0:
                arrow = "↑" if MEASURES[measure].higher_is_similar else "↓"
                ax.set_ylabel(f"{measure} ({arrow} similar)", fontsize=8)
            if i == len(measures) - 1:
                ax.set_xlabel("training eps" if design == "same_eps" else "eps")
            ax.tick_params(labelsize=7)
    handles, labels = next(ax for ax in axes.ravel() if ax.lines).get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(labels)))
    pairs = "same-eps models vs eps" if design == "same_eps" else "all pairs vs min eps (solid) and eps distance (dashed)"
    fig.suptitle(figure.get("title", f"Similarity of {pairs} (mean and range of the pair values)"))
    save(fig, paths, dpi, tight=True)


def plot_similarity_heatmaps(matrix: pd.DataFrame, paths: list[str], figure: dict, dpi: int) -> None:
    """Pairwise heatmaps: one panel per (measure, layer), models ordered by eps then seed."""
    models = (
        pd.concat([matrix[["model_a", "eps_a", "seed_a"]].set_axis(["model", "eps", "seed"], axis=1),
                   matrix[["model_b", "eps_b", "seed_b"]].set_axis(["model", "eps", "seed"], axis=1)])
        .drop_duplicates("model").sort_values(["eps", "seed"])
    )
    order = {m: i for i, m in enumerate(models["model"])}
    measures = list(dict.fromkeys(matrix["measure"]))
    layers = list(dict.fromkeys(matrix["layer"]))
    fig = new_figure(figure_size(figure, (12, 5)), layout=None)
    axes = fig.subplots(len(measures), len(layers), squeeze=False)
    for i, measure in enumerate(measures):
        for j, layer in enumerate(layers):
            ax = axes[i][j]
            sub = matrix[(matrix["measure"] == measure) & (matrix["layer"] == layer)]
            grid = np.full((len(order), len(order)), np.nan)
            for r in sub.itertuples():
                grid[order[r.model_a], order[r.model_b]] = grid[order[r.model_b], order[r.model_a]] = r.value
            image = ax.imshow(grid, cmap="viridis" if MEASURES[measure].higher_is_similar else "viridis_r")
            ticks = [f"{e:g}" for e in models["eps"]]
            ax.set_xticks(range(len(order)), ticks, fontsize=5, rotation=90)
            ax.set_yticks(range(len(order)), ticks, fontsize=5)
            ax.set_title(f"{measure}, {layer}", fontsize=8)
            fig.colorbar(image, ax=ax, shrink=0.7)
    fig.suptitle(figure.get("title", "Pairwise similarity of all models (ticks: training eps)"))
    save(fig, paths, dpi, tight=True)
