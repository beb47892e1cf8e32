"""Statistics of pairwise measures: permutation tests over models, bootstrap over seeds,
Benjamini-Hochberg, partial correlation. numpy/pandas only.

Pairs share models (a model of eps e is in several same-eps pairs), so pair values are not
independent and scipy's pair-level p-values would be too small. Here p-values permute the eps
labels across *models*, and confidence intervals resample *seeds*.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PermutationTest:
    r: float
    p_value: float
    n_pairs: int
    n_permutations: int
    exact: bool


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denom) if denom > 0 else float("nan")


def _distinct_relabelings(labels: list[float]) -> int:
    """Number of distinct assignments of a multiset of labels to the models."""
    counts = pd.Series(labels).value_counts().to_numpy()
    total = math.factorial(len(labels))
    for c in counts:
        total //= math.factorial(int(c))
    return total


def _relabelings(eps_by_model: dict, n_permutations: int, seed: int) -> tuple[list[np.ndarray], bool]:
    """Permuted eps vectors (aligned with the dict's model order): every distinct one when there
    are at most ``n_permutations``, else ``n_permutations`` random permutations."""
    labels = list(eps_by_model.values())
    if _distinct_relabelings(labels) <= n_permutations:
        return [np.array(p) for p in sorted(set(itertools.permutations(labels)))], True
    rng = np.random.default_rng(seed)
    values = np.array(labels, dtype=float)
    return [rng.permutation(values) for _ in range(n_permutations)], False


def _permutation_test(statistic: Callable[[np.ndarray], float], eps_by_model: dict, n_permutations: int, seed: int, n_pairs: int) -> PermutationTest:
    observed = statistic(np.array(list(eps_by_model.values()), dtype=float))
    if not np.isfinite(observed):  # e.g. constant values, or no residual variance left
        return PermutationTest(float("nan"), float("nan"), n_pairs, 0, False)
    relabelings, exact = _relabelings(eps_by_model, n_permutations, seed)
    null = np.array([statistic(np.asarray(p, dtype=float)) for p in relabelings])
    extreme = np.sum(np.abs(null) >= abs(observed) - 1e-12)
    p = extreme / len(null) if exact else (1 + extreme) / (1 + len(null))
    return PermutationTest(observed, float(p), n_pairs, len(null), exact)


def pearson_eps_permutation(values, model_a, model_b, eps_by_model: dict, n_permutations: int = 10000, seed: int = 0) -> PermutationTest:
    """Pearson r between pair values and the pair's mean eps x = (eps[a] + eps[b]) / 2 (for
    same-eps pairs simply their eps), with a two-sided p-value from permuting eps labels across
    models: p = (1 + #{|r_perm| >= |r_obs|}) / (1 + n_permutations), or, when there are at most
    ``n_permutations`` distinct relabelings, their exact enumeration (identity included).

    Pairs share models, so they are not independent: scipy.stats.pearsonr's p-value, which
    assumes independent pairs, would be far too small."""
    values = np.asarray(values, dtype=float)
    index = {m: i for i, m in enumerate(eps_by_model)}
    ia, ib = np.array([index[m] for m in model_a]), np.array([index[m] for m in model_b])
    return _permutation_test(lambda eps: _pearson((eps[ia] + eps[ib]) / 2, values), eps_by_model, n_permutations, seed, len(values))


def residuals(y: np.ndarray, covariate: np.ndarray) -> np.ndarray:
    """Residuals of y after least-squares regression on [1, covariate]."""
    design = np.column_stack([np.ones_like(covariate, dtype=float), covariate])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ coef


def partial_correlation(x, y, covariate) -> float:
    """Pearson r of x and y controlling for a covariate: the correlation of their residuals
    after linear regression on [1, covariate]."""
    x, y, c = (np.asarray(v, dtype=float) for v in (x, y, covariate))
    return _pearson(residuals(x, c), residuals(y, c))


def partial_eps_permutation(values, model_a, model_b, eps_by_model: dict, covariate_by_pair, n_permutations: int = 10000, seed: int = 0) -> PermutationTest:
    """Partial correlation of the pair's mean eps with the pair values controlling for a
    covariate per pair (e.g. the pair's mean clean accuracy), with the same model-label
    permutation p-value as :func:`pearson_eps_permutation` (the covariate stays fixed)."""
    values = np.asarray(values, dtype=float)
    covariate = np.asarray(covariate_by_pair, dtype=float)
    index = {m: i for i, m in enumerate(eps_by_model)}
    ia, ib = np.array([index[m] for m in model_a]), np.array([index[m] for m in model_b])
    resid_y = residuals(values, covariate)
    return _permutation_test(lambda eps: _pearson(residuals((eps[ia] + eps[ib]) / 2, covariate), resid_y),
                             eps_by_model, n_permutations, seed, len(values))


def bootstrap_over_seeds(pair_table: pd.DataFrame, statistic: Callable[[pd.DataFrame], float], n_boot: int = 1000,
                         seed: int = 0, ci: float = 0.95) -> tuple[float, float, np.ndarray]:
    """Percentile CI of ``statistic`` under resampling *seeds* with replacement.

    ``pair_table`` has columns eps, seed_a, seed_b, value (pairs of models of one eps and two
    different seeds). A draw s_1..s_m of the m seeds keeps, for every eps, the pair (s_i, s_j)
    for each i < j with s_i != s_j (a model is never paired with itself), with multiplicity.
    Draws with fewer than two distinct seeds, or a NaN statistic, are skipped. Returns
    (low, high, bootstrap statistics)."""
    seeds = np.array(sorted(set(pair_table["seed_a"]) | set(pair_table["seed_b"])))
    lookup = {}
    for row in pair_table.itertuples(index=False):
        lookup.setdefault(frozenset((row.seed_a, row.seed_b)), []).append(row)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        draw = rng.choice(seeds, size=len(seeds), replace=True)
        if len(set(draw)) < 2:
            continue
        rows = [r for i, j in itertools.combinations(range(len(draw)), 2) if draw[i] != draw[j]
                for r in lookup.get(frozenset((draw[i], draw[j])), [])]
        value = statistic(pd.DataFrame(rows, columns=pair_table.columns)) if rows else float("nan")
        if np.isfinite(value):
            stats.append(value)
    stats = np.asarray(stats)
    if len(stats) == 0:
        return float("nan"), float("nan"), stats
    alpha = (1 - ci) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha)), stats


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg step-up q-values (monotone, capped at 1); NaN p-values stay NaN."""
    p = np.asarray(p_values, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    m = ok.sum()
    if m == 0:
        return q
    order = np.argsort(p[ok])
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    q[ok] = out
    return q
