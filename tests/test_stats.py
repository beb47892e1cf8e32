"""Permutation tests over models, bootstrap over seeds, BH and partial correlation, against
independent computations."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from robustlens.stats import (
    benjamini_hochberg,
    bootstrap_over_seeds,
    partial_correlation,
    partial_eps_permutation,
    pearson_eps_permutation,
)


def same_eps_pairs(eps_values, seeds, value_fn, rng):
    models = {f"e{e}-s{s}": e for e in eps_values for s in seeds}
    rows = []
    for e in eps_values:
        for sa, sb in itertools.combinations(seeds, 2):
            rows.append({"model_a": f"e{e}-s{sa}", "model_b": f"e{e}-s{sb}", "eps": e, "seed_a": sa, "seed_b": sb,
                         "value": value_fn(e) + rng.normal(scale=0.05)})
    return models, pd.DataFrame(rows)


def test_r_equals_scipy_and_strong_effect_is_significant():
    rng = np.random.default_rng(0)
    models, df = same_eps_pairs([0, 0.5, 1, 2], [0, 1, 2, 3], lambda e: 1 - 0.3 * e, rng)
    test = pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], models, n_permutations=2000, seed=0)
    assert test.r == pytest.approx(pearsonr(df["eps"], df["value"])[0])
    assert test.p_value < 0.01 and not test.exact


def test_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(1)
    ps = []
    for _ in range(60):
        models, df = same_eps_pairs([0, 1, 2], [0, 1, 2], lambda e: 0.5, rng)
        ps.append(pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], models, n_permutations=199, seed=int(rng.integers(1 << 30))).p_value)
    assert 0.35 < np.mean(ps) < 0.65
    assert np.mean(np.array(ps) < 0.05) < 0.15


def test_exact_enumeration_when_few_relabelings():
    rng = np.random.default_rng(2)
    models, df = same_eps_pairs([0, 1], [0, 1], lambda e: e, rng)  # 4 models, 2 labels each: 6 relabelings
    test = pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], models, n_permutations=1000)
    assert test.exact and test.n_permutations == 6
    # r = +-1 only for the identity and the swap of the two eps groups; other relabelings mix
    # the groups, so two of six relabelings are as extreme: p = 2/6
    assert test.p_value == pytest.approx(2 / 6)


def test_bootstrap_never_pairs_a_seed_with_itself_and_covers_the_mean():
    rng = np.random.default_rng(3)
    _, df = same_eps_pairs([0, 1], [0, 1, 2, 3, 4], lambda e: 0.7, rng)

    def checked_mean(t):
        assert (t["seed_a"] != t["seed_b"]).all()
        return t["value"].mean()

    low, high, stats = bootstrap_over_seeds(df[["eps", "seed_a", "seed_b", "value"]], checked_mean, n_boot=300, seed=0)
    assert low <= 0.7 <= high and len(stats) > 250


def test_benjamini_hochberg_textbook():
    p = np.array([0.01, 0.04, 0.03, 0.20, 0.002])
    m = len(p)
    order = np.argsort(p)
    expected = np.empty(m)
    for rank, i in enumerate(order, start=1):
        expected[i] = min(1.0, min(p[order[k - 1]] * m / k for k in range(rank, m + 1)))
    np.testing.assert_allclose(benjamini_hochberg(p), expected)


def test_partial_correlation_matches_residual_regression():
    rng = np.random.default_rng(4)
    c = rng.normal(size=100)
    x = c + rng.normal(size=100)
    y = 2 * c + rng.normal(size=100)
    design = np.column_stack([np.ones(100), c])
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    assert partial_correlation(x, y, c) == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert abs(partial_correlation(x, y, c)) < 0.25  # y depends on x only through c


def test_partial_eps_permutation_removes_an_accuracy_effect():
    """Agreement that falls only because accuracy falls: raw r is strong, partial r is not."""
    rng = np.random.default_rng(5)
    models, df = same_eps_pairs([0, 0.5, 1, 2], [0, 1, 2, 3], lambda e: 0, rng)
    accuracy = 1 - 0.2 * df["eps"] + rng.normal(scale=0.02, size=len(df))
    values = 2 * accuracy - 1 + rng.normal(scale=0.01, size=len(df))
    raw = pearson_eps_permutation(values, df["model_a"], df["model_b"], models, n_permutations=500)
    partial = partial_eps_permutation(values, df["model_a"], df["model_b"], models, accuracy, n_permutations=500)
    assert raw.r < -0.9 and raw.p_value < 0.01
    assert abs(partial.r) < abs(raw.r) / 2
