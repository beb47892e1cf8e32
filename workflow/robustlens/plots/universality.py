"""Figures of the universality study (Klabunde, Caspari, Lemmerich): agreement vs eps and CKA
by layer. The x of a pair follows the design (robustlens.universality): the eps of same-eps
pairs, or, with one model per eps, |eps_a - eps_b| and min(eps_a, eps_b) over all pairs.
matplotlib only (no torch): figure jobs start fast."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from robustlens.plots import save_figure
from robustlens.universality import X_LABEL, design_analyses, eps_correlation, pair_design


def _save(fig, paths: list[str], dpi: int) -> None:
    save_figure(fig, paths, dpi, bbox_inches="tight")


def _agreement_pairs(predictive: pd.DataFrame, probe: str | None = None, head: str | None = None) -> pd.DataFrame:
    """Agreement rows (of one probe and head setting when given), one value per (probe, head,
    pair): the mean over input sets and head seeds."""
    df = predictive[predictive["measure"] == "agreement"]
    if probe is not None:
        df = df[df["probe"] == probe]
    if head is not None:
        df = df[df["head"] == head]
    keys = ["probe", "head", "model_a", "model_b", "eps_a", "eps_b"]
    return df.groupby(keys, as_index=False, sort=True)["value"].mean()


def _require(df: pd.DataFrame, what: str) -> None:
    if df.empty:
        raise ValueError(f"no rows to plot: {what}")


def _r_text(sub: pd.DataFrame, x: str, design: str, settings: dict) -> str:
    """Pearson r of x vs value with the p-value of the universality table's test for the design
    (:func:`robustlens.universality.eps_correlation`, the same ``statistics`` settings), or why
    it is undefined."""
    stats, reasons, tests = eps_correlation(sub, settings, x, design=design)
    if not np.isfinite(stats["r"]):
        return f"r undefined: {reasons['r']}"
    p = f"p = {stats['p_value']:.3g} ({tests['p_value'].replace('_', ' ')})" if np.isfinite(stats["p_value"]) else "no p-value"
    return f"Pearson r = {stats['r']:.3f}, {p}"


def plot_agreement_vs_eps(predictive: pd.DataFrame, paths: list[str], figure: dict, dpi: int, settings: dict,
                          probe: str = "natural") -> None:
    """Agreement of every pair (points) and the mean per x (line), with Pearson r of x vs
    agreement and the p-value of the universality table's test (``settings``: the config's
    ``statistics``, so the printed p is the table's). x as in the universality
    table (:func:`robustlens.universality.design_analyses`): same-eps designs, one panel with the
    pair's eps; one model per eps, two panels: |eps_a - eps_b| and min(eps_a, eps_b)."""
    df = _agreement_pairs(predictive, probe, "original")
    _require(df, f"agreement with the original heads on the {probe!r} probe")
    design = pair_design(df)
    analyses = design_analyses(df, design)
    width = figure.get("width", 5) * (1 if len(analyses) == 1 else 1.8)
    fig, axes = plt.subplots(1, len(analyses), figsize=(width, figure.get("height", 4)), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, (x, sub) in zip(axes[0], analyses):
        ax.scatter(sub["x"], sub["value"], alpha=0.6, label="pair of models")
        mean = sub.groupby("x")["value"].mean()
        ax.plot(mean.index, mean.values, marker="o", color="black", label="mean")
        ax.text(0.02, 0.04, _r_text(sub, x, design, settings), transform=ax.transAxes)
        ax.set_xlabel(X_LABEL[x])
    axes[0][0].set_ylabel("agreement rate")
    axes[0][-1].legend(loc="upper right")
    pairs = "same-eps models" if design == "same_eps" else "all pairs of models"
    fig.suptitle(figure.get("title", f"Agreement of {pairs} ({probe} probe)"))
    _save(fig, paths, dpi)


def plot_cka_by_layer(similarity: pd.DataFrame, paths: list[str], figure: dict, dpi: int, probe: str = "natural") -> None:
    """Mean CKA per layer (unbiased CKA when present), one line per eps of the same-eps pairs;
    in designs with one model per eps (no two same-eps pairs of different eps), one line per
    smaller eps min(eps_a, eps_b) of all pairs."""
    df = similarity[similarity["probe"] == probe]
    measure = "cka_unbiased" if "cka_unbiased" in set(df["measure"]) else "cka"
    df = df[df["measure"] == measure]
    _require(df, f"{measure} on the {probe!r} probe")
    design = pair_design(df)
    x, df = design_analyses(df, design)[-1]  # same_eps: eps; all_pairs: min_eps
    df = df.groupby(["layer", "model_a", "model_b", "x"], as_index=False, sort=False)["value"].mean()
    layers = list(dict.fromkeys(similarity.loc[similarity["probe"] == probe, "layer"]))
    fig, ax = plt.subplots(figsize=(figure.get("width", 6), figure.get("height", 4)))
    cmap = plt.get_cmap("viridis")
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
    _save(fig, paths, dpi)


def plot_heads_agreement(predictive: pd.DataFrame, paths: list[str], figure: dict, dpi: int) -> None:
    """Agreement vs x with the original heads and with retrained heads (mean over head seeds and
    input sets), one panel per probe; one row per analysis of the design (same-eps pairs: x =
    eps; one model per eps: x = |eps_a - eps_b| and x = min(eps_a, eps_b))."""
    df = _agreement_pairs(predictive)
    _require(df, "agreement")
    analyses = design_analyses(df)
    probes = list(dict.fromkeys(df["probe"]))
    fig, axes = plt.subplots(len(analyses), len(probes), figsize=(figure.get("width", 9), figure.get("height", 4) * len(analyses)),
                             squeeze=False, sharey=True, layout="constrained")
    for row, (x, pairs) in enumerate(analyses):
        for ax, probe in zip(axes[row], probes):
            sub = pairs[pairs["probe"] == probe]
            for head, marker in (("original", "o"), ("retrained", "s")):
                per_pair = sub[sub["head"] == head]
                if per_pair.empty:
                    continue
                mean = per_pair.groupby("x")["value"].mean()
                ax.scatter(per_pair["x"], per_pair["value"], alpha=0.4, marker=marker)
                ax.plot(mean.index, mean.values, marker=marker, label=f"{head} heads")
            ax.set_title(f"{probe} probe", fontsize=9)
            ax.set_xlabel(X_LABEL[x])
        axes[row][0].set_ylabel("agreement rate")
    axes[0][-1].legend()
    fig.suptitle(figure.get("title", "Agreement before and after retraining the heads"))
    _save(fig, paths, dpi)


def plot_universality(table: pd.DataFrame, paths: list[str], figure: dict, dpi: int) -> None:
    """Pearson r of x (eps; or |eps_a - eps_b| and min eps, see the table's ``x``) vs each
    predictive measure, per probe and head setting; filled markers where the p-value of the
    table's test is below 0.05. r is a description (no interval: the table's slope interval is
    the calibrated one). An undefined r is listed with its reason."""
    _require(table, "the universality table is empty")
    keys = ["probe", "head", "measure", "x"]
    wide = (table.groupby([*keys, "statistic"], sort=False)["value"].mean().unstack("statistic")
            .reindex(columns=["r", "p_value"]).reset_index())
    measures = list(dict.fromkeys(wide["measure"]))
    several_x = wide["x"].nunique() > 1
    n_rows = int(wide.groupby("measure").size().max())
    height = max(figure.get("height", 4), 0.3 * n_rows + 1.5)
    fig, axes = plt.subplots(1, len(measures), figsize=(figure.get("width", 9), height), squeeze=False, sharey=True)
    for ax, measure in zip(axes[0], measures):
        sub = wide[wide["measure"] == measure].reset_index(drop=True)
        labels = [f"{r.probe}, {r.head}" + (f", {r.x}" if several_x else "") + ("" if np.isfinite(r.r) else " (r undefined)")
                  for r in sub.itertuples()]
        y = np.arange(len(sub))
        significant = (sub["p_value"] < 0.05).to_numpy()
        ax.hlines(y, 0, sub["r"].fillna(0), color="gray", lw=1)
        ax.scatter(sub["r"][significant], y[significant], color="C3", zorder=3, label="p < 0.05")
        ax.scatter(sub["r"][~significant], y[~significant], facecolor="white", edgecolor="C3", zorder=3,
                   label="p >= 0.05 or no p-value")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xlim(-1.05, 1.05)
        ax.set_title(measure)
        ax.set_xlabel("Pearson r (x, value)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(figure.get("title", "Correlation of robustness with predictive similarity (paper: r = -0.578, CIFAR-10)"))
    _save(fig, paths, dpi)


def _imshow_chw(ax, img) -> None:
    """Draw a (channel, y, x) image in [0, 1]: RGB for 3 channels, grey for 1."""
    img = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    if img.shape[0] == 3:
        ax.imshow(img.transpose(1, 2, 0))
    elif img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        raise ValueError(f"an image of {img.shape[0]} channels: only 1 (grey) or 3 (RGB) can be drawn")


def plot_inversions(dataset: dict, probes: dict[str, "xr.Dataset"], paths: list[str], figure: dict, dpi: int,
                    split: str = "test", n_examples: int = 6) -> None:
    """For each model: start images (another class), target images and the inverted images, with
    the final relative representation loss of each inversion. Images are (channel, y, x) in
    [0, 1]: three channels are drawn in colour (RGB), one in grey."""
    images = dataset[f"x_{split}"]
    fig, axes = plt.subplots(3 * len(probes), n_examples, figsize=(figure.get("width", 8), figure.get("height", 5)), squeeze=False)
    for m, (model, ds) in enumerate(probes.items()):
        for j in range(min(n_examples, ds.sizes["sample"])):
            start = images[int(ds["start_index"][j])]
            target = images[int(ds["target_index"][j])]
            inverted = ds["images"].values[j]
            for k, (img, name) in enumerate(((start, "start"), (target, "target"), (inverted, "inverted"))):
                ax = axes[3 * m + k][j]
                _imshow_chw(ax, img)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{model}\n{name}" if k == 0 else name, fontsize=6)
                if k == 2:
                    ax.set_xlabel(f"loss {float(ds['final_loss'][j]):.2f}", fontsize=6)
    fig.suptitle(figure.get("title", "Representation inversion (Engstrom et al. 2019)"))
    _save(fig, paths, dpi)
