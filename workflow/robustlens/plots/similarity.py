"""Figures of the representational similarity suite: each measure vs eps per layer, and the
pairwise heatmaps. matplotlib only (no torch)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from robustlens.measures import MEASURES
from robustlens.plots.universality import _save
from robustlens.stats import bootstrap_over_seeds


def mean_with_seed_ci(df: pd.DataFrame, settings: dict) -> tuple[float, float, float]:
    """Mean of a same-eps group's pair values with a bootstrap-over-seeds percentile CI."""
    boot = df[["eps_a", "seed_a", "seed_b", "value"]].rename(columns={"eps_a": "eps"})
    if boot["seed_a"].nunique() + boot["seed_b"].nunique() < 3:
        return float(df["value"].mean()), float("nan"), float("nan")
    low, high, _ = bootstrap_over_seeds(boot, "mean", n_boot=settings["n_bootstrap"],
                                        seed=settings["seed"], ci=settings["ci"])
    return float(df["value"].mean()), float(low), float(high)


def plot_similarity_vs_eps(similarity: pd.DataFrame, paths: list[str], figure: dict, dpi: int, settings: dict) -> None:
    """One panel per (measure, layer): mean over same-eps pairs vs eps, with a bootstrap-over-
    seeds CI, one line per probe (values of made probes averaged over both models' images)."""
    df = similarity[similarity["eps_a"] == similarity["eps_b"]]
    df = df.groupby(["probe", "measure", "layer", "model_a", "model_b", "eps_a", "seed_a", "seed_b"], as_index=False)["value"].mean()
    measures = list(dict.fromkeys(df["measure"]))
    layers = list(dict.fromkeys(df["layer"]))
    fig, axes = plt.subplots(len(measures), len(layers), figsize=(figure.get("width", 12), figure.get("height", 9)),
                             squeeze=False, sharex=True)
    for i, measure in enumerate(measures):
        for j, layer in enumerate(layers):
            ax = axes[i][j]
            sub = df[(df["measure"] == measure) & (df["layer"] == layer)]
            if sub.empty:
                ax.axis("off")
                continue
            for k, (probe, group) in enumerate(sub.groupby("probe", sort=False)):
                stats = np.array([mean_with_seed_ci(g, settings) for _, g in group.groupby("eps_a")])
                eps = np.array(sorted(group["eps_a"].unique()))
                ax.plot(eps, stats[:, 0], marker="o", color=f"C{k}", label=probe)
                ax.fill_between(eps, stats[:, 1], stats[:, 2], color=f"C{k}", alpha=0.2)
            if i == 0:
                ax.set_title(layer, fontsize=9)
            if j == 0:
                arrow = "↑" if MEASURES[measure].higher_is_similar else "↓"
                ax.set_ylabel(f"{measure} ({arrow} similar)", fontsize=8)
            if i == len(measures) - 1:
                ax.set_xlabel("training eps")
            ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right")
    fig.suptitle(figure.get("title", "Similarity of same-eps models vs eps (mean, bootstrap-over-seeds CI)"))
    _save(fig, paths, dpi)


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
    fig, axes = plt.subplots(len(measures), len(layers), figsize=(figure.get("width", 12), figure.get("height", 5)), squeeze=False)
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
    _save(fig, paths, dpi)
