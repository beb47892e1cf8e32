"""The headline table of the universality study (Klabunde, Caspari, Lemmerich): does the
agreement of models fall with eps (r = -0.578 on CIFAR-10 in the paper), and does retraining
the heads remove it?

Per probe, head setting (original, retrained) and predictive measure: Pearson r of x vs the
pairwise value over pairs, its p-value from permuting eps labels across models, a CI from a
bootstrap over resampling units (:func:`robustlens.stats.resampling_unit`: seeds of trained
models, each zoo model on its own), and the partial correlation controlling for the pair's
mean clean accuracy (agreement falls mechanically with accuracy: two models with accuracies
a and b agree on at least a + b - 1 of the inputs).

Which x (the design, chosen from the pairs, :func:`pair_design`):

* ``same_eps`` (the paper's design: several seeds per eps): the same-eps pairs, x = their eps
  (``x = "eps"``), when the same-eps pairs span at least two eps values;
* ``all_pairs`` (one model per eps, e.g. a zoo of one checkpoint per eps, ``pairs: all`` or an
  explicit list): every pair, twice: x = |eps_a - eps_b| (``x = "eps_distance"``: do models
  of distant eps differ more?) and x = min(eps_a, eps_b) (``x = "min_eps"``: are pairs of
  robust models more alike?).

A statistic that the design leaves undefined (fewer than 3 pairs, x constant, one resampling
unit, ...) is NaN and its row says why (``reason``; empty when defined).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from robustlens.stats import (
    benjamini_hochberg,
    bootstrap_over_units,
    partial_eps_permutation,
    pearson_eps_permutation,
    resampling_unit,
)

#: The analyses (x of a pair) of each design, and the x of stats.PAIR_X each one uses.
DESIGN_X = {"same_eps": ("eps",), "all_pairs": ("eps_distance", "min_eps")}
PAIR_X = {"eps": "mean", "eps_distance": "distance", "min_eps": "min"}
X_LABEL = {"eps": "training eps (same-eps pairs)", "eps_distance": "|eps_a - eps_b|", "min_eps": "min(eps_a, eps_b)"}


def pair_design(pairs: pd.DataFrame) -> str:
    """``"same_eps"`` when the same-eps pairs (eps_a == eps_b) of ``pairs`` span at least two eps
    values (so that r of eps is defined over them), else ``"all_pairs"``."""
    same = pairs[pairs["eps_a"] == pairs["eps_b"]]
    return "same_eps" if same["eps_a"].nunique() >= 2 else "all_pairs"


def design_analyses(pairs: pd.DataFrame, design: str | None = None) -> list[tuple[str, pd.DataFrame]]:
    """(x name, rows with an ``x`` column) for each analysis of the design (default: from
    :func:`pair_design`): same_eps: the same-eps rows, x = eps; all_pairs: all rows with
    x = |eps_a - eps_b|, then all rows with x = min(eps_a, eps_b)."""
    design = design or pair_design(pairs)
    if design not in DESIGN_X:
        raise ValueError(f"design must be one of {tuple(DESIGN_X)}, got {design!r}")
    a, b = pairs["eps_a"].astype(float), pairs["eps_b"].astype(float)
    if design == "same_eps":
        return [("eps", pairs[a == b].assign(x=a[a == b]))]
    return [("eps_distance", pairs.assign(x=(a - b).abs())), ("min_eps", pairs.assign(x=np.minimum(a, b)))]


def with_units(df: pd.DataFrame, models: Mapping[str, Mapping]) -> pd.DataFrame:
    """``df`` with columns ``unit_a``, ``unit_b``: each model's resampling unit
    (:func:`robustlens.stats.resampling_unit`) from its spec in ``models`` (id -> spec)."""
    used = set(df["model_a"]) | set(df["model_b"])
    missing = sorted(map(str, used - set(models)))
    if missing:
        raise KeyError(f"models of the table without a spec in `models`: {missing}")
    unit = {m: resampling_unit(models[m]) for m in used}
    return df.assign(unit_a=df["model_a"].map(unit), unit_b=df["model_b"].map(unit))


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


def eps_correlation(df: pd.DataFrame, settings: dict, x: str = "eps",
                    covariate: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Statistics of x vs ``value`` over the pairs of ``df`` (columns model_a, model_b, eps_a,
    eps_b, unit_a, unit_b, x, value; ``x`` names the analysis, see :data:`PAIR_X`): Pearson r
    with its permutation p-value (eps labels permuted across models, ``settings["permute"]``,
    default "models", x recomputed from the relabeled eps), a bootstrap-over-units CI of r, the
    mean value, and, with a covariate per pair, the partial correlation and its permutation
    p-value. Returns (statistics, reason why each NaN statistic is undefined)."""
    v, ma, mb = df["value"].to_numpy(dtype=float), df["model_a"].tolist(), df["model_b"].tolist()
    eps_by_model = dict(zip(df["model_a"], df["eps_a"])) | dict(zip(df["model_b"], df["eps_b"]))
    n, n_x = len(df), df["x"].nunique()
    test_args = dict(n_permutations=settings["n_permutations"], seed=settings["seed"],
                     permute=settings.get("permute", "models"), pair_x=PAIR_X[x])
    out = {"r": np.nan, "p_value": np.nan, "ci_low": np.nan, "ci_high": np.nan, "mean_value": float(v.mean()) if n else np.nan}
    undefined = ("fewer than 3 pairs" if n < 3 else f"{x} takes fewer than 2 distinct values" if n_x < 2
                 else "pair values are not finite" if not np.isfinite(v).all() else "")
    if not undefined:
        test = pearson_eps_permutation(v, ma, mb, eps_by_model, **test_args)
        out |= {"r": test.r, "p_value": test.p_value}
        undefined = "" if np.isfinite(test.r) else "r undefined: the pair values are constant"
    reasons = {"r": undefined, "p_value": undefined}
    if undefined:
        reasons |= {"ci_low": undefined, "ci_high": undefined}
    else:
        boot_table = df[["unit_a", "unit_b", "x", "value"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            boot = bootstrap_over_units(boot_table, "pearson", n_boot=settings["n_bootstrap"], seed=settings["seed"],
                                        ci=settings["ci"], x="x")
        out |= {"ci_low": boot.low, "ci_high": boot.high}
        n_units = len(set(df["unit_a"]) | set(df["unit_b"]))
        why = (f"bootstrap: {n_units} resampling unit(s), need 2" if n_units < 2
               else f"bootstrap: r undefined in every one of {boot.n_boot} draws")
        reasons |= {"ci_low": "" if np.isfinite(boot.low) else why, "ci_high": "" if np.isfinite(boot.high) else why}
    reasons["mean_value"] = "" if np.isfinite(out["mean_value"]) else "no finite pair value"
    if covariate is not None:
        out |= {"partial_r": np.nan, "partial_p_value": np.nan}
        why = (undefined or ("fewer than 4 pairs (partial r of 3 pairs is +-1)" if n < 4 else "")
               or ("no clean accuracy (natural-probe agreement row) for some pair" if not np.isfinite(covariate).all() else ""))
        if not why:
            partial = partial_eps_permutation(v, ma, mb, eps_by_model, covariate, **test_args)
            out |= {"partial_r": partial.r, "partial_p_value": partial.p_value}
            why = "" if np.isfinite(partial.r) else f"partial r undefined: {x} or the values are linear in clean accuracy"
        reasons |= {"partial_r": why, "partial_p_value": why}
    return {k: float(val) for k, val in out.items()}, reasons


def _rows(base: dict, stats: dict, reasons: dict) -> list[dict]:
    return [{**base, "statistic": k, "value": val, "reason": reasons.get(k, "")} for k, val in stats.items()]


def _require_pairs(values: pd.DataFrame, table: str) -> None:
    if values.empty:
        raise ValueError(f"{table}: the input table has no pair of models; nothing to correlate with eps "
                         "(check comparison.pairs)")


def universality_table(study: str, predictive: pd.DataFrame, settings: dict, models: Mapping[str, Mapping]) -> pd.DataFrame:
    """Rows per (probe, head, measure, x, statistic): r, p_value, ci_low, ci_high, mean_value,
    partial_r, partial_p_value (covariate: the pair's mean clean accuracy), with the design
    (``same_eps`` or ``all_pairs``), x (eps; eps_distance, min_eps), n_pairs, n_units and the
    reason of each undefined (NaN) statistic. ``models``: id -> model spec (for the units)."""
    values = pair_values(predictive)
    _require_pairs(values, "universality_table")
    values = with_units(values, models)
    design = pair_design(values)
    clean = clean_accuracy_by_pair(values)
    rows = []
    for x, pairs in design_analyses(values, design):
        for (probe, head, measure), df in pairs.groupby(["probe", "head", "measure"], sort=True):
            covariate = np.array([clean.get((head, a, b), np.nan) for a, b in zip(df["model_a"], df["model_b"])], dtype=float)
            stats, reasons = eps_correlation(df, settings, x, covariate)
            base = {"study": study, "design": design, "x": x, "probe": probe, "head": head, "measure": measure,
                    "n_pairs": len(df), "n_units": len(set(df["unit_a"]) | set(df["unit_b"]))}
            rows += _rows(base, stats, reasons)
    return pd.DataFrame(rows)


def correlations_table(study: str, similarity: pd.DataFrame, settings: dict, models: Mapping[str, Mapping]) -> pd.DataFrame:
    """Correlation of x with each representational measure per (probe, measure, layer, x)
    (values averaged over the probe's input sets; design and x as in :func:`universality_table`),
    with Benjamini-Hochberg q-values across all layers, measures, probes and x."""
    keys = ["probe", "measure", "layer", "model_a", "model_b", "eps_a", "eps_b", "seed_a", "seed_b"]
    values = similarity.groupby(keys, as_index=False, sort=True)["value"].mean()
    _require_pairs(values, "correlations_table")
    values = with_units(values, models)
    design = pair_design(values)
    rows = []
    for x, pairs in design_analyses(values, design):
        for (probe, measure, layer), df in pairs.groupby(["probe", "measure", "layer"], sort=True):
            stats, reasons = eps_correlation(df, settings, x)
            base = {"study": study, "design": design, "x": x, "probe": probe, "measure": measure, "layer": layer,
                    "n_pairs": len(df), "n_units": len(set(df["unit_a"]) | set(df["unit_b"]))}
            rows.append((base, stats, reasons))
    q = benjamini_hochberg(np.array([stats["p_value"] for _, stats, _ in rows]))
    out = []
    for (base, stats, reasons), q_value in zip(rows, q):
        out += _rows(base, {**stats, "q_value": float(q_value)}, {**reasons, "q_value": reasons["p_value"]})
    return pd.DataFrame(out)
