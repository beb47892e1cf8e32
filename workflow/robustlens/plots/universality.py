"""Figures of the universality study (Klabunde, Caspari, Lemmerich): agreement vs eps and CKA
by layer. matplotlib only (no torch): figure jobs start fast."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from robustlens.stats import pearson_eps_permutation


def _save(fig, paths: list[str], dpi: int) -> None:
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"CreationDate": None} if str(path).endswith(".pdf") else None)
    plt.close(fig)


def same_eps(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of pairs whose two models share eps."""
    return df[df["eps_a"] == df["eps_b"]]


def plot_agreement_vs_eps(predictive: pd.DataFrame, paths: list[str], figure: dict, dpi: int, probe: str = "natural") -> None:
    """Agreement of every same-eps pair (points) and the mean per eps (line), with Pearson r of
    eps vs agreement and its p-value from permuting eps labels across models."""
    df = same_eps(predictive[(predictive["measure"] == "agreement") & (predictive["probe"] == probe)])
    eps_by_model = dict(zip(df["model_a"], df["eps_a"])) | dict(zip(df["model_b"], df["eps_b"]))
    test = pearson_eps_permutation(df["value"].to_numpy(), df["model_a"].tolist(), df["model_b"].tolist(), eps_by_model, seed=0)
    fig, ax = plt.subplots(figsize=(figure.get("width", 5), figure.get("height", 4)))
    ax.scatter(df["eps_a"], df["value"], alpha=0.6, label="pair of seeds")
    mean = df.groupby("eps_a")["value"].mean()
    ax.plot(mean.index, mean.values, marker="o", color="black", label="mean")
    r, p = _get(test, "r"), _get(test, "p_value")
    ax.text(0.02, 0.04, f"Pearson r = {r:.3f}, p = {p:.3g} (permutation)", transform=ax.transAxes)
    ax.set_xlabel("training eps (L2)")
    ax.set_ylabel("agreement rate")
    ax.set_title(figure.get("title", f"Agreement of same-eps models ({probe} probe)"))
    ax.legend(loc="upper right")
    _save(fig, paths, dpi)


def plot_cka_by_layer(similarity: pd.DataFrame, paths: list[str], figure: dict, dpi: int, probe: str = "natural") -> None:
    """Mean CKA of same-eps pairs per layer, one line per eps (unbiased CKA when present)."""
    df = same_eps(similarity[similarity["probe"] == probe])
    measure = "cka_unbiased" if "cka_unbiased" in set(df["measure"]) else "cka"
    df = df[df["measure"] == measure]
    layers = list(dict.fromkeys(df["layer"]))
    fig, ax = plt.subplots(figsize=(figure.get("width", 6), figure.get("height", 4)))
    cmap = plt.get_cmap("viridis")
    eps_values = sorted(df["eps_a"].unique())
    for i, eps in enumerate(eps_values):
        sub = df[df["eps_a"] == eps].groupby("layer")["value"]
        mean, err = sub.mean().reindex(layers), sub.std().reindex(layers).fillna(0)
        ax.errorbar(np.arange(len(layers)), mean.values, yerr=err.values, marker="o", capsize=3,
                    color=cmap(i / max(1, len(eps_values) - 1)), label=f"eps = {eps:g}")
    ax.set_xticks(np.arange(len(layers)), layers, rotation=30)
    ax.set_ylabel(f"{'unbiased ' if measure == 'cka_unbiased' else ''}linear CKA (mean ± sd over pairs)")
    ax.set_title(figure.get("title", f"Similarity of same-eps models by layer ({probe} probe)"))
    ax.legend()
    _save(fig, paths, dpi)


def _get(result, key):
    return result[key] if isinstance(result, dict) else getattr(result, key)
