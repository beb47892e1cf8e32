"""The headline table of the universality study (Klabunde, Caspari, Lemmerich): does the
agreement of models fall with eps (r = -0.578 on CIFAR-10 in the paper), and does retraining
the heads remove it?

Per probe, head setting (original, retrained) and predictive measure: Pearson r of x vs the
pairwise value over pairs (a description: the paper's number), a p-value from a permutation
test calibrated for the design, the slope of the eps-group means with a t interval, and the
partial correlation controlling for the pair's mean clean accuracy (agreement falls
mechanically with accuracy: two models with accuracies a and b agree on at least a + b - 1 of
the inputs) with a Freedman-Lane p-value. Each row names its test (:data:`robustlens.stats.TESTS`);
benchmarks/calibration.py shows by simulation that each holds its level and coverage.
The design, tests and row helpers here are shared with the similarity stage's correlations
table (:mod:`robustlens.similarity_tables`) and with the figures (:mod:`robustlens.plots`).

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

from collections.abc import Mapping

import numpy as np
import pandas as pd

from robustlens.stats import (
    MIN_EPS_LEVELS,
    PERMUTE_TESTS,
    eps_group_means,
    freedman_lane_eps_groups,
    freedman_lane_models,
    group_mean_slope,
    is_complete_pair_graph,
    partial_correlation,
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


#: The relabelings of each design's p-value (:data:`robustlens.stats.PERMUTE_TESTS`).
DESIGN_PERMUTE = {"same_eps": "eps_groups", "all_pairs": "models"}


def n_eps_levels(df: pd.DataFrame, design: str) -> int:
    """Distinct eps of an analysis: the same-eps groups, or the eps of the models of all pairs."""
    return len(set(df["eps_a"])) if design == "same_eps" else len(set(df["eps_a"]) | set(df["eps_b"]))


def _undefined_p(df: pd.DataFrame, design: str) -> str:
    """Why the design gives no calibrated p-value ('' when it does)."""
    n_levels = n_eps_levels(df, design)
    if n_levels < MIN_EPS_LEVELS:
        return f"{n_levels} eps levels: a p-value needs at least {MIN_EPS_LEVELS}"
    if design == "all_pairs" and not is_complete_pair_graph(df["model_a"].tolist(), df["model_b"].tolist()):
        return "the pairs are not every pair of their models: no permutation of models keeps them, no calibrated test"
    return ""


def eps_correlation(df: pd.DataFrame, settings: dict, x: str = "eps", covariate: np.ndarray | None = None,
                    design: str = "same_eps") -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """Statistics of x vs ``value`` over the pairs of ``df`` (columns model_a, model_b, eps_a,
    eps_b, x, value; ``x`` names the analysis, see :data:`PAIR_X`), each from a test or interval
    calibrated for the design (benchmarks/calibration.py):

    * ``r``: Pearson r over the pairs (a description, the paper's number);
    * ``p_value`` and ``min_p`` (the smallest p the test can give here): same_eps, the eps values
      permuted among the k eps groups (``eps_groups_permutation``: the eps effect is identified
      across groups only, so k, not the number of pairs, is the sample size); all_pairs, eps
      permuted across models (``model_permutation``), only when the pairs are every pair of their
      models. NaN with fewer than :data:`~robustlens.stats.MIN_EPS_LEVELS` eps levels;
    * ``slope``, ``slope_ci_low``, ``slope_ci_high`` (same_eps): OLS slope of the eps-group means
      on eps with a t interval, k - 2 df (``t_interval_group_means``);
    * ``mean_value``;
    * with a covariate per pair (:func:`partial_statistics`): ``partial_r``, ``partial_p_value``,
      ``partial_min_p`` and ``covariate_r2``.

    Returns (statistics, reason why each NaN statistic is undefined, test of each statistic)."""
    v, xs = df["value"].to_numpy(dtype=float), df["x"].to_numpy(dtype=float)
    n, n_x = len(df), df["x"].nunique()
    permute = DESIGN_PERMUTE[design]
    out = {"r": np.nan, "p_value": np.nan, "min_p": np.nan, "mean_value": float(v.mean()) if n else np.nan}
    tests = {"r": "pearson_r_over_pairs", "p_value": PERMUTE_TESTS[permute], "min_p": PERMUTE_TESTS[permute]}
    undefined = ("fewer than 3 pairs" if n < 3 else f"{x} takes fewer than 2 distinct values" if n_x < 2
                 else "pair values are not finite" if not np.isfinite(v).all() else "")
    if not undefined:
        out["r"] = float(np.corrcoef(xs, v)[0, 1]) if np.ptp(v) > 0 else np.nan
        undefined = "" if np.isfinite(out["r"]) else "r undefined: the pair values are constant"
    no_p = undefined or _undefined_p(df, design)
    if not no_p:
        test = pearson_eps_permutation(v, df["model_a"].tolist(), df["model_b"].tolist(), _eps_by_model(df),
                                       n_permutations=settings["n_permutations"], seed=settings["seed"],
                                       permute=permute, pair_x=PAIR_X[x])
        out |= {"p_value": test.p_value, "min_p": test.min_p}
    reasons = {"r": undefined, "p_value": no_p, "min_p": no_p}
    if design == "same_eps":
        slope = group_mean_slope(xs, v, settings["ci"]) if not undefined else None
        out |= {"slope": slope.slope if slope else np.nan, "slope_ci_low": slope.low if slope else np.nan,
                "slope_ci_high": slope.high if slope else np.nan}
        why = undefined or ("" if n_x >= 3 else f"{n_x} eps levels: a slope interval needs at least 3")
        reasons |= {"slope": undefined, "slope_ci_low": why, "slope_ci_high": why}
        tests |= dict.fromkeys(("slope", "slope_ci_low", "slope_ci_high"), "t_interval_group_means")
    reasons["mean_value"] = "" if np.isfinite(out["mean_value"]) else "no finite pair value"
    if covariate is not None:
        partial, partial_reasons, partial_tests = partial_statistics(df, covariate, settings, x, design, undefined, no_p)
        out, reasons, tests = out | partial, reasons | partial_reasons, tests | partial_tests
    return {k: float(val) for k, val in out.items()}, reasons, tests


def _eps_by_model(df: pd.DataFrame) -> dict:
    return dict(zip(df["model_a"], df["eps_a"])) | dict(zip(df["model_b"], df["eps_b"]))


def partial_statistics(df: pd.DataFrame, covariate: np.ndarray, settings: dict, x: str, design: str,
                       undefined: str = "", no_p: str = "") -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """The partial statistics of :func:`eps_correlation` (covariate: one value per pair of
    ``df``): ``partial_r`` over the pairs (a description), its Freedman-Lane ``partial_p_value``
    and ``partial_min_p`` (over eps groups for same_eps, :func:`freedman_lane_eps_groups`; over
    model relabelings for all pairs, :func:`freedman_lane_models`) and ``covariate_r2``, the R^2
    of x on the covariate where the test is made (eps-group means; pairs): near 1, eps and the
    covariate cannot be told apart. ``undefined``/``no_p``: why r/the p-value are undefined
    (from :func:`eps_correlation`). Returns (statistics, reasons, tests) like it."""
    v, xs = df["value"].to_numpy(dtype=float), df["x"].to_numpy(dtype=float)
    out = {"partial_r": np.nan, "partial_p_value": np.nan, "partial_min_p": np.nan, "covariate_r2": np.nan}
    why = (undefined or ("fewer than 4 pairs (partial r of 3 pairs is +-1)" if len(df) < 4 else "")
           or ("no clean accuracy (natural-probe agreement row) for some pair" if not np.isfinite(covariate).all() else ""))
    if not why:
        out["partial_r"] = partial_correlation(xs, v, covariate)
        why = "" if np.isfinite(out["partial_r"]) else f"partial r undefined: {x} or the values are linear in clean accuracy"
    name = "freedman_lane_eps_groups" if design == "same_eps" else "freedman_lane_models"
    why_p = why or no_p
    if not why_p:
        args = dict(n_permutations=settings["n_permutations"], seed=settings["seed"])
        if design == "same_eps":
            test = freedman_lane_eps_groups(v, xs, covariate, **args)
            x_at_test, c_at_test = eps_group_means(xs, covariate)
        else:
            test = freedman_lane_models(v, df["model_a"], df["model_b"], _eps_by_model(df), covariate, pair_x=PAIR_X[x], **args)
            x_at_test, c_at_test = xs, covariate
        r2 = np.corrcoef(x_at_test, c_at_test)[0, 1] ** 2 if np.ptp(c_at_test) > 0 else np.nan
        out |= {"partial_p_value": test.p_value, "partial_min_p": test.min_p, "covariate_r2": r2}
        why_p = "" if np.isfinite(test.p_value) else f"{test.test}: partial r of the eps-group means undefined"
    why_r2 = "" if np.isfinite(out["covariate_r2"]) else (why_p or "the covariate is constant")
    reasons = {"partial_r": why, "partial_p_value": why_p, "partial_min_p": why_p, "covariate_r2": why_r2}
    tests = {"partial_r": "partial_r_over_pairs", "partial_p_value": name, "partial_min_p": name, "covariate_r2": name}
    return out, reasons, tests


def statistic_rows(base: dict, stats: dict, reasons: dict, tests: dict) -> list[dict]:
    """One tidy row per statistic: ``base`` (:func:`row_base`) with the statistic's name, value,
    test and the reason it is undefined (empty when defined)."""
    return [{**base, "statistic": k, "value": val, "test": tests.get(k, ""), "reason": reasons.get(k, "")}
            for k, val in stats.items()]


def row_base(study: str, design: str, x: str, df: pd.DataFrame, **keys) -> dict:
    """The identifying columns of a table row: study, design, x, the group's keys, n_pairs,
    n_units (resampling units) and n_levels (:func:`n_eps_levels`)."""
    return {"study": study, "design": design, "x": x, **keys, "n_pairs": len(df),
            "n_units": len(set(df["unit_a"]) | set(df["unit_b"])), "n_levels": n_eps_levels(df, design)}


def require_pairs(values: pd.DataFrame, table: str) -> None:
    """Stop ``table`` when its input has no pair of models."""
    if values.empty:
        raise ValueError(f"{table}: the input table has no pair of models; nothing to correlate with eps "
                         "(check comparison.pairs)")


def universality_table(study: str, predictive: pd.DataFrame, settings: dict, models: Mapping[str, Mapping]) -> pd.DataFrame:
    """Rows per (probe, head, measure, x, statistic): the statistics of :func:`eps_correlation`
    (r, p_value, min_p, slope and its interval, mean_value, partial_r, partial_p_value,
    partial_min_p, covariate_r2; covariate: the pair's mean clean accuracy), with the design
    (``same_eps`` or ``all_pairs``), x (eps; eps_distance, min_eps), n_pairs, n_units, n_levels,
    the test behind each statistic (``test``, see :data:`robustlens.stats.TESTS`) and the
    reason of each undefined (NaN) statistic. ``models``: id -> model spec (for the units)."""
    values = pair_values(predictive)
    require_pairs(values, "universality_table")
    values = with_units(values, models)
    design = pair_design(values)
    clean = clean_accuracy_by_pair(values)
    rows = []
    for x, pairs in design_analyses(values, design):
        for (probe, head, measure), df in pairs.groupby(["probe", "head", "measure"], sort=True):
            covariate = np.array([clean.get((head, a, b), np.nan) for a, b in zip(df["model_a"], df["model_b"])], dtype=float)
            stats, reasons, tests = eps_correlation(df, settings, x, covariate, design)
            rows += statistic_rows(row_base(study, design, x, df, probe=probe, head=head, measure=measure), stats, reasons, tests)
    return pd.DataFrame(rows)
