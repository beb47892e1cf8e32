"""The headline table of the universality study (Klabunde, Caspari, Lemmerich): does the
agreement of same-eps models fall with eps (r = -0.578 on CIFAR-10 in the paper), and does
retraining the heads remove it?

Per probe, head setting (original, retrained) and predictive measure: Pearson r of eps vs the
pairwise value over pairs, its p-value from permuting eps labels across models, a CI from a
bootstrap over seeds, and the partial correlation controlling for the pair's mean clean
accuracy (agreement falls mechanically with accuracy: two models with accuracies a and b agree
on at least a + b - 1 of the inputs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustlens.stats import bootstrap_over_seeds, partial_eps_permutation, pearson_eps_permutation


def pair_values(predictive: pd.DataFrame) -> pd.DataFrame:
    """One value per (probe, head, measure, pair): the mean over the probe's input sets (both
    models' images for made probes) and over retrained head seeds."""
    keys = ["probe", "head", "measure", "model_a", "model_b", "eps_a", "eps_b", "seed_a", "seed_b"]
    return predictive.groupby(keys, as_index=False, sort=True)[["value", "accuracy_a", "accuracy_b"]].mean()


def clean_accuracy_by_pair(values: pd.DataFrame) -> pd.Series:
    """Mean clean (natural-probe) accuracy of the two models of each (head, pair)."""
    natural = values[(values["probe"] == "natural") & (values["measure"] == "agreement")]
    acc = (natural["accuracy_a"] + natural["accuracy_b"]) / 2
    return pd.Series(acc.to_numpy(), index=pd.MultiIndex.from_frame(natural[["head", "model_a", "model_b"]]))


def _pearson(df: pd.DataFrame) -> float:
    if df["eps"].nunique() < 2 or df["value"].std() == 0:
        return float("nan")
    return float(np.corrcoef(df["eps"], df["value"])[0, 1])


def universality_table(study: str, predictive: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """Rows per (probe, head, measure, statistic): r, p_value, ci_low, ci_high, partial_r,
    partial_p_value, n_pairs, with the settings of the permutation test and bootstrap."""
    values = pair_values(predictive[predictive["eps_a"] == predictive["eps_b"]])
    clean = clean_accuracy_by_pair(values)
    rows = []
    for (probe, head, measure), df in values.groupby(["probe", "head", "measure"], sort=True):
        eps_by_model = dict(zip(df["model_a"], df["eps_a"])) | dict(zip(df["model_b"], df["eps_b"]))
        v, ma, mb = df["value"].to_numpy(), df["model_a"].tolist(), df["model_b"].tolist()
        test = pearson_eps_permutation(v, ma, mb, eps_by_model, n_permutations=settings["n_permutations"], seed=settings["seed"])
        boot = pd.DataFrame({"eps": df["eps_a"].to_numpy(), "seed_a": df["seed_a"].to_numpy(), "seed_b": df["seed_b"].to_numpy(), "value": v})
        low, high, _ = bootstrap_over_seeds(boot, _pearson, n_boot=settings["n_bootstrap"], seed=settings["seed"], ci=settings["ci"])
        covariate = np.array([clean[(head, a, b)] for a, b in zip(ma, mb)])
        partial = partial_eps_permutation(v, ma, mb, eps_by_model, covariate, n_permutations=settings["n_permutations"], seed=settings["seed"])
        base = {"study": study, "probe": probe, "head": head, "measure": measure, "n_pairs": len(df)}
        stats = {
            "r": _get(test, "r"), "p_value": _get(test, "p_value"), "ci_low": low, "ci_high": high,
            "partial_r": _get(partial, "r"), "partial_p_value": _get(partial, "p_value"),
            "mean_value": float(v.mean()),
        }
        rows += [{**base, "statistic": k, "value": float(val)} for k, val in stats.items()]
    return pd.DataFrame(rows)


def _get(result, key):
    return result[key] if isinstance(result, dict) else getattr(result, key)
