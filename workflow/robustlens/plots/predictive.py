"""Figures of the predictive stage (predictive.smk; the universality study of Klabunde,
Caspari, Lemmerich): agreement vs eps, agreement before and after retraining the heads (both
from predictive.csv) and the headline correlations (universality.csv). The x of a pair follows
the design (robustlens.universality): the eps of same-eps pairs, or, with one model per eps,
|eps_a - eps_b| and min(eps_a, eps_b) over all pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustlens.plots.common import new_figure, require_rows, save
from robustlens.universality import X_LABEL, design_analyses, eps_correlation, pair_design


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
    require_rows(df, f"agreement with the original heads on the {probe!r} probe")
    design = pair_design(df)
    analyses = design_analyses(df, design)
    width = figure.get("width", 5) * (1 if len(analyses) == 1 else 1.8)
    fig = new_figure((width, figure.get("height", 4)))
    axes = fig.subplots(1, len(analyses), squeeze=False, sharey=True)
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
    save(fig, paths, dpi, tight=True)


def plot_heads_agreement(predictive: pd.DataFrame, paths: list[str], figure: dict, dpi: int) -> None:
    """Agreement vs x with the original heads and with retrained heads (mean over head seeds and
    input sets), one panel per probe; one row per analysis of the design (same-eps pairs: x =
    eps; one model per eps: x = |eps_a - eps_b| and x = min(eps_a, eps_b))."""
    df = _agreement_pairs(predictive)
    require_rows(df, "agreement")
    analyses = design_analyses(df)
    probes = list(dict.fromkeys(df["probe"]))
    fig = new_figure((figure.get("width", 9), figure.get("height", 4) * len(analyses)))
    axes = fig.subplots(len(analyses), len(probes), squeeze=False, sharey=True)
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
    save(fig, paths, dpi, tight=True)


def plot_universality(table: pd.DataFrame, paths: list[str], figure: dict, dpi: int) -> None:
    """Pearson r of x (eps; or |eps_a - eps_b| and min eps, see the table's ``x``) vs each
    predictive measure, per probe and head setting; filled markers where the p-value of the
    table's test is below 0.05. r is a description (no interval: the table's slope interval is
    the calibrated one). An undefined r is listed with its reason."""
    require_rows(table, "the universality table is empty")
    keys = ["probe", "head", "measure", "x"]
    wide = (table.groupby([*keys, "statistic"], sort=False)["value"].mean().unstack("statistic")
            .reindex(columns=["r", "p_value"]).reset_index())
    measures = list(dict.fromkeys(wide["measure"]))
    several_x = wide["x"].nunique() > 1
    n_rows = int(wide.groupby("measure").size().max())
    height = max(figure.get("height", 4), 0.3 * n_rows + 1.5)
    fig = new_figure((figure.get("width", 9), height), layout=None)
    axes = fig.subplots(1, len(measures), squeeze=False, sharey=True)
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
    save(fig, paths, dpi, tight=True)
