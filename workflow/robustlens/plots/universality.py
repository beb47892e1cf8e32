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
    df = same_eps(predictive[(predictive["measure"] == "agreement") & (predictive["probe"] == probe)
                             & (predictive["head"] == "original")])
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


def plot_heads_agreement(predictive: pd.DataFrame, paths: list[str], figure: dict, dpi: int) -> None:
    """Agreement of same-eps pairs vs eps with the original heads and with retrained heads
    (mean over head seeds and input sets), one panel per probe."""
    df = same_eps(predictive[predictive["measure"] == "agreement"])
    probes = list(dict.fromkeys(df["probe"]))
    fig, axes = plt.subplots(1, len(probes), figsize=(figure.get("width", 9), figure.get("height", 4)), squeeze=False, sharey=True)
    for ax, probe in zip(axes[0], probes):
        sub = df[df["probe"] == probe]
        for head, marker in (("original", "o"), ("retrained", "s")):
            per_pair = sub[sub["head"] == head].groupby(["model_a", "model_b", "eps_a"], as_index=False)["value"].mean()
            mean = per_pair.groupby("eps_a")["value"].mean()
            ax.scatter(per_pair["eps_a"], per_pair["value"], alpha=0.4, marker=marker)
            ax.plot(mean.index, mean.values, marker=marker, label=f"{head} heads")
        ax.set_title(f"{probe} probe")
        ax.set_xlabel("training eps (L2)")
    axes[0][0].set_ylabel("agreement rate of same-eps pairs")
    axes[0][-1].legend()
    fig.suptitle(figure.get("title", "Agreement before and after retraining the heads"))
    _save(fig, paths, dpi)


def plot_universality(table: pd.DataFrame, paths: list[str], figure: dict, dpi: int) -> None:
    """Pearson r of eps vs each predictive measure with its bootstrap CI, per probe and head
    setting; filled markers where the permutation p-value is below 0.05."""
    wide = table.pivot_table(index=["probe", "head", "measure"], columns="statistic", values="value").reset_index()
    measures = list(dict.fromkeys(wide["measure"]))
    fig, axes = plt.subplots(1, len(measures), figsize=(figure.get("width", 9), figure.get("height", 4)), squeeze=False, sharey=True)
    for ax, measure in zip(axes[0], measures):
        sub = wide[wide["measure"] == measure].reset_index(drop=True)
        labels = [f"{r.probe}\n{r.head}" for r in sub.itertuples()]
        y = np.arange(len(sub))
        err = np.vstack([sub["r"] - sub["ci_low"], sub["ci_high"] - sub["r"]]).clip(min=0)
        ax.errorbar(sub["r"], y, xerr=np.nan_to_num(err), fmt="none", ecolor="gray", capsize=3)
        significant = sub["p_value"] < 0.05
        ax.scatter(sub["r"][significant], y[significant], color="C3", zorder=3, label="p < 0.05")
        ax.scatter(sub["r"][~significant], y[~significant], facecolor="white", edgecolor="C3", zorder=3, label="p >= 0.05")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xlim(-1.05, 1.05)
        ax.set_title(measure)
        ax.set_xlabel("Pearson r (eps, value)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(figure.get("title", "Correlation of robustness with predictive similarity (paper: r = -0.578, CIFAR-10)"))
    _save(fig, paths, dpi)


def plot_inversions(dataset: dict, probes: dict[str, "xr.Dataset"], paths: list[str], figure: dict, dpi: int,
                    split: str = "test", n_examples: int = 6) -> None:
    """For each model: start images (another class), target images and the inverted images, with
    the final relative representation loss of each inversion."""
    images = dataset[f"x_{split}"]
    fig, axes = plt.subplots(3 * len(probes), n_examples, figsize=(figure.get("width", 8), figure.get("height", 5)), squeeze=False)
    for m, (model, ds) in enumerate(probes.items()):
        for j in range(min(n_examples, ds.sizes["sample"])):
            start = images[int(ds["start_index"][j])][0]
            target = images[int(ds["target_index"][j])][0]
            inverted = ds["images"].values[j][0]
            for k, (img, name) in enumerate(((start, "start"), (target, "target"), (inverted, "inverted"))):
                ax = axes[3 * m + k][j]
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{model}\n{name}" if k == 0 else name, fontsize=6)
                if k == 2:
                    ax.set_xlabel(f"loss {float(ds['final_loss'][j]):.2f}", fontsize=6)
    fig.suptitle(figure.get("title", "Representation inversion (Engstrom et al. 2019)"))
    _save(fig, paths, dpi)


def _get(result, key):
    return result[key] if isinstance(result, dict) else getattr(result, key)
