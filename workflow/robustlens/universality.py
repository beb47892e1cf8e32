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

from robustlens.stats import benjamini_hochberg, bootstrap_over_seeds, partial_eps_permutation, pearson_eps_permutation


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


def eps_correlation(df: pd.DataFrame, settings: dict, covariate: np.ndarray | None = None) -> dict[str, float]:
    """Statistics of eps vs ``value`` over the same-eps pairs in ``df`` (columns model_a,
    model_b, eps_a, seed_a, seed_b, value): Pearson r with its permutation p-value (eps labels
    permuted across models), a bootstrap-over-seeds CI of r, the mean value, and, with a
    covariate per pair, the partial correlation and its permutation p-value."""
    eps_by_model = dict(zip(df["model_a"], df["eps_a"])) | dict(zip(df["model_b"], df["eps_b"]))
    v, ma, mb = df["value"].to_numpy(), df["model_a"].tolist(), df["model_b"].tolist()
    test = pearson_eps_permutation(v, ma, mb, eps_by_model, n_permutations=settings["n_permutations"], seed=settings["seed"])
    boot = pd.DataFrame({"eps": df["eps_a"].to_numpy(), "seed_a": df["seed_a"].to_numpy(), "seed_b": df["seed_b"].to_numpy(), "value": v})
    low, high, _ = bootstrap_over_seeds(boot, "pearson", n_boot=settings["n_bootstrap"], seed=settings["seed"], ci=settings["ci"])
    out = {"r": _get(test, "r"), "p_value": _get(test, "p_value"), "ci_low": low, "ci_high": high, "mean_value": float(v.mean())}
    if covariate is not None:
        partial = partial_eps_permutation(v, ma, mb, eps_by_model, covariate, n_permutations=settings["n_permutations"], seed=settings["seed"])
        out |= {"partial_r": _get(partial, "r"), "partial_p_value": _get(partial, "p_value")}
    return {k: float(val) for k, val in out.items()}


def universality_table(study: str, predictive: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """Rows per (probe, head, measure, statistic): r, p_value, ci_low, ci_high, mean_value,
    partial_r, partial_p_value (covariate: the pair's mean clean accuracy), with n_pairs."""
    values = pair_values(predictive[predictive["eps_a"] == predictive["eps_b"]])
    clean = clean_accuracy_by_pair(values)
    rows = []
    for (probe, head, measure), df in values.groupby(["probe", "head", "measure"], sort=True):
        covariate = np.array([clean[(head, a, b)] for a, b in zip(df["model_a"], df["model_b"])])
        stats = eps_correlation(df, settings, covariate)
        base = {"study": study, "probe": probe, "head": head, "measure": measure, "n_pairs": len(df)}
        rows += [{**base, "statistic": k, "value": val} for k, val in stats.items()]
    return pd.DataFrame(rows)


def correlations_table(study: str, similarity: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """Correlation of eps with each representational measure per (probe, measure, layer) over
    same-eps pairs (values averaged over the probe's input sets), with Benjamini-Hochberg
    q-values across all layers, measures and probes."""
    same = similarity[similarity["eps_a"] == similarity["eps_b"]]
    keys = ["probe", "measure", "layer", "model_a", "model_b", "eps_a", "eps_b", "seed_a", "seed_b"]
    values = same.groupby(keys, as_index=False, sort=True)["value"].mean()
    rows = []
    for (probe, measure, layer), df in values.groupby(["probe", "measure", "layer"], sort=True):
        rows.append({"study": study, "probe": probe, "measure": measure, "layer": layer, "n_pairs": len(df),
                     **eps_correlation(df, settings)})
    wide = pd.DataFrame(rows)
    wide["q_value"] = benjamini_hochberg(wide["p_value"].to_numpy())
    id_cols = ["study", "probe", "measure", "layer", "n_pairs"]
    return wide.melt(id_vars=id_cols, var_name="statistic", value_name="value")


def _get(result, key):
    return result[key] if isinstance(result, dict) else getattr(result, key)
