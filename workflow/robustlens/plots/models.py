"""Figure of the models trained in the workflow: their training curves (loss, learning rate,
clean and robust validation accuracy per epoch), one line per model coloured by its eps, the
epoch whose weights were kept marked (rule figure_training_curves in models.smk)."""

from __future__ import annotations

import pandas as pd
from matplotlib import colormaps

from robustlens.plots.common import figure_size, new_figure, save

PANELS = [("loss", "training loss"), ("lr", "learning rate"), ("val_clean_accuracy", "clean validation accuracy"),
          ("val_robust_accuracy", "robust validation accuracy (training attack)")]


def plot_training_curves(curves: pd.DataFrame, paths: list[str], figure: dict, dpi: int) -> None:
    """Four panels against the epoch; a model's validation lines join only its validated
    epochs; a ring marks the kept epoch. Panels without any value (no validation split) say so."""
    if curves.empty:
        raise ValueError("no training curves to plot")
    fig = new_figure(figure_size(figure, (9, 6)), layout=None)
    axes = fig.subplots(2, 2, sharex=True)
    eps_values = sorted(curves["eps"].unique())
    cmap = colormaps["viridis"]
    colour = {e: cmap(i / max(1, len(eps_values) - 1)) for i, e in enumerate(eps_values)}
    for ax, (column, label) in zip(axes.flat, PANELS):
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch")
        if curves[column].notna().sum() == 0:
            ax.text(0.5, 0.5, "no validation split\n(training.validation)", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        for model, df in curves.groupby("model", sort=True):
            df = df.dropna(subset=[column]).sort_values("epoch")
            eps = df["eps"].iloc[0] if len(df) else None
            ax.plot(df["epoch"], df[column], color=colour.get(eps), lw=1, marker="." if len(df) < 30 else None,
                    label=f"eps {eps:g}" if eps is not None else None)
            kept = df[df["selected"].astype(bool)]
            ax.scatter(kept["epoch"], kept[column], s=40, facecolors="none", edgecolors=colour.get(eps), zorder=3)
        if column == "lr":
            ax.set_yscale("log")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.suptitle(figure.get("title", "training curves (ring: the kept epoch)"), fontsize=10)
    fig.tight_layout()
    fig.legend(unique.values(), unique.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(unique), 7),
               fontsize=8, frameon=False)
    save(fig, paths, dpi, tight=True)
