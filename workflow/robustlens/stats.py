"""Statistics of pairwise measures: correlation of eps with a pairwise value, permutation tests
calibrated for the design, the slope of the eps-group means with its t interval, Freedman-Lane
for the partial correlation, bootstrap over units, Benjamini-Hochberg.
numpy, scipy and pandas only (no torch): table jobs import this module.

Why not scipy's p-values: a pairwise value (agreement, CKA, ...) belongs to a *pair* of models
and every model is in several pairs (with m seeds per eps, each model is in m - 1 same-eps
pairs). Pair values therefore share model-level noise and are not independent observations;
``scipy.stats.pearsonr`` treats the n pairs as n independent samples, so its p-value is too
small (here the effective sample size is closer to the number of models than to the number of
pairs). The unit that was randomised is the model, so here:

* p-values permute eps labels, and which relabelings are allowed depends on the design
  (:data:`TESTS`): with same-eps pairs only, the eps values among the k groups of models that
  share an eps (``permute="eps_groups"``; permuting single models is anti-conservative there,
  see :func:`pearson_eps_permutation`); with every pair of a set of models, eps across models
  (``permute="models"``, a Mantel test); the partial correlation by Freedman-Lane
  (:func:`freedman_lane_eps_groups`, :func:`freedman_lane_models`), valid when the covariate
  depends on eps;
* the interval of the trend is the slope of the eps-group means with a t interval
  (:func:`group_mean_slope`); :func:`bootstrap_over_units` (the seed for models trained in the
  workflow, each zoo model its own unit; never pairs or inputs) remains for other statistics,
  but its percentile interval of r under-covers with 3-5 seeds (benchmarks/calibration.py).

The pair's x is its mean eps (same-eps pairs: their eps) by default; for designs with one
model per eps, ``pair_x="distance"`` (|eps_a - eps_b|) or ``"min"`` (min(eps_a, eps_b)).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

#: |r_perm| >= |r_obs| - _TIE counts as "as extreme": relabelings that reproduce the observed
#: pair grouping give the same r up to rounding.
_TIE = 1e-10
#: Random relabelings are evaluated in chunks of this many rows (memory: chunk x n_pairs).
_CHUNK = 1024


@dataclass(frozen=True)
class PermutationTest:
    """Result of a model-label permutation test.

    r: observed (partial) Pearson r; p_value: two-sided permutation p-value; n_pairs: number
    of pairs; n_permutations: relabelings evaluated (all distinct ones when ``exact``, the
    identity included; else the number of random permutations); exact: whether the
    relabelings were enumerated exactly; min_p: the smallest p-value the test can give on
    this design (its p when the values are exactly linear in x: with k eps groups and exact
    enumeration, at least 1/k!); test: the test's name (:data:`TESTS`)."""

    r: float
    p_value: float
    n_pairs: int
    n_permutations: int
    exact: bool
    min_p: float = float("nan")
    test: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class BootstrapResult(tuple):
    """``(low, high, statistics)`` of :func:`bootstrap_over_units` (and
    :func:`bootstrap_over_seeds`), unpacking as a 3-tuple, with attributes ``low``, ``high``,
    ``statistics``, ``n_boot`` (draws made), ``n_skipped`` (degenerate draws: fewer than two
    distinct units, or no pair left) and ``n_nonfinite``
    (draws whose statistic was NaN or infinite), so that
    ``len(statistics) == n_boot - n_skipped - n_nonfinite``."""

    def __new__(cls, low: float, high: float, statistics: np.ndarray, n_boot: int, n_skipped: int, n_nonfinite: int):
        self = super().__new__(cls, (low, high, statistics))
        self.n_boot, self.n_skipped, self.n_nonfinite = n_boot, n_skipped, n_nonfinite
        return self

    @property
    def low(self) -> float:
        return self[0]

    @property
    def high(self) -> float:
        return self[1]

    @property
    def statistics(self) -> np.ndarray:
        return self[2]

    def __repr__(self) -> str:
        return (f"BootstrapResult(low={self.low!r}, high={self.high!r}, n_statistics={len(self.statistics)}, "
                f"n_boot={self.n_boot}, n_skipped={self.n_skipped}, n_nonfinite={self.n_nonfinite})")


# ---------------------------------------------------------------------------------------------
# correlation of rows with a vector, after projecting out a design (intercept [+ covariate])


def _column_basis(design: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the column space of ``design`` (rank-deficient designs allowed,
    e.g. a constant covariate)."""
    u, s, _ = np.linalg.svd(design, full_matrices=False)
    keep = s > s.max() * max(design.shape) * np.finfo(float).eps
    return u[:, keep]


def _residualise(rows: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Residuals of each row of ``rows`` after least-squares regression on the design."""
    return rows - (rows @ basis) @ basis.T


def _row_correlations(rows: np.ndarray, y: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Pearson r of each row of ``rows`` (k, n) with ``y`` (n,), both residualised on the
    design whose orthonormal column basis is ``basis`` (the intercept alone: plain Pearson r;
    intercept and covariate: partial r). NaN where a residual vanishes (a constant row)."""
    rows = np.atleast_2d(rows)
    ry, rx = _residualise(y[None, :], basis)[0], _residualise(rows, basis)
    tol = 1e3 * np.finfo(float).eps
    norm_y, norm_x = np.linalg.norm(ry), np.linalg.norm(rx, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx @ ry) / (norm_x * norm_y)
    degenerate = (norm_x <= tol * np.linalg.norm(rows, axis=1)) | (norm_y <= tol * np.linalg.norm(y))
    return np.where(degenerate, np.nan, np.clip(r, -1.0, 1.0))


def _design(n: int, covariate: np.ndarray | None = None) -> np.ndarray:
    columns = [np.ones(n)] if covariate is None else [np.ones(n), covariate]
    return _column_basis(np.column_stack(columns))


def partial_correlation(x, y, covariate) -> float:
    """Partial Pearson r of x and y controlling for ``covariate``: the Pearson correlation of
    the residuals of x and of y after least-squares regression of each on [1, covariate].
    NaN when a residual is constant (e.g. x is a linear function of the covariate)."""
    x, y, c = (np.asarray(v, dtype=float).ravel() for v in (x, y, covariate))
    if not len(x) == len(y) == len(c):
        raise ValueError(f"x, y and covariate must have the same length, got {len(x)}, {len(y)}, {len(c)}")
    return float(_row_correlations(x, y, _design(len(x), c))[0])


# ---------------------------------------------------------------------------------------------
# relabelings of eps across models


def n_distinct_relabelings(labels: Sequence) -> int:
    """Number of distinct assignments of a multiset of labels to its models: the multinomial
    coefficient n! / (n_1! n_2! ...), n_k the multiplicity of each distinct label."""
    total, left = 1, len(labels)
    for count in pd.Series(list(labels), dtype=object).value_counts():
        total *= math.comb(left, int(count))
        left -= int(count)
    return total


def _distinct_relabelings(labels: np.ndarray) -> np.ndarray:
    """Every distinct permutation of the multiset ``labels`` (rows), identity included,
    enumerated directly (by choosing the positions of each distinct label in turn), without
    going through all n! permutations."""
    values, counts = np.unique(labels, return_counts=True)
    n, out, current = len(labels), [], np.empty(len(labels), dtype=float)

    def fill(k: int, free: tuple[int, ...]) -> Iterator[None]:
        if k == len(values):
            yield None
            return
        for chosen in itertools.combinations(free, int(counts[k])):
            current[list(chosen)] = values[k]
            chosen_set = set(chosen)
            yield from fill(k + 1, tuple(i for i in free if i not in chosen_set))

    for _ in fill(0, tuple(range(n))):
        out.append(current.copy())
    return np.array(out, dtype=float).reshape(-1, n)


def _pair_indices(model_a, model_b, eps_by_model: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eps of the models that occur in a pair, in ``eps_by_model``'s order; index of each
    pair's model a and model b into it)."""
    model_a, model_b = list(model_a), list(model_b)
    if len(model_a) != len(model_b):
        raise ValueError(f"model_a and model_b must have the same length, got {len(model_a)} and {len(model_b)}")
    used = set(model_a) | set(model_b)
    missing = sorted(map(str, used - set(eps_by_model)))
    if missing:
        raise KeyError(f"models without an eps in eps_by_model: {missing}")
    if any(a == b for a, b in zip(model_a, model_b)):
        raise ValueError("a pair compares a model with itself")
    models = [m for m in eps_by_model if m in used]
    index = {m: i for i, m in enumerate(models)}
    eps = np.array([float(eps_by_model[m]) for m in models], dtype=float)
    if not np.isfinite(eps).all():
        raise ValueError("eps_by_model has a non-finite eps")
    return eps, np.array([index[m] for m in model_a], dtype=int), np.array([index[m] for m in model_b], dtype=int)


#: Which relabelings (``permute``) -> the name of the test in the tables' ``test`` column.
PERMUTE_TESTS = {"models": "model_permutation", "eps_groups": "eps_groups_permutation"}
#: x of a pair from its two models' eps: the mean (same-eps pairs: their eps), the distance
#: |eps_a - eps_b| or the smaller eps min(eps_a, eps_b).
PAIR_X = {"mean": lambda a, b: (a + b) / 2, "distance": lambda a, b: np.abs(a - b), "min": np.minimum}


def _relabelings_exact(eps: np.ndarray, permute: str) -> np.ndarray:
    if permute == "models":
        return _distinct_relabelings(eps)
    levels, codes = np.unique(eps, return_inverse=True)
    assignments = np.array(list(itertools.permutations(levels)), dtype=float).reshape(-1, len(levels))
    return assignments[:, codes]


def _relabelings_random(eps: np.ndarray, permute: str, k: int, rng: np.random.Generator) -> np.ndarray:
    if permute == "models":
        return rng.permuted(np.tile(eps, (k, 1)), axis=1)
    levels, codes = np.unique(eps, return_inverse=True)
    return rng.permuted(np.tile(levels, (k, 1)), axis=1)[:, codes]


def _n_relabelings(eps: np.ndarray, permute: str) -> int:
    return n_distinct_relabelings(eps) if permute == "models" else math.factorial(len(np.unique(eps)))


def _permutation_test(values, model_a, model_b, eps_by_model: Mapping, covariate, n_permutations: int,
                      seed: int, permute: str, pair_x: str = "mean") -> PermutationTest:
    """:func:`_permutation_p` with ``min_p`` (its p when the values are the observed x itself)
    and the test's name."""
    test = _permutation_p(values, model_a, model_b, eps_by_model, covariate, n_permutations, seed, permute, pair_x)
    name = PERMUTE_TESTS[permute]
    if not np.isfinite(test.p_value):
        return PermutationTest(test.r, test.p_value, test.n_pairs, test.n_permutations, test.exact, float("nan"), name)
    eps, ia, ib = _pair_indices(model_a, model_b, eps_by_model)
    linear = PAIR_X[pair_x](eps[ia], eps[ib])
    best = _permutation_p(linear, model_a, model_b, eps_by_model, covariate, n_permutations, seed, permute, pair_x)
    return PermutationTest(test.r, test.p_value, test.n_pairs, test.n_permutations, test.exact, best.p_value, name)


def _permutation_p(values, model_a, model_b, eps_by_model: Mapping, covariate, n_permutations: int,
                   seed: int, permute: str, pair_x: str = "mean") -> PermutationTest:
    if permute not in PERMUTE_TESTS:
        raise ValueError(f"permute must be one of {tuple(PERMUTE_TESTS)}, got {permute!r}")
    if pair_x not in PAIR_X:
        raise ValueError(f"pair_x must be one of {tuple(PAIR_X)}, got {pair_x!r}")
    x_of = PAIR_X[pair_x]
    values = np.asarray(values, dtype=float).ravel()
    eps, ia, ib = _pair_indices(model_a, model_b, eps_by_model)
    n_pairs = len(values)
    if len(ia) != n_pairs:
        raise ValueError(f"values has {n_pairs} entries but there are {len(ia)} pairs")
    if covariate is not None:
        covariate = np.asarray(covariate, dtype=float).ravel()
        if len(covariate) != n_pairs:
            raise ValueError(f"covariate has {len(covariate)} entries but there are {n_pairs} pairs")
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1")
    if n_pairs < 2 or not np.isfinite(values).all() or (covariate is not None and not np.isfinite(covariate).all()):
        if n_pairs >= 2:
            warnings.warn("pair values or covariate are not finite: r and p are NaN", RuntimeWarning, stacklevel=3)
        return PermutationTest(float("nan"), float("nan"), n_pairs, 0, False)

    basis = _design(n_pairs, covariate)

    def correlations(eps_rows: np.ndarray) -> np.ndarray:  # x of each pair from its models' eps
        return _row_correlations(x_of(eps_rows[:, ia], eps_rows[:, ib]), values, basis)

    def n_extreme(null: np.ndarray) -> int:  # an undefined r (x constant) counts as |r| = 0
        return int(np.sum(np.abs(np.nan_to_num(null, nan=0.0)) >= abs(observed) - _TIE))

    observed = float(correlations(eps[None, :])[0])
    if not np.isfinite(observed):  # constant values or x, or nothing left after the covariate
        return PermutationTest(float("nan"), float("nan"), n_pairs, 0, False)
    if _n_relabelings(eps, permute) <= n_permutations:
        relabelings = _relabelings_exact(eps, permute)
        extreme = sum(n_extreme(correlations(relabelings[i:i + _CHUNK])) for i in range(0, len(relabelings), _CHUNK))
        return PermutationTest(observed, extreme / len(relabelings), n_pairs, len(relabelings), True)
    rng = np.random.default_rng(seed)
    extreme, done = 0, 0
    while done < n_permutations:
        k = min(_CHUNK, n_permutations - done)
        extreme += n_extreme(correlations(_relabelings_random(eps, permute, k, rng)))
        done += k
    return PermutationTest(observed, (1 + extreme) / (1 + n_permutations), n_pairs, n_permutations, False)


def pearson_eps_permutation(values, model_a, model_b, eps_by_model: Mapping, n_permutations: int = 10000,
                            seed: int = 0, permute: str = "models", pair_x: str = "mean") -> PermutationTest:
    """Pearson r of eps with a pairwise measure, with a permutation p-value over models.

    Statistic: r = Pearson r between the pair values v_p and the pair's mean eps
    x_p = (eps[a_p] + eps[b_p]) / 2 (for same-eps pairs, simply their eps; the paper reports
    r = -0.578 for agreement on CIFAR-10, Klabunde, Caspari, Lemmerich). r is the number
    ``scipy.stats.pearsonr(x, values)`` gives.

    p-value (two-sided): the eps labels are permuted across *models* (a random permutation of
    the eps values of the models that occur in ``model_a``/``model_b`` over those model ids,
    preserving the multiset of eps), x is recomputed for every pair, and
    p = (1 + #{|r_perm| >= |r_obs|}) / (1 + n_permutations). When there are at most
    ``n_permutations`` distinct relabelings (the multinomial n! / prod n_k!), all of them are
    enumerated instead and p = #{|r_perm| >= |r_obs|} / n_distinct, the identity included
    (``exact=True``). Relabelings whose r is undefined (x constant) count as not extreme.

    Why not ``scipy.stats.pearsonr``'s p-value: its r is the same number, but its p-value
    assumes the n pairs are independent. They are not: each model is in several pairs, and a
    model's seed-level quirks (a model that disagrees with everyone) move all its pairs
    together, so the effective sample size is nearer the number of models than the number of
    pairs, and the pair-level p-value is far too small.

    Which relabelings (``permute``):

    * ``"models"`` (default): relabel individual models, as above. Exact under the null when
      the set of pairs does not depend on eps, e.g. all pairs of models (cross-eps pairs
      included). **Caveat:** when the pairs were *selected by eps* (same-eps pairs only, the
      universality design), the observed labelling is the only one under which x is constant
      within each block of pairs that share models, so shared model effects inflate |r_obs|
      relative to the relabelings and the test is anti-conservative (in simulation with 4 eps x
      4 seeds and model-level effects, about 12% of null p-values fall below 0.05;
      scipy's pair-level p-value: about 30%). Without model-level effects it is calibrated.
    * ``"eps_groups"``: permute the distinct eps values among the groups of models that share an
      eps (each group keeps its pairs, k! relabelings for k eps levels). Valid for same-eps
      designs with model-level effects, but coarse: with k levels the smallest p is 1/k!
      (1/24 for 4 levels).

    Which x (``pair_x``): ``"mean"`` (default, above); for designs with one model per eps (no
    same-eps pair), ``"distance"``, x_p = |eps[a_p] - eps[b_p]|, or ``"min"``,
    x_p = min(eps[a_p], eps[b_p]); relabelings recompute the same x.

    Args: ``values`` (n_pairs,); ``model_a``, ``model_b``: the pair's model ids; ``eps_by_model``:
    model id -> eps (models in no pair are ignored). Returns :class:`PermutationTest`
    (r, p_value, n_pairs, n_permutations, exact); r and p are NaN when r is undefined
    (fewer than 2 pairs, constant values or x, non-finite values: the latter warns).
    """
    return _permutation_test(values, model_a, model_b, eps_by_model, None, n_permutations, seed, permute, pair_x)


def partial_eps_permutation(values, model_a, model_b, eps_by_model: Mapping, covariate_by_pair,
                            n_permutations: int = 10000, seed: int = 0, permute: str = "models",
                            pair_x: str = "mean") -> PermutationTest:
    """Partial Pearson r of the pair's x (``pair_x``: by default the mean eps (eps[a] + eps[b]) / 2;
    ``"distance"`` or ``"min"`` as in :func:`pearson_eps_permutation`) with the pair values,
    controlling for a covariate per pair (:func:`partial_correlation`; use case: eps vs
    agreement controlling for the pair's mean clean accuracy, since agreement >= acc_a + acc_b - 1
    falls mechanically with accuracy), with the model-label permutation p-value of
    :func:`pearson_eps_permutation` (same ``permute`` options and caveat): eps labels are
    permuted and x recomputed, while values and the covariate stay fixed with their pairs.
    Same return value and NaN rules (also NaN when x or the values are a linear function of the
    covariate)."""
    return _permutation_test(values, model_a, model_b, eps_by_model, covariate_by_pair, n_permutations, seed, permute, pair_x)


# ---------------------------------------------------------------------------------------------
# tests and intervals calibrated for the design (which pairs exist)

#: The tests and intervals the tables report, by the name in their ``test`` column.
TESTS = {
    "eps_groups_permutation": "same-eps pairs: the k eps values permuted among the k groups of models that share "
                              "an eps (k! relabelings); statistic: Pearson r over the pairs",
    "model_permutation": "every pair of a set of models: eps permuted across models (a Mantel test); statistic: "
                         "Pearson r over the pairs",
    "freedman_lane_eps_groups": "partial r, same-eps pairs: residuals of the eps-group means regressed on the "
                                "covariate, permuted among the groups (Freedman & Lane 1983)",
    "freedman_lane_models": "partial r, every pair of a set of models: residuals of the pair values regressed on "
                            "the covariate, permuted as model relabelings permute pairs (Freedman & Lane 1983)",
    "t_interval_group_means": "OLS slope of the k eps-group means on eps with a Student-t interval, k - 2 "
                              "degrees of freedom",
}
#: Fewest eps levels for which a p-value is reported: with 3 levels the eps-group test cannot
#: go below p = 1/3 and a trend over 3 points says little.
MIN_EPS_LEVELS = 4


def is_complete_pair_graph(model_a, model_b) -> bool:
    """Whether the pairs are every unordered pair of the models that occur in them, once each
    (``pairs: all``): then relabeling models maps the set of pairs onto itself, the condition
    under which a model permutation test is exact."""
    edges = {frozenset(p) for p in zip(model_a, model_b)}
    models = set(model_a) | set(model_b)
    return len(edges) == len(list(model_a)) and len(edges) == len(models) * (len(models) - 1) // 2


def _permutation_rows(k: int, n_permutations: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Every permutation of range(k) (identity first) when there are at most
    ``n_permutations``, else ``n_permutations`` random ones; and whether they are exact."""
    if math.factorial(k) <= n_permutations:
        return np.array(list(itertools.permutations(range(k))), dtype=int).reshape(-1, k), True
    return np.argsort(rng.random((n_permutations, k)), axis=1), False


def _freedman_lane(x: np.ndarray, values: np.ndarray, covariate: np.ndarray, residual_index,
                   n_rows: int, exact: bool) -> tuple[float, float]:
    """(partial r of x with the values controlling for the covariate, Freedman-Lane p-value).
    Reduced model: values = a + b covariate + e; each null sample is fitted + e[index] for an
    index row from ``residual_index(chunk)`` (the residuals permuted as the design allows), and
    its partial r with x is compared with the observed one (Freedman & Lane 1983; Anderson &
    Legendre 1999 found it the best-behaved permutation method for partial regression)."""
    basis = _design(len(values), covariate)
    resid = _residualise(values[None, :], basis)[0]
    fitted = values - resid
    observed = float(_row_correlations(x, values, basis)[0])
    if not np.isfinite(observed):
        return float("nan"), float("nan")
    extreme = 0
    for start in range(0, n_rows, _CHUNK):
        null = _row_correlations(fitted + resid[residual_index(start, min(_CHUNK, n_rows - start))], x, basis)
        extreme += int(np.sum(np.abs(np.nan_to_num(null, nan=0.0)) >= abs(observed) - _TIE))
    return observed, (extreme / n_rows if exact else (1 + extreme) / (1 + n_rows))


def eps_group_means(x, values, *columns) -> tuple[np.ndarray, ...]:
    """(distinct x levels, the mean of ``values`` and of each extra column per level)."""
    levels, codes = np.unique(np.asarray(x, dtype=float), return_inverse=True)
    counts = np.bincount(codes)
    return (levels, *(np.bincount(codes, np.asarray(c, dtype=float)) / counts for c in (values, *columns)))


def freedman_lane_eps_groups(values, eps_of_pair, covariate, n_permutations: int = 10000, seed: int = 0) -> PermutationTest:
    """Partial r of eps with the pair values controlling for a covariate, tested where a
    same-eps design identifies the eps effect: across its k eps groups. The values and the
    covariate are averaged per eps group; the group means are regressed on the covariate
    (reduced model) and the k residuals permuted among the groups (all k! orders when there are
    at most ``n_permutations``); statistic: partial r of eps with the group means given the
    covariate means. Valid when the covariate depends on eps (as clean accuracy does), unlike
    permuting eps against a fixed covariate. Needs k >= 4 (partial r of 3 points is +-1)."""
    levels, v, c = eps_group_means(eps_of_pair, values, covariate)
    k = len(levels)
    if k < 4 or not (np.isfinite(v).all() and np.isfinite(c).all()):
        return PermutationTest(float("nan"), float("nan"), len(np.ravel(values)), 0, False, float("nan"), "freedman_lane_eps_groups")
    rows, exact = _permutation_rows(k, n_permutations, np.random.default_rng(seed))
    r, p = _freedman_lane(levels, v, c, lambda i, n: rows[i:i + n], len(rows), exact)
    _, min_p = _freedman_lane(levels, levels, c, lambda i, n: rows[i:i + n], len(rows), exact)
    return PermutationTest(r, p, len(np.ravel(values)), len(rows), exact, min_p, "freedman_lane_eps_groups")


def freedman_lane_models(values, model_a, model_b, eps_by_model: Mapping, covariate, n_permutations: int = 10000,
                         seed: int = 0, pair_x: str = "mean") -> PermutationTest:
    """Partial r of the pair's x (``pair_x``) with the pair values controlling for a covariate,
    when the pairs are every pair of their models (:func:`is_complete_pair_graph`): Freedman-Lane
    with the residuals of the reduced model (values on the covariate) permuted as a relabeling
    of the models permutes the pairs (pair {a, b} takes the residual of pair {pi(a), pi(b)}),
    the model-level exchangeability of a Mantel test."""
    values, covariate = (np.asarray(v, dtype=float).ravel() for v in (values, covariate))
    eps, ia, ib = _pair_indices(model_a, model_b, eps_by_model)
    if not is_complete_pair_graph(list(model_a), list(model_b)):
        raise ValueError("freedman_lane_models needs every pair of the models once (pairs: all)")
    m = len(eps)
    lookup = np.full((m, m), -1, dtype=int)
    lookup[ia, ib] = lookup[ib, ia] = np.arange(len(ia))
    rows, exact = _permutation_rows(m, n_permutations, np.random.default_rng(seed))
    x = PAIR_X[pair_x](eps[ia], eps[ib])

    def index(i: int, n: int) -> np.ndarray:
        return lookup[rows[i:i + n][:, ia], rows[i:i + n][:, ib]]

    r, p = _freedman_lane(x, values, covariate, index, len(rows), exact)
    _, min_p = _freedman_lane(x, x, covariate, index, len(rows), exact)
    return PermutationTest(r, p, len(values), len(rows), exact, min_p, "freedman_lane_models")


@dataclass(frozen=True)
class SlopeInterval:
    """OLS slope of the eps-group means on eps and its Student-t interval (k - 2 df)."""

    slope: float
    low: float
    high: float
    n_levels: int


def group_mean_slope(eps_of_pair, values, ci: float = 0.95) -> SlopeInterval:
    """Slope of the pair values on eps estimated where a same-eps design identifies it: the
    ordinary least-squares slope of the k eps-group means (mean pair value per eps) on eps,
    with the t interval slope +- t_{k-2, (1+ci)/2} s / sqrt(sum (eps_g - mean eps)^2),
    s^2 = residual sum of squares / (k - 2). The group means are the independent observations
    (models of one eps share no model with another eps; a seed effect shared across eps shifts
    every mean alike and leaves the slope alone), so the interval holds for any number of seeds
    per eps, unlike a bootstrap over 3-5 seeds (82-88 % coverage for a nominal 95 %,
    benchmarks/calibration.py). NaN bounds with fewer than 3 eps levels."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    levels, means = eps_group_means(eps_of_pair, values)
    k = len(levels)
    if k < 2 or not np.isfinite(means).all():
        return SlopeInterval(float("nan"), float("nan"), float("nan"), k)
    dx = levels - levels.mean()
    slope = float(dx @ (means - means.mean()) / (dx @ dx))
    if k < 3:
        return SlopeInterval(slope, float("nan"), float("nan"), k)
    resid = means - means.mean() - slope * dx
    half = scipy_stats.t.ppf((1 + ci) / 2, k - 2) * math.sqrt(resid @ resid / (k - 2) / (dx @ dx))
    return SlopeInterval(slope, slope - half, slope + half, k)


# ---------------------------------------------------------------------------------------------
# bootstrap over resampling units (seeds of trained models, zoo models)


def _weighted_statistics(kind: str, weights: np.ndarray, table: pd.DataFrame, x: str = "eps") -> np.ndarray:
    """The statistic of every resampled table at once: row k of ``weights`` holds how often each
    row of ``table`` appears in draw k, so a weighted statistic equals the statistic of the
    table with its rows repeated. ``mean``: the mean value; ``pearson``: Pearson r of column
    ``x`` vs value (NaN when a draw keeps one x or one value only)."""
    v = table["value"].to_numpy(dtype=float)
    total = weights.sum(axis=1)
    mean_v = weights @ v / total
    if kind == "mean":
        return mean_v
    xs = table[x].to_numpy(dtype=float)
    mean_x = weights @ xs / total
    dx, dv = xs[None, :] - mean_x[:, None], v[None, :] - mean_v[:, None]
    cov = (weights * dx * dv).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt((weights * dx * dx).sum(axis=1) * (weights * dv * dv).sum(axis=1))
    kept = weights > 0
    constant_x = np.where(kept, xs, np.inf).min(axis=1) == np.where(kept, xs, -np.inf).max(axis=1)
    constant_v = np.where(kept, v, np.inf).min(axis=1) == np.where(kept, v, -np.inf).max(axis=1)
    r[constant_x | constant_v] = np.nan
    return r


def _canonical_order(labels: list) -> list:
    try:  # a canonical order: the draws do not depend on the row order or pair orientation
        return sorted(labels)
    except TypeError:
        return sorted(labels, key=repr)


def _bootstrap(pair_table: pd.DataFrame, columns: tuple[str, str], statistic, n_boot: int, seed: int, ci: float,
               x: str, name: str) -> BootstrapResult:
    """Shared body of :func:`bootstrap_over_units` and :func:`bootstrap_over_seeds`: ``columns``
    name the unit of each pair's two models."""
    col_a, col_b = columns
    needed = {col_a, col_b, "value"} | ({x} if isinstance(statistic, str) and statistic == "pearson" else set())
    missing = needed - set(pair_table.columns)
    if missing:
        raise ValueError(f"pair_table lacks columns {sorted(missing)}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    if isinstance(statistic, str) and statistic not in ("mean", "pearson"):
        raise ValueError(f"unknown statistic {statistic!r} (named statistics: mean, pearson)")
    units = _canonical_order(list(pd.unique(pd.concat([pair_table[col_a], pair_table[col_b]], ignore_index=True))))
    if len(units) < 2:
        warnings.warn(f"{name}: fewer than two resampling units, no CI", RuntimeWarning, stacklevel=3)
        return BootstrapResult(float("nan"), float("nan"), np.array([], dtype=float), n_boot, n_boot, 0)
    code = {u: i for i, u in enumerate(units)}
    row_a = pair_table[col_a].map(code).to_numpy(dtype=int)
    row_b = pair_table[col_b].map(code).to_numpy(dtype=int)
    table = pair_table.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(units), size=(n_boot, len(units)))  # row k: the units of draw k
    counts = (draws[:, :, None] == np.arange(len(units))).sum(axis=1)
    all_multiplicities = counts[:, row_a] * counts[:, row_b]
    valid = (np.count_nonzero(counts, axis=1) >= 2) & (all_multiplicities.sum(axis=1) > 0)
    multiplicities = all_multiplicities[valid]
    n_skipped = n_boot - len(multiplicities)
    if isinstance(statistic, str):
        weights = multiplicities.astype(float)
        values = _weighted_statistics(statistic, weights, table, x) if len(weights) else np.array([])
    else:
        values = [statistic(table.iloc[np.repeat(np.arange(len(table)), m)].reset_index(drop=True)) for m in multiplicities]
        values = np.array([np.nan if v is None else float(v) for v in values])
    finite = np.isfinite(values)
    n_nonfinite = int((~finite).sum())
    stats = np.asarray(values[finite], dtype=float)
    if len(stats) == 0:
        warnings.warn(f"{name}: no finite statistic in {n_boot} draws", RuntimeWarning, stacklevel=3)
        return BootstrapResult(float("nan"), float("nan"), stats, n_boot, n_skipped, n_nonfinite)
    alpha = (1 - ci) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return BootstrapResult(float(low), float(high), stats, n_boot, n_skipped, n_nonfinite)


def resampling_unit(spec: Mapping) -> str:
    """The bootstrap's resampling unit of a model spec (``id``, ``source``, ``seed``): models
    trained in the workflow (``source == "train"``) share their seed's unit across eps
    (``"seed:<seed>"``); each zoo model (robustbench, timm, url) is its own unit
    (``"model:<id>"``), whatever seed its entry records (zoo entries default to seed 0)."""
    return f"seed:{int(spec['seed'])}" if spec["source"] == "train" else f"model:{spec['id']}"


def bootstrap_over_units(pair_table: pd.DataFrame, statistic: Callable[[pd.DataFrame], float] | str, n_boot: int = 1000,
                         seed: int = 0, ci: float = 0.95, x: str = "eps") -> BootstrapResult:
    """Percentile confidence interval of ``statistic`` under resampling *units* with
    replacement (the unit, not the input or the pair, is independent; see
    :func:`resampling_unit`: the seed for trained models, each zoo model on its own).

    ``pair_table``: one row per pair of models, with columns ``unit_a``, ``unit_b`` (the unit of
    each model), ``value`` and, for ``statistic="pearson"``, the column ``x`` (others are kept).
    Each draw takes m units u_1..u_m with replacement from the m distinct units of the table
    (sorted, so the draws do not depend on row order) and keeps every pair with multiplicity
    count(unit_a) * count(unit_b): a pair of two units drawn twice and once appears twice; a
    pair of two models of one unit (trained models of one seed at two eps) appears count(u)^2
    times, once for each ordered choice of copies. Draws with fewer than two distinct units or
    no pair left are skipped (``n_skipped``), as are draws whose statistic is not finite
    (``n_nonfinite``). ``statistic(resampled_table) -> float`` is applied to the resampled table;
    the named statistics ``"mean"`` (mean value) and ``"pearson"`` (Pearson r of ``x`` vs value)
    are computed for all draws at once from the multiplicities (same values, ~1000x faster).
    The CI is the ((1 - ci)/2, (1 + ci)/2) percentile interval of the kept statistics (NaN, NaN
    when none, with a warning). Returns :class:`BootstrapResult` (unpacks as (low, high,
    statistics)).
    """
    return _bootstrap(pair_table, ("unit_a", "unit_b"), statistic, n_boot, seed, ci, x, "bootstrap_over_units")


def bootstrap_over_seeds(pair_table: pd.DataFrame, statistic: Callable[[pd.DataFrame], float] | str, n_boot: int = 1000,
                         seed: int = 0, ci: float = 0.95) -> BootstrapResult:
    """:func:`bootstrap_over_units` with the seed as the unit, for same-eps pairs of trained
    models: ``pair_table`` has one row per pair of models of the same eps and different seeds,
    with columns ``eps``, ``seed_a``, ``seed_b``, ``value``. A draw takes m seeds with replacement
    and, for every eps, keeps the pair (s_i, s_j) for each i < j with s_i != s_j, i.e. the pair
    {u, v} count(u) * count(v) times (a model is never compared with itself); the same seed draw
    serves all eps. ``"pearson"`` is the r of eps vs value. A row with two equal seeds raises:
    zoo models (seed 0 by default) or any table whose models share seeds need
    :func:`bootstrap_over_units` with :func:`resampling_unit`."""
    missing = {"eps", "seed_a", "seed_b", "value"} - set(pair_table.columns)
    if missing:
        raise ValueError(f"pair_table lacks columns {sorted(missing)}")
    if (pair_table["seed_a"].to_numpy() == pair_table["seed_b"].to_numpy()).any():
        raise ValueError("pair_table has a row whose two seeds are equal (two models of one seed: "
                         "use bootstrap_over_units with resampling_unit)")
    return _bootstrap(pair_table, ("seed_a", "seed_b"), statistic, n_boot, seed, ci, "eps", "bootstrap_over_seeds")


# ---------------------------------------------------------------------------------------------
# multiple testing


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg (1995) step-up adjusted p-values (q-values): with the m finite
    p-values sorted, p_(1) <= ... <= p_(m), q_(k) = min(1, min_{j >= k} p_(j) m / j), returned
    in the input's order and shape (monotone in p, capped at 1). NaN p-values stay NaN and do
    not count in m. Same as ``scipy.stats.false_discovery_control(p, method="bh")``."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    m = int(ok.sum())
    if m == 0:
        return q
    finite = p[ok]
    order = np.argsort(finite, kind="stable")
    ranked = finite[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adjusted
    q[ok] = out
    return q
