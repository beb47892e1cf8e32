"""Figures of the transfer study: transfer accuracy vs the pretraining eps per task and method
(Salman et al. 2020, their Figs. 2-4), the AS score vs the relative loss gap of linear probes
(Nern et al., Table 4), Lemma 1's LHS against its RHS per task (Nern et al., Table 1), and how
often Thm 2's criterion is wrong with AS(x) from the AS attack alone versus the largest change
of every perturbation tried.

matplotlib's object-oriented API on an Agg canvas (no pyplot state, no torch). Every function
takes a table, one output path or a list of paths, and the figure settings, writes the file(s)
and returns the Figure. Values over several seeds of one eps are drawn as mean +- sd.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robustlens.plots.common import PathLike, figure_size, new_figure, save

METHOD_LABELS = {"lp": "LP", "ft": "FT", "lp_ft": "LP-FT"}
METHOD_COLORS = {"lp": "C0", "ft": "C1", "lp_ft": "C2"}
NORM_MARKERS = {"l2": "o", "linf": "s"}


def _ordered(values, order) -> list:
    known = [v for v in order if v in set(values)]
    return known + sorted(set(values) - set(known))


def _eps_positions(eps_values) -> dict[float, int]:
    """Equally spaced x positions for the (few, unevenly spaced) pretraining eps values."""
    return {e: i for i, e in enumerate(sorted(set(eps_values)))}


def plot_transfer_accuracy(transfer: pd.DataFrame, path: PathLike, figure: dict | None = None, dpi: int = 150) -> Figure:
    """Salman et al.'s figure: per task (columns) the clean (top row) and robust (bottom row)
    accuracy of LP, FT and LP-FT against the eps the model was pretrained with; regression
    tasks show the MSE instead (lower is better). ``transfer``: transfer.csv."""
    figure = figure or {}
    tasks = list(dict.fromkeys(transfer["task"]))
    fig = new_figure(figure_size(figure, (10, 6)))
    axes = fig.subplots(2, len(tasks), squeeze=False, sharex=True)
    pos = _eps_positions(transfer["eps"])
    for col, task in enumerate(tasks):
        df = transfer[transfer["task"] == task]
        regression = (df["task_kind"] == "regression").any()
        metrics = ("clean_mse", "robust_mse") if regression else ("clean_accuracy", "robust_accuracy")
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            part = df[df["metric"] == metric]
            attack = part[["attack_norm", "attack_eps"]].drop_duplicates()
            for method in _ordered(part["method"], METHOD_LABELS):
                stats = part[part["method"] == method].groupby("eps")["value"].agg(["mean", "std", "count"]).reset_index()
                x = stats["eps"].map(pos)
                ax.errorbar(x, stats["mean"], yerr=stats["std"].where(stats["count"] > 1), marker="o", ms=4, capsize=2,
                            color=METHOD_COLORS.get(method), label=METHOD_LABELS.get(method, method))
            what = "MSE" if regression else "accuracy"
            if row == 0:
                ax.set_title(task, fontsize="medium")
                ax.set_ylabel(f"clean {what}")
            else:
                norm, eps = (attack.iloc[0] if len(attack) else ("?", float("nan")))
                ax.set_ylabel(f"robust {what}\n({norm} eps={eps:g})")
                ax.set_xlabel("pretraining eps")
            if not regression:
                ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xticks(list(pos.values()), [f"{e:g}" for e in pos])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels), fontsize="small")
    if figure.get("title"):
        fig.suptitle(figure["title"])
    save(fig, path, dpi)
    return fig


def plot_sensitivity_vs_gap(bounds: pd.DataFrame, path: PathLike, figure: dict | None = None, dpi: int = 150) -> Figure:
    """Nern et al.'s Table 4 as a scatter: per attack norm (panels), the AS score of the
    pretrained representation on each classification task's test inputs (x) against the
    relative cross-entropy gap (robust CE - CE) / CE of the linear probe (y); colour: the
    pretraining eps, marker: the task. ``bounds``: bounds.csv."""
    figure = figure or {}
    df = bounds[(bounds["method"] == "lp") & (bounds["task_kind"] == "classification")]
    wide = df.pivot_table(index=["model", "eps", "task", "attack_norm", "attack_eps"], columns="metric", values="value").reset_index()
    norms = _ordered(wide["attack_norm"], NORM_MARKERS) or ["l2"]
    fig = new_figure(figure_size(figure, (9, 4)))
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    tasks = list(dict.fromkeys(df["task"]))
    markers = dict(zip(tasks, "osD^vP*Xh<>"))
    eps_values = sorted(wide["eps"].unique()) if len(wide) else [0.0]
    cmap = _eps_cmap()
    norm_eps = max(eps_values) or 1.0
    for ax, norm in zip(axes, norms):
        part = wide[wide["attack_norm"] == norm]
        for task in tasks:
            t = part[part["task"] == task]
            ax.scatter(t["rhs_as"], t["relative_loss_gap"], c=[cmap(e / norm_eps) for e in t["eps"]], marker=markers[task],
                       edgecolors="k", linewidths=0.5, s=40, label=task)
        eps_ball = part["attack_eps"].iloc[0] if len(part) else float("nan")
        ax.set_title(f"{norm}, eps={eps_ball:g}", fontsize="medium")
        ax.set_xlabel("AS score of the pretrained representation")
        ax.set_ylabel("relative CE gap of the linear probe")
        if (part["relative_loss_gap"] > 0).all() and len(part):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    # legends: tasks (markers) and pretraining eps (colours)
    from matplotlib.lines import Line2D

    task_handles = [Line2D([], [], ls="", marker=markers[t], color="0.5", mec="k", label=t) for t in tasks]
    eps_handles = [Line2D([], [], ls="", marker="o", color=cmap(e / norm_eps), mec="k", label=f"eps {e:g}") for e in eps_values]
    axes[-1].legend(handles=task_handles + eps_handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if figure.get("title"):
        fig.suptitle(figure["title"])
    save(fig, path, dpi)
    return fig


def _eps_cmap():
    from matplotlib import colormaps

    return colormaps["viridis"]


def plot_bounds(bounds: pd.DataFrame, path: PathLike, figure: dict | None = None, dpi: int = 150) -> Figure:
    """Lemma 1 per task (panels): LHS = (adversarial loss - clean loss) / (L ||W||) against the
    RHS, the AS score from the AS attack (filled markers), and ``rhs_best``, the larger of the
    AS and loss attacks' representation change per input (open markers), for every model,
    method (colour) and attack norm (marker), on log axes with the diagonal LHS = RHS: the
    lemma puts every pair below it. ``bounds``: bounds.csv."""
    figure = figure or {}
    wide = bounds.pivot_table(index=["model", "eps", "task", "method", "attack_norm", "attack_eps"], columns="metric",
                              values="value").reset_index()
    tasks = list(dict.fromkeys(bounds["task"]))
    n_cols = min(len(tasks), 4)
    n_rows = int(np.ceil(len(tasks) / n_cols))
    fig = new_figure(figure_size(figure, (10, 6)))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    positive = wide[["lhs", "rhs_as", "rhs_best"]].to_numpy().ravel()
    positive = positive[np.isfinite(positive) & (positive > 0)]
    lo, hi = (positive.min() / 2, positive.max() * 2) if len(positive) else (1e-3, 10)
    for ax, task in zip(axes.ravel(), tasks):
        part = wide[wide["task"] == task]
        for (method, norm), g in part.groupby(["method", "attack_norm"], sort=False):
            color, marker = METHOD_COLORS.get(method, "k"), NORM_MARKERS.get(norm, "^")
            ax.scatter(g["rhs_as"], g["lhs"].clip(lower=lo), color=color, marker=marker, s=28, edgecolors="k", linewidths=0.4)
            ax.scatter(g["rhs_best"], g["lhs"].clip(lower=lo), facecolors="none", edgecolors=color, marker=marker, s=28, linewidths=0.8)
        violated = part[part["lhs"] > part["rhs_as"]]
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(f"{task}" + (f" ({len(violated)} above the diagonal)" if len(violated) else ""), fontsize="medium")
        ax.grid(alpha=0.3, which="major")
    for ax in axes.ravel()[len(tasks):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=METHOD_COLORS[m], label=METHOD_LABELS[m]) for m in METHOD_LABELS
               if m in set(wide["method"])]
    handles += [Line2D([], [], ls="", marker=NORM_MARKERS[n], color="0.5", label=n) for n in NORM_MARKERS if n in set(wide["attack_norm"])]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize="small")
    fig.supxlabel("RHS: AS score (filled), largest representation change of any attack (open)", fontsize="medium")
    fig.supylabel("LHS: (adversarial loss - clean loss) / (L ||W||)", fontsize="medium")
    if figure.get("title"):
        fig.suptitle(figure["title"])
    save(fig, path, dpi)
    return fig


def plot_thm2(bounds: pd.DataFrame, path: PathLike, figure: dict | None = None, dpi: int = 150) -> Figure:
    """Thm 2 per attack norm (panels): among the inputs that fulfil the criterion (normalised
    margin > AS(x)), the fraction that the loss attack still breaks (1 - robust_among_fulfilled),
    against the pretraining eps (equally spaced), for every classification task and method
    (colour). Filled: AS(x) from the AS attack alone (the paper's empirical certificate; above 0
    it was wrong: the AS attack found a smaller change than the loss attack's own perturbation).
    Open: AS(x) the largest change of every perturbation tried in the ball
    (robust_among_fulfilled_best), which the theorem puts at 0. Rows where no input fulfils a
    criterion have no marker. ``bounds``: bounds.csv."""
    figure = figure or {}
    df = bounds[bounds["task_kind"] == "classification"]
    wide = df.pivot_table(index=["model", "eps", "task", "method", "attack_norm", "attack_eps"], columns="metric",
                          values="value").reset_index()
    for col in ("robust_among_fulfilled", "robust_among_fulfilled_best"):
        if col not in wide:
            wide[col] = np.nan
    norms = _ordered(wide["attack_norm"], NORM_MARKERS) or ["l2"]
    fig = new_figure(figure_size(figure, (10, 4)))
    axes = fig.subplots(1, len(norms), squeeze=False, sharey=True)[0]
    positions = _eps_positions(wide["eps"]) if len(wide) else {0.0: 0}
    tasks = list(dict.fromkeys(df["task"]))
    methods = _ordered(wide["method"], METHOD_LABELS)
    n_offsets = max(1, len(tasks) * len(methods))
    for ax, norm in zip(axes, norms):
        part = wide[wide["attack_norm"] == norm]
        for i, ((task, method), g) in enumerate(part.groupby(["task", "method"], sort=False)):
            x = np.array([positions[e] for e in g["eps"]]) + 0.5 * (i / n_offsets - 0.5)
            color = METHOD_COLORS.get(method, "k")
            ax.scatter(x, 1 - g["robust_among_fulfilled"], color=color, marker="o", s=26, edgecolors="k", linewidths=0.4)
            ax.scatter(x, 1 - g["robust_among_fulfilled_best"], facecolors="none", edgecolors=color, marker="D", s=30,
                       linewidths=0.9)
        wrong = int((part["robust_among_fulfilled"] < 1).sum())
        eps_ball = part["attack_eps"].iloc[0] if len(part) else float("nan")
        ax.set_title(f"{norm}, eps={eps_ball:g}: AS-only certificate wrong in {wrong} of "
                     f"{int(part['robust_among_fulfilled'].notna().sum())} rows", fontsize="medium")
        ax.set_xticks(list(positions.values()), [f"{e:g}" for e in positions])
        ax.set_xlabel("pretraining eps")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fulfilled inputs broken by the loss attack")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker="o", color=METHOD_COLORS.get(m, "k"), label=METHOD_LABELS.get(m, m)) for m in methods]
    handles += [Line2D([], [], ls="", marker="o", color="0.5", mec="k", label="AS(x): AS attack"),
                Line2D([], [], ls="", marker="D", mfc="none", mec="0.3", label="AS(x): largest change tried")]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize="small")
    if figure.get("title"):
        fig.suptitle(figure["title"])
    save(fig, path, dpi)
    return fig
