"""Permutation tests over models, bootstrap over seeds, BH and partial correlation, against
independent computations (scipy, numpy lstsq, brute-force enumeration, textbook formulas)."""

import itertools
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, pearsonr

from robustlens.stats import (
    benjamini_hochberg,
    bootstrap_over_seeds,
    bootstrap_over_units,
    n_distinct_relabelings,
    partial_correlation,
    partial_eps_permutation,
    pearson_eps_permutation,
    resampling_unit,
)


def same_eps_pairs(eps_values, seeds, value_fn, rng, noise=0.05):
    models = {f"e{e}-s{s}": e for e in eps_values for s in seeds}
    rows = []
    for e in eps_values:
        for sa, sb in itertools.combinations(seeds, 2):
            rows.append({"model_a": f"e{e}-s{sa}", "model_b": f"e{e}-s{sb}", "eps": e, "seed_a": sa, "seed_b": sb,
                         "value": value_fn(e) + rng.normal(scale=noise)})
    return models, pd.DataFrame(rows)


def null_p_values(rng, n_datasets, eps_values, seeds, model_sd, all_pairs, permute, n_permutations=199):
    """p-values on datasets without any eps effect: pair value = u_a + u_b + noise, with a
    random effect u per model (shared by all the model's pairs) of s.d. ``model_sd``."""
    ps = []
    for _ in range(n_datasets):
        models = {f"e{e}-s{s}": e for e in eps_values for s in seeds}
        u = {m: rng.normal(scale=model_sd) for m in models}
        pairs = [(a, b) for a, b in itertools.combinations(models, 2) if all_pairs or models[a] == models[b]]
        values = [u[a] + u[b] + rng.normal(scale=0.3) for a, b in pairs]
        ma, mb = zip(*pairs)
        ps.append(pearson_eps_permutation(values, ma, mb, models, n_permutations=n_permutations,
                                          seed=int(rng.integers(1 << 30)), permute=permute).p_value)
    return np.array(ps)


def brute_force_p(values, model_a, model_b, eps_by_model, covariate=None, x_of=lambda a, b: (a + b) / 2):
    """Exact p-value by going through all n! permutations of the models' eps (duplicates
    removed), r computed with numpy (partial r by lstsq residuals); x_of: a pair's x from its eps."""
    models = sorted(set(model_a) | set(model_b))
    values = np.asarray(values, dtype=float)

    def r_of(eps):
        x = np.array([x_of(eps[a], eps[b]) for a, b in zip(model_a, model_b)])
        y = values
        if covariate is not None:
            design = np.column_stack([np.ones(len(x)), covariate])
            x = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
            y = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        return np.corrcoef(x, y)[0, 1]

    observed = r_of(eps_by_model)
    perms = set(itertools.permutations([eps_by_model[m] for m in models]))
    null = np.array([r_of(dict(zip(models, p))) for p in perms])
    return observed, np.mean(np.abs(np.nan_to_num(null)) >= abs(observed) - 1e-10), len(perms)


# --------------------------------------------------------------------------- permutation test


def test_r_equals_scipy_and_strong_effect_is_significant():
    rng = np.random.default_rng(0)
    models, df = same_eps_pairs([0, 0.5, 1, 2], [0, 1, 2, 3], lambda e: 1 - 0.3 * e, rng)
    test = pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], models, n_permutations=2000, seed=0)
    assert test.r == pytest.approx(pearsonr(df["eps"], df["value"])[0], abs=1e-12)
    assert test.p_value < 0.01 and not test.exact and test.n_pairs == len(df) and test.n_permutations == 2000
    # Monte Carlo p lies on the (1 + k) / (1 + n) grid and is reproducible from the seed
    k = test.p_value * 2001 - 1
    assert k == pytest.approx(round(k))
    again = pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], models, n_permutations=2000, seed=0)
    assert again == test


def test_r_of_mixed_eps_pairs_uses_the_pair_mean_eps():
    rng = np.random.default_rng(10)
    eps = {f"m{i}": e for i, e in enumerate([0, 0, 1, 1, 3, 3])}
    pairs = list(itertools.combinations(eps, 2))
    values = rng.normal(size=len(pairs))
    x = [(eps[a] + eps[b]) / 2 for a, b in pairs]
    test = pearson_eps_permutation(values, [a for a, _ in pairs], [b for _, b in pairs], eps, n_permutations=5000)
    assert test.r == pytest.approx(pearsonr(x, values)[0], abs=1e-12)
    assert test.exact and test.n_permutations == 90  # 6! / (2! 2! 2!)


@pytest.mark.parametrize("pair_x, x_of", [("distance", lambda a, b: abs(a - b)), ("min", min)])
def test_one_model_per_eps_x_is_distance_or_min_eps_with_exact_p(pair_x, x_of):
    """All pairs of 6 models, one per eps: r of |eps_a - eps_b| (or min eps) vs value is
    scipy's r, and the exact p over the 720 relabelings equals a brute-force enumeration."""
    rng = np.random.default_rng(11)
    eps = {f"m{i}": e for i, e in enumerate([0, 0.25, 0.5, 1, 2, 3])}
    pairs = list(itertools.combinations(eps, 2))
    ma, mb = [a for a, _ in pairs], [b for _, b in pairs]
    x = np.array([x_of(eps[a], eps[b]) for a, b in pairs])
    values = 0.9 - 0.1 * x + rng.normal(scale=0.05, size=len(pairs))
    test = pearson_eps_permutation(values, ma, mb, eps, n_permutations=1000, pair_x=pair_x)
    observed, p, n = brute_force_p(values, ma, mb, eps, x_of=x_of)
    assert test.r == pytest.approx(pearsonr(x, values)[0], abs=1e-12) == pytest.approx(observed, abs=1e-12)
    assert test.exact and test.n_permutations == n == 720 and test.p_value == pytest.approx(p)
    covariate = rng.normal(size=len(pairs))
    partial = partial_eps_permutation(values, ma, mb, eps, covariate, n_permutations=1000, pair_x=pair_x)
    assert partial.r == pytest.approx(partial_correlation(x, values, covariate), abs=1e-12)
    with pytest.raises(ValueError, match="pair_x"):
        pearson_eps_permutation(values, ma, mb, eps, pair_x="max")


def test_p_values_are_uniform_under_the_null_of_independent_pairs():
    ps = null_p_values(np.random.default_rng(1), 200, [0, 1, 2], [0, 1, 2], model_sd=0.0, all_pairs=False, permute="models")
    assert 0.43 < ps.mean() < 0.57
    assert np.mean(ps < 0.05) < 0.09


def test_model_permutation_is_calibrated_with_model_effects_when_all_pairs_are_used():
    """Pairs share models (random effect per model): scipy's pair-level p is far too small,
    the model-label permutation is not, as long as the set of pairs does not depend on eps."""
    rng = np.random.default_rng(2)
    ps = null_p_values(rng, 200, [0, 1, 2], [0, 1, 2], model_sd=1.0, all_pairs=True, permute="models")
    assert 0.43 < ps.mean() < 0.57
    assert np.mean(ps < 0.05) < 0.09
    scipy_ps = []
    for _ in range(100):  # the same kind of null data, tested pair by pair with scipy
        models = {f"e{e}-s{s}": e for e in [0, 1, 2] for s in [0, 1, 2]}
        u = {m: rng.normal() for m in models}
        pairs = list(itertools.combinations(models, 2))
        scipy_ps.append(pearsonr([(models[a] + models[b]) / 2 for a, b in pairs],
                                 [u[a] + u[b] + rng.normal(scale=0.3) for a, b in pairs])[1])
    assert np.mean(np.array(scipy_ps) < 0.05) > 0.25


def test_same_eps_designs_need_eps_group_permutation():
    """Pairs selected by eps (same-eps only) with model effects: relabeling single models is
    anti-conservative (documented caveat); permuting eps among the groups is calibrated."""
    rng = np.random.default_rng(3)
    groups = null_p_values(rng, 200, [0, 0.5, 1, 2, 3], [0, 1, 2], model_sd=1.0, all_pairs=False, permute="eps_groups")
    assert 0.43 < groups.mean() < 0.6
    assert np.mean(groups < 0.05) < 0.09
    models = null_p_values(rng, 200, [0, 0.5, 1, 2], [0, 1, 2, 3], model_sd=1.0, all_pairs=False, permute="models")
    assert np.mean(models < 0.05) > 0.09


def test_eps_group_permutation_enumerates_k_factorial():
    rng = np.random.default_rng(4)
    models, df = same_eps_pairs([0, 0.5, 1, 2], [0, 1, 2], lambda e: 1 - 0.3 * e, rng, noise=0.01)
    test = pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], models, permute="eps_groups")
    assert test.exact and test.n_permutations == 24
    # brute force over the 24 assignments of eps levels to groups
    levels = [0, 0.5, 1, 2]
    null = [pearsonr(df["eps"].map(dict(zip(levels, perm))), df["value"])[0] for perm in itertools.permutations(levels)]
    assert test.p_value == pytest.approx(np.mean(np.abs(null) >= abs(test.r) - 1e-10))
    assert test.p_value == pytest.approx(1 / 24)  # only the observed assignment is as extreme
    with pytest.raises(ValueError):
        pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], models, permute="pairs")


def test_exact_enumeration_when_few_relabelings():
    rng = np.random.default_rng(2)
    models, df = same_eps_pairs([0, 1], [0, 1], lambda e: e, rng)  # 4 models, 2 labels each: 6 relabelings
    test = pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], models, n_permutations=1000)
    assert test.exact and test.n_permutations == 6
    # r = +-1 only for the identity and the swap of the two eps groups; other relabelings mix
    # the groups, so two of six relabelings are as extreme: p = 2/6
    assert test.p_value == pytest.approx(2 / 6)


def test_exact_p_matches_brute_force_enumeration():
    rng = np.random.default_rng(5)
    eps = {f"m{i}": e for i, e in enumerate([0, 0, 1, 1, 2, 2])}
    pairs = list(itertools.combinations(eps, 2))
    ma, mb = [a for a, _ in pairs], [b for _, b in pairs]
    values = np.array([-0.2 * (eps[a] + eps[b]) for a, b in pairs]) + rng.normal(size=len(pairs))
    observed, p, n = brute_force_p(values, ma, mb, eps)
    test = pearson_eps_permutation(values, ma, mb, eps, n_permutations=10000)
    assert test.exact and test.n_permutations == n == n_distinct_relabelings(list(eps.values())) == 90
    assert test.r == pytest.approx(observed) and test.p_value == pytest.approx(p)


def test_exact_enumeration_does_not_go_through_n_factorial():
    """12 models, one of eps 1: 12 distinct relabelings (12! = 479001600 permutations)."""
    eps = {f"m{i}": (1.0 if i == 0 else 0.0) for i in range(12)}
    pairs = list(itertools.combinations(eps, 2))
    values = np.arange(len(pairs), dtype=float) % 7
    test = pearson_eps_permutation(values, [a for a, _ in pairs], [b for _, b in pairs], eps)
    assert test.exact and test.n_permutations == 12
    assert n_distinct_relabelings([0, 0, 1, 1, 1, 2]) == 60


def test_models_in_no_pair_are_ignored_and_unknown_models_raise():
    rng = np.random.default_rng(6)
    models, df = same_eps_pairs([0, 1], [0, 1, 2], lambda e: e, rng)
    with_extra = {**models, "unused": 5.0}
    a = pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], models)
    b = pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], with_extra)
    assert a == b
    missing = dict(list(models.items())[1:])
    with pytest.raises(KeyError):
        pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], missing)


def test_undefined_r_is_nan():
    rng = np.random.default_rng(7)
    models, df = same_eps_pairs([0, 1], [0, 1, 2], lambda e: 0.5, rng, noise=0.0)  # constant values
    test = pearson_eps_permutation(df["value"], df["model_a"], df["model_b"], models)
    assert np.isnan(test.r) and np.isnan(test.p_value)
    with pytest.warns(RuntimeWarning):
        bad = pearson_eps_permutation(np.where(df["eps"] == 1, np.nan, 1.0), df["model_a"], df["model_b"], models)
    assert np.isnan(bad.p_value)


# --------------------------------------------------------------------------- partial correlation


def lstsq_residuals(v, c):
    design = np.column_stack([np.ones(len(c)), c])
    return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]


def test_partial_correlation_matches_residual_regression():
    rng = np.random.default_rng(4)
    c = rng.normal(size=2000)
    x = c + rng.normal(size=2000)
    y = 2 * c + rng.normal(size=2000)
    expected = np.corrcoef(lstsq_residuals(x, c), lstsq_residuals(y, c))[0, 1]
    assert partial_correlation(x, y, c) == pytest.approx(expected, abs=1e-12)
    assert abs(partial_correlation(x, y, c)) < 0.07  # y depends on x only through c
    assert abs(pearsonr(x, y)[0]) > 0.5  # ... though they are strongly correlated
    z = x + 0.5 * rng.normal(size=2000)
    assert partial_correlation(x, z, c) == pytest.approx(
        np.corrcoef(lstsq_residuals(x, c), lstsq_residuals(z, c))[0, 1], abs=1e-12)
    # a constant covariate: the plain Pearson r
    assert partial_correlation(x, z, np.ones(2000)) == pytest.approx(pearsonr(x, z)[0], abs=1e-12)


def test_partial_eps_permutation_matches_brute_force_with_the_covariate_fixed():
    rng = np.random.default_rng(8)
    eps = {f"m{i}": e for i, e in enumerate([0, 0, 1, 1, 2, 2])}
    pairs = list(itertools.combinations(eps, 2))
    ma, mb = [a for a, _ in pairs], [b for _, b in pairs]
    covariate = rng.normal(size=len(pairs))
    values = covariate - 0.3 * np.array([eps[a] + eps[b] for a, b in pairs]) + rng.normal(scale=0.5, size=len(pairs))
    observed, p, n = brute_force_p(values, ma, mb, eps, covariate)
    test = partial_eps_permutation(values, ma, mb, eps, covariate, n_permutations=10000)
    assert test.exact and test.n_permutations == n
    assert test.r == pytest.approx(observed, abs=1e-12) and test.p_value == pytest.approx(p)
    x = [(eps[a] + eps[b]) / 2 for a, b in pairs]
    assert test.r == pytest.approx(partial_correlation(x, values, covariate), abs=1e-12)


def test_partial_eps_permutation_removes_an_accuracy_effect():
    """Agreement that falls only because accuracy falls: raw r is strong, partial r is not."""
    rng = np.random.default_rng(5)
    models, df = same_eps_pairs([0, 0.5, 1, 2], [0, 1, 2, 3], lambda e: 0, rng)
    accuracy = 1 - 0.2 * df["eps"] + rng.normal(scale=0.02, size=len(df))
    values = 2 * accuracy - 1 + rng.normal(scale=0.01, size=len(df))
    raw = pearson_eps_permutation(values, df["model_a"], df["model_b"], models, n_permutations=500)
    partial = partial_eps_permutation(values, df["model_a"], df["model_b"], models, accuracy, n_permutations=500)
    assert raw.r < -0.9 and raw.p_value < 0.01
    assert abs(partial.r) < abs(raw.r) / 2 and partial.p_value > 0.05


# --------------------------------------------------------------------------- bootstrap over seeds


def test_bootstrap_never_pairs_a_seed_with_itself_and_covers_the_mean():
    rng = np.random.default_rng(3)
    _, df = same_eps_pairs([0, 1], [0, 1, 2, 3, 4], lambda e: 0.7, rng)

    def checked_mean(t):
        assert (t["seed_a"] != t["seed_b"]).all()
        return t["value"].mean()

    result = bootstrap_over_seeds(df[["eps", "seed_a", "seed_b", "value"]], checked_mean, n_boot=300, seed=0)
    low, high, stats = result
    assert low <= 0.7 <= high and len(stats) > 250
    assert result.n_skipped + result.n_nonfinite + len(stats) == result.n_boot == 300


def test_bootstrap_resamples_seeds_with_multiplicity():
    """Every resampled table equals the one an independent enumeration of the 27 seed draws
    gives (pairs (s_i, s_j), i < j, s_i != s_j, for each eps); degenerate draws are counted."""
    _, df = same_eps_pairs([0, 1], [0, 1, 2], lambda e: e, np.random.default_rng(0))
    df["value"] = np.arange(len(df), dtype=float)  # a row's value identifies it

    def table_key(t):
        return tuple(sorted(Counter(t["value"]).items()))

    valid = set()
    for draw in itertools.product([0, 1, 2], repeat=3):
        rows = [v for i, j in itertools.combinations(range(3), 2) if draw[i] != draw[j]
                for v in df.loc[(df[["seed_a", "seed_b"]].apply(frozenset, axis=1) == frozenset((draw[i], draw[j]))), "value"]]
        if len(set(draw)) >= 2:
            valid.add(tuple(sorted(Counter(rows).items())))
    seen = []

    def record(t):
        seen.append(table_key(t))
        assert set(t.columns) == set(df.columns)
        return float(t["value"].mean())

    result = bootstrap_over_seeds(df, record, n_boot=900, seed=1)
    assert set(seen) == valid and len(valid) == 4  # all seeds distinct, or {u, u, v}: 3 cases
    # P(all three draws equal) = 3/27: skipped draws ~ Binomial(900, 1/9), mean 100, s.d. 9.4
    assert 60 < result.n_skipped < 140 and len(result.statistics) == 900 - result.n_skipped


def test_bootstrap_of_pearson_r_over_several_eps_and_reversed_seed_order():
    rng = np.random.default_rng(9)
    _, df = same_eps_pairs([0, 0.5, 1, 2], [0, 1, 2, 3, 4], lambda e: 0.9 - 0.1 * e, rng, noise=0.02)
    swapped = df.assign(seed_a=df["seed_b"], seed_b=df["seed_a"])  # orientation of a pair does not matter

    def r(t):
        return np.corrcoef(t["eps"], t["value"])[0, 1]

    low, high, stats = bootstrap_over_seeds(df, r, n_boot=200, seed=0)
    low2, high2, _ = bootstrap_over_seeds(swapped, r, n_boot=200, seed=0)
    observed = r(df)
    assert low <= observed <= high < 0 and (low, high) == (low2, high2)


def test_percentile_interval_is_the_exact_quantiles_of_the_enumerated_resamples():
    """Five seeds, ten same-eps pairs with distinct values: the 5^5 equally likely seed draws
    are enumerated (draws of one seed are skipped, as the library does), giving the exact
    distribution of the resampled mean. With 40,000 draws the 95 % percentile interval's ends
    must lie between the exact quantiles at 2.5 % (97.5 %) +- 5 standard errors of a sampled
    level, a band that excludes the 5 % (95 %) quantile: a 90 % interval reported as 95 % fails."""
    seeds = [0, 1, 2, 3, 4]
    pairs = list(itertools.combinations(seeds, 2))
    values = {pair: float(v) for pair, v in zip(pairs, [0, 1, 3, 7, 12, 20, 30, 45, 60, 80])}
    df = pd.DataFrame([{"eps": 0.0, "seed_a": a, "seed_b": b, "value": values[(a, b)]} for a, b in pairs])
    atoms = Counter()
    for draw in itertools.product(seeds, repeat=5):
        count = Counter(draw)
        if len(count) < 2:
            continue
        weights = {pair: count[pair[0]] * count[pair[1]] for pair in pairs}
        atoms[sum(w * values[p] for p, w in weights.items()) / sum(weights.values())] += 1
    support = np.array(sorted(atoms))
    cdf = np.cumsum([atoms[v] for v in support]) / sum(atoms.values())

    def quantile(q):  # the exact distribution's q-quantile
        return support[np.searchsorted(cdf, q)]

    n_boot = 40_000
    result = bootstrap_over_seeds(df, "mean", n_boot=n_boot, seed=4)
    for q, endpoint, other in ((0.025, result.low, 0.05), (0.975, result.high, 0.95)):
        delta = 5 * np.sqrt(q * (1 - q) / n_boot)  # the sampled quantile's level stays within q +- delta
        assert quantile(q - delta) <= endpoint <= quantile(q + delta)
        assert not quantile(q - delta) <= quantile(other) <= quantile(q + delta)  # a 90 % interval fails
    assert result.n_skipped == pytest.approx(n_boot * 5 / 5**5, abs=5 * np.sqrt(n_boot * 5 / 5**5))


def test_named_bootstrap_statistics_equal_the_resampled_tables():
    """"mean" and "pearson", computed from the multiplicities, equal the callables applied to
    the resampled tables draw by draw (degenerate draws: one eps kept, or one value)."""
    rng = np.random.default_rng(4)
    _, df = same_eps_pairs([0, 0.5, 1], [0, 1, 2, 3], lambda e: 0.9 - 0.1 * e, rng, noise=0.05)
    df.loc[df["eps"] == 1, "value"] = 0.5  # draws that keep only eps 1 have a constant value

    def pearson(t):
        if t["eps"].nunique() < 2 or t["value"].nunique() < 2:
            return float("nan")
        return float(np.corrcoef(t["eps"], t["value"])[0, 1])

    for name, function in (("mean", lambda t: float(t["value"].mean())), ("pearson", pearson)):
        named = bootstrap_over_seeds(df, name, n_boot=300, seed=2)
        looped = bootstrap_over_seeds(df, function, n_boot=300, seed=2)
        np.testing.assert_allclose(named.statistics, looped.statistics, rtol=1e-12, atol=1e-12)
        assert (named.n_skipped, named.n_nonfinite) == (looped.n_skipped, looped.n_nonfinite)
        assert named.low == pytest.approx(looped.low, abs=1e-12) and named.high == pytest.approx(looped.high, abs=1e-12)
    with pytest.raises(ValueError, match="unknown statistic"):
        bootstrap_over_seeds(df, "median")


def test_bootstrap_rejects_self_pairs_and_missing_columns():
    df = pd.DataFrame({"eps": [0, 0], "seed_a": [0, 1], "seed_b": [1, 1], "value": [0.5, 0.6]})
    with pytest.raises(ValueError):
        bootstrap_over_seeds(df, lambda t: t["value"].mean())
    with pytest.raises(ValueError):
        bootstrap_over_seeds(df.drop(columns="eps"), lambda t: t["value"].mean())
    with pytest.warns(RuntimeWarning):
        empty = bootstrap_over_seeds(df.iloc[:0], lambda t: t["value"].mean(), n_boot=10)
    assert np.isnan(empty.low) and empty.n_skipped == 10


def test_resampling_unit_is_the_seed_for_trained_models_and_the_model_for_zoo_models():
    assert resampling_unit({"id": "cnn-l2-eps0.5-s1", "source": "train", "seed": 1, "eps": 0.5}) == "seed:1"
    assert resampling_unit({"id": "cnn-l2-eps0-s1", "source": "train", "seed": 1, "eps": 0.0}) == "seed:1"
    assert resampling_unit({"id": "rb-standard", "source": "robustbench", "seed": 0, "eps": 0.0}) == "model:rb-standard"
    assert resampling_unit({"id": "r50-eps3", "source": "url", "seed": 0, "eps": 3.0}) == "model:r50-eps3"


def test_bootstrap_over_units_with_zoo_and_trained_models_sharing_seed_0():
    """Two trained seeds (each at eps 0 and 1) and one zoo model of seed 0, all pairs: a seed
    shared by a trained and a zoo model raises in bootstrap_over_seeds but not over units.
    Every resampled table equals an independent enumeration of the 27 unit draws, in which a
    pair appears once per (copy of a's unit, copy of b's unit) in the draw."""
    unit_of = {"t0-e0": "seed:0", "t0-e1": "seed:0", "t1-e0": "seed:1", "t1-e1": "seed:1", "zoo": "model:zoo"}
    seed_of = {"t0-e0": 0, "t0-e1": 0, "t1-e0": 1, "t1-e1": 1, "zoo": 0}
    pairs = list(itertools.combinations(unit_of, 2))
    df = pd.DataFrame({"model_a": [a for a, _ in pairs], "model_b": [b for _, b in pairs],
                       "seed_a": [seed_of[a] for a, _ in pairs], "seed_b": [seed_of[b] for _, b in pairs],
                       "unit_a": [unit_of[a] for a, _ in pairs], "unit_b": [unit_of[b] for _, b in pairs],
                       "eps": 0.0, "value": np.arange(len(pairs), dtype=float)})  # a row's value identifies it
    with pytest.raises(ValueError, match="equal"):
        bootstrap_over_seeds(df, "mean")
    units = ["model:zoo", "seed:0", "seed:1"]
    expected = set()
    for draw in itertools.product(units, repeat=3):
        if len(set(draw)) < 2:
            continue
        rows = Counter()
        for (a, b), v in zip(pairs, df["value"]):
            rows[v] += sum(1 for i in range(3) for j in range(3) if draw[i] == unit_of[a] and draw[j] == unit_of[b])
        expected.add(tuple(sorted((v, c) for v, c in rows.items() if c)))
    seen = []

    def record(t):
        seen.append(tuple(sorted(Counter(t["value"]).items())))
        return float(t["value"].mean())

    result = bootstrap_over_units(df, record, n_boot=600, seed=0)
    assert set(seen) == expected and len(expected) == 7  # multisets {u, v, w} (1) and {u, u, v} (6)
    assert 30 < result.n_skipped < 110 and len(result.statistics) == 600 - result.n_skipped  # P(skip) = 3/27
    named = bootstrap_over_units(df, "mean", n_boot=600, seed=0)
    np.testing.assert_allclose(named.statistics, result.statistics, rtol=1e-12)


def test_bootstrap_over_units_pearson_uses_the_named_x_column():
    rng = np.random.default_rng(12)
    eps = [0, 0.5, 1, 2, 3]
    pairs = list(itertools.combinations(range(5), 2))
    df = pd.DataFrame({"unit_a": [f"model:{a}" for a, _ in pairs], "unit_b": [f"model:{b}" for _, b in pairs],
                       "dist": [abs(eps[a] - eps[b]) for a, b in pairs]})
    df["value"] = 1 - 0.2 * df["dist"] + rng.normal(scale=0.05, size=len(df))

    def r(t):
        return float(np.corrcoef(t["dist"], t["value"])[0, 1]) if t["dist"].nunique() > 1 else float("nan")

    named = bootstrap_over_units(df, "pearson", n_boot=300, seed=3, x="dist")
    looped = bootstrap_over_units(df, r, n_boot=300, seed=3)
    np.testing.assert_allclose(named.statistics, looped.statistics, rtol=1e-10, atol=1e-12)
    assert named.low <= pearsonr(df["dist"], df["value"])[0] <= named.high < 0
    with pytest.raises(ValueError, match="lacks"):
        bootstrap_over_units(df, "pearson")  # no eps column
    with pytest.warns(RuntimeWarning, match="fewer than two"):
        one = bootstrap_over_units(df.assign(unit_a="seed:0", unit_b="seed:0"), "mean", n_boot=20)
    assert np.isnan(one.low) and one.n_skipped == 20


# --------------------------------------------------------------------------- Benjamini-Hochberg


def textbook_bh(p):
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p)
    q = np.empty(m)
    for rank, i in enumerate(order, start=1):
        q[i] = min(1.0, min(p[order[k - 1]] * m / k for k in range(rank, m + 1)))
    return q


def test_benjamini_hochberg_textbook_and_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.20, 0.002, 0.04, 0.9, 0.5])
    np.testing.assert_allclose(benjamini_hochberg(p), textbook_bh(p))
    np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p, method="bh"))
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.random(50), rng.random(10) * 1e-3])
    q = benjamini_hochberg(p)
    np.testing.assert_allclose(q, textbook_bh(p))
    order = np.argsort(p)
    assert (np.diff(q[order]) >= -1e-15).all() and (q <= 1).all() and (q >= p).all()


def test_benjamini_hochberg_keeps_nan_and_shape():
    p = np.array([[0.01, np.nan], [0.04, 0.03]])
    q = benjamini_hochberg(p)
    assert q.shape == p.shape and np.isnan(q[0, 1])
    np.testing.assert_allclose(q[~np.isnan(p)], textbook_bh(p[~np.isnan(p)]))
    with pytest.raises(ValueError, match=r"^p-values must lie in \[0, 1\]$"):
        benjamini_hochberg([0.5, 1.5])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        benjamini_hochberg([-1e-12, 0.5])


def test_benjamini_hochberg_one_p_value_and_the_closed_interval():
    """With one finite p-value, q = p (m = 1); 0 and 1 are valid p-values (an exact
    permutation p of 1 is common)."""
    np.testing.assert_array_equal(benjamini_hochberg([0.3]), [0.3])
    np.testing.assert_array_equal(benjamini_hochberg([np.nan, 0.2, np.nan]), [np.nan, 0.2, np.nan])
    np.testing.assert_array_equal(benjamini_hochberg([0.0, 1.0]), [0.0, 1.0])
    assert np.isnan(benjamini_hochberg([np.nan, np.nan])).all()


@pytest.mark.parametrize("model_a, model_b, eps_by_model, error, message", [
    (["a", "b"], ["b"], {"a": 0, "b": 1}, ValueError, r"^model_a and model_b must have the same length, got 2 and 1$"),
    (["a", "x"], ["b", "y"], {"a": 0, "b": 1}, KeyError, r"models without an eps in eps_by_model: \['x', 'y'\]"),
    (["a", "b"], ["b", "b"], {"a": 0, "b": 1}, ValueError, r"^a pair compares a model with itself$"),
    (["a", "a"], ["b", "c"], {"a": 0, "b": np.nan, "c": 1}, ValueError, r"^eps_by_model has a non-finite eps$"),
])
def test_pair_validation_names_the_problem(model_a, model_b, eps_by_model, error, message):
    with pytest.raises(error, match=message):
        pearson_eps_permutation([0.1, 0.2][:len(model_a)], model_a, model_b, eps_by_model, n_permutations=9)


def test_partial_correlation_refuses_unequal_lengths_by_name():
    with pytest.raises(ValueError, match=r"^x, y and covariate must have the same length, got 3, 3, 2$"):
        partial_correlation([1, 2, 3], [1, 2, 4], [0, 1])


# --------------------------------------------------------------------------- Freedman-Lane and the group-mean slope


def partial_r_lstsq(x, y, covariate):
    """Pearson r of the residuals of x and y after least squares on [1, covariate]."""
    design = np.column_stack([np.ones(len(x)), covariate])
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return np.corrcoef(rx, ry)[0, 1]


def freedman_lane_by_hand(x, y, covariate, orders):
    """(partial r of x and y given the covariate, the share of residual orders whose null r is
    as extreme): y = fitted + residual on [1, covariate]; each null is fitted + residual[order]."""
    design = np.column_stack([np.ones(len(y)), covariate])
    fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    resid = y - fitted
    observed = partial_r_lstsq(x, y, covariate)
    null = np.array([partial_r_lstsq(x, fitted + resid[list(o)], covariate) for o in orders])
    return observed, int(np.sum(np.abs(null) >= abs(observed) - 1e-10))


def eps_group_design(rng, k, pairs_per_group=3):
    """Pairs of a same-eps design: k eps levels, values and a covariate (accuracy) that both
    depend on eps, plus noise; rows shuffled so that group order is not file order."""
    eps = np.repeat(np.linspace(0.0, 3.0, k), pairs_per_group)
    covariate = 0.9 - 0.05 * eps + rng.normal(scale=0.02, size=len(eps))
    values = 0.5 + 0.1 * eps - 2.0 * covariate + rng.normal(scale=0.05, size=len(eps))
    order = rng.permutation(len(eps))
    return eps[order], values[order], covariate[order]


def test_freedman_lane_eps_groups_against_every_order_of_the_group_residuals():
    from robustlens.stats import freedman_lane_eps_groups

    rng = np.random.default_rng(3)
    eps, values, covariate = eps_group_design(rng, k=4)
    means = pd.DataFrame({"eps": eps, "v": values, "c": covariate}).groupby("eps").mean()
    levels = means.index.to_numpy()
    orders = list(itertools.permutations(range(4)))
    r, extreme = freedman_lane_by_hand(levels, means["v"].to_numpy(), means["c"].to_numpy(), orders)
    _, extreme_linear = freedman_lane_by_hand(levels, levels, means["c"].to_numpy(), orders)

    test = freedman_lane_eps_groups(values, eps, covariate, n_permutations=24)
    assert test.r == pytest.approx(r, abs=1e-12)
    assert test.p_value == pytest.approx(extreme / 24, abs=1e-12)
    assert test.min_p == pytest.approx(extreme_linear / 24, abs=1e-12)
    assert (test.n_pairs, test.n_permutations, test.exact, test.test) == (12, 24, True, "freedman_lane_eps_groups")

    # one relabeling fewer than 4! = 24: random orders, p = (1 + extreme) / (1 + n), reproducible by seed
    random = freedman_lane_eps_groups(values, eps, covariate, n_permutations=23, seed=5)
    assert (random.n_permutations, random.exact) == (23, False)
    assert random.r == pytest.approx(r, abs=1e-12)
    assert (random.p_value * 24) == pytest.approx(round(random.p_value * 24), abs=1e-9) and random.p_value >= 1 / 24
    assert freedman_lane_eps_groups(values, eps, covariate, n_permutations=23, seed=5) == random


@pytest.mark.parametrize("k, bad", [(3, None), (5, "value"), (5, "covariate")])
def test_freedman_lane_eps_groups_is_undefined_below_four_levels_or_with_missing_values(k, bad):
    from robustlens.stats import freedman_lane_eps_groups

    eps, values, covariate = eps_group_design(np.random.default_rng(0), k=k)
    if bad == "value":
        values[0] = np.nan
    if bad == "covariate":
        covariate[0] = np.inf
    test = freedman_lane_eps_groups(values, eps, covariate)
    assert np.isnan(test.r) and np.isnan(test.p_value) and np.isnan(test.min_p)
    assert (test.n_pairs, test.n_permutations, test.exact, test.test) == (3 * k, 0, False, "freedman_lane_eps_groups")


def test_freedman_lane_eps_groups_of_values_linear_in_the_covariate_has_no_partial_r():
    """Group means exactly linear in the covariate leave zero residuals: the partial r and its
    p-value are undefined (NaN), not 0 or 1, while the design's smallest p (eps against the
    covariate) is still the exact enumeration's."""
    from robustlens.stats import freedman_lane_eps_groups

    eps, _, covariate = eps_group_design(np.random.default_rng(2), k=4)
    test = freedman_lane_eps_groups(3.0 * covariate + 1.0, eps, covariate, n_permutations=24)
    assert np.isnan(test.r) and np.isnan(test.p_value)
    means = pd.DataFrame({"eps": eps, "c": covariate}).groupby("eps").mean()
    levels = means.index.to_numpy()
    _, extreme_linear = freedman_lane_by_hand(levels, levels, means["c"].to_numpy(), list(itertools.permutations(range(4))))
    assert test.min_p == pytest.approx(extreme_linear / 24, abs=1e-12) and (test.n_permutations, test.exact) == (24, True)


def test_freedman_lane_models_against_every_relabeling_of_four_models():
    """Pairs of all 4 models; a relabeling pi gives pair {a, b} the residual of pair {pi(a), pi(b)}."""
    from robustlens.stats import freedman_lane_models

    rng = np.random.default_rng(11)
    eps_by_model = {"m0": 0.0, "m1": 0.5, "m2": 1.0, "m3": 2.0}
    models = list(eps_by_model)
    pairs = list(itertools.combinations(models, 2))
    ma, mb = zip(*pairs)
    x = np.array([(eps_by_model[a] + eps_by_model[b]) / 2 for a, b in pairs])
    covariate = rng.normal(size=len(pairs))
    values = 0.3 * x + 0.5 * covariate + rng.normal(scale=0.1, size=len(pairs))
    position = {frozenset(p): i for i, p in enumerate(pairs)}
    orders = [[position[frozenset((models[perm[models.index(a)]], models[perm[models.index(b)]]))] for a, b in pairs]
              for perm in itertools.permutations(range(4))]
    r, extreme = freedman_lane_by_hand(x, values, covariate, orders)
    test = freedman_lane_models(values, ma, mb, eps_by_model, covariate, n_permutations=24)
    assert test.r == pytest.approx(r, abs=1e-12)
    assert test.p_value == pytest.approx(extreme / 24, abs=1e-12)
    assert (test.n_pairs, test.n_permutations, test.exact, test.test) == (6, 24, True, "freedman_lane_models")
    with pytest.raises(ValueError, match="every pair of the models"):
        freedman_lane_models(values[:-1], ma[:-1], mb[:-1], eps_by_model, covariate[:-1])


def test_group_mean_slope_is_ols_on_the_group_means_with_its_t_interval():
    from scipy.stats import linregress, t

    from robustlens.stats import group_mean_slope

    rng = np.random.default_rng(2)
    eps = np.repeat([0.0, 0.25, 0.5, 1.0, 2.0], [1, 3, 2, 3, 1])
    values = 0.4 - 0.1 * eps + rng.normal(scale=0.03, size=len(eps))
    means = pd.DataFrame({"eps": eps, "v": values}).groupby("eps")["v"].mean()
    fit = linregress(means.index.to_numpy(), means.to_numpy())
    for ci in (0.95, 0.8):
        half = t.ppf((1 + ci) / 2, 3) * fit.stderr
        slope = group_mean_slope(eps, values, ci=ci)
        assert (slope.slope, slope.low, slope.high) == pytest.approx((fit.slope, fit.slope - half, fit.slope + half), abs=1e-12)
        assert slope.n_levels == 5

    two = group_mean_slope([1.0, 1.0, 3.0], [0.2, 0.4, 1.3])  # means 0.3 and 1.3: slope 0.5, no interval
    assert two.slope == pytest.approx(0.5, abs=1e-12) and np.isnan(two.low) and np.isnan(two.high) and two.n_levels == 2
    one = group_mean_slope([1.0, 1.0], [0.2, 0.4])
    assert np.isnan(one.slope) and np.isnan(one.low) and np.isnan(one.high) and one.n_levels == 1
    missing = group_mean_slope(eps, np.where(np.arange(len(eps)) == 0, np.nan, values))
    assert np.isnan(missing.slope) and missing.n_levels == 5
    for ci in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=f"ci must lie in \\(0, 1\\), got {ci}"):
            group_mean_slope(eps, values, ci=ci)


# --------------------------------------------------------------------------- records, refusals and degenerate draws


def test_random_relabelings_p_is_one_plus_extreme_over_one_plus_n():
    """Two eps groups: the only other relabeling swaps the groups, which flips r's sign, so every
    relabeling is as extreme as the data and p = (1 + n) / (1 + n) = 1 on the random path too."""
    rng = np.random.default_rng(0)
    models, df = same_eps_pairs([0, 1], [0, 1, 2], lambda e: 0.5 + 0.1 * e, rng)
    args = (df["value"], df["model_a"], df["model_b"], models)
    exact = pearson_eps_permutation(*args, n_permutations=2, permute="eps_groups")
    assert (exact.p_value, exact.n_permutations, exact.exact) == (1.0, 2, True)
    random = pearson_eps_permutation(*args, n_permutations=1, permute="eps_groups", seed=3)
    assert (random.p_value, random.n_permutations, random.exact, random.n_pairs) == (1.0, 1, False, 6)


def test_random_relabelings_agree_with_exact_enumeration_across_chunks():
    """3,000 random relabelings (three chunks) estimate the exact p of all 8!/(2! 2! 2!) = 5,040
    distinct relabelings within four binomial standard errors; the same seed repeats them."""
    rng = np.random.default_rng(4)
    eps_by_model = {f"m{i}": e for i, e in enumerate([0, 0, 1, 1, 2, 2, 3, 4])}
    pairs = list(itertools.combinations(eps_by_model, 2))
    ma, mb = zip(*pairs)
    values = [0.03 * (eps_by_model[a] + eps_by_model[b]) + rng.normal(scale=0.3) for a, b in pairs]
    exact = pearson_eps_permutation(values, ma, mb, eps_by_model, n_permutations=5040)
    assert exact.exact and exact.n_permutations == 5040 and 0.05 < exact.p_value < 0.95
    random = pearson_eps_permutation(values, ma, mb, eps_by_model, n_permutations=3000, seed=1)
    se = np.sqrt(exact.p_value * (1 - exact.p_value) / 3000)
    assert not random.exact and random.n_permutations == 3000
    assert abs(random.p_value - exact.p_value) < 4 * se
    assert round(random.p_value * 3001) == pytest.approx(random.p_value * 3001, abs=1e-9)
    assert pearson_eps_permutation(values, ma, mb, eps_by_model, n_permutations=3000, seed=1) == random


def test_undefined_permutation_records_and_refused_arguments():
    rng = np.random.default_rng(7)
    models, df = same_eps_pairs([0, 1], [0, 1, 2], lambda e: 0.5 + e, rng)
    args = (df["model_a"], df["model_b"], models)
    with pytest.warns(RuntimeWarning, match="not finite: r and p are NaN"):
        bad = pearson_eps_permutation(np.where(df["eps"] == 1, np.nan, 1.0), *args)
    assert np.isnan(bad.r) and np.isnan(bad.p_value) and (bad.n_pairs, bad.n_permutations, bad.exact) == (6, 0, False)
    with pytest.warns(RuntimeWarning, match="not finite"):
        bad_covariate = partial_eps_permutation(df["value"], *args, np.where(df["eps"] == 1, np.inf, 1.0))
    assert np.isnan(bad_covariate.r) and (bad_covariate.n_pairs, bad_covariate.n_permutations) == (6, 0)
    with pytest.raises(ValueError, match="values has 5 entries but there are 6 pairs"):
        pearson_eps_permutation(df["value"][:5], *args)
    with pytest.raises(ValueError, match="covariate has 4 entries but there are 6 pairs"):
        partial_eps_permutation(df["value"], *args, np.ones(4))
    with pytest.raises(ValueError, match="n_permutations must be at least 1"):
        pearson_eps_permutation(df["value"], *args, n_permutations=0)
    with pytest.raises(ValueError, match="permute must be one of .*got 'seeds'"):
        pearson_eps_permutation(df["value"], *args, permute="seeds")
    one = pearson_eps_permutation(df["value"], *args, n_permutations=1, seed=2)
    assert one.n_permutations == 1 and one.p_value in (0.5, 1.0)


def test_bootstrap_refusals_and_degenerate_tables():
    rng = np.random.default_rng(0)
    _, df = same_eps_pairs([0, 1], [0, 1, 2], lambda e: 0.7, rng)
    table = df[["eps", "seed_a", "seed_b", "value"]]
    for ci in (0.0, 1.0):
        with pytest.raises(ValueError, match=f"ci must lie in \\(0, 1\\), got {ci}"):
            bootstrap_over_seeds(table, "mean", ci=ci)
    no_pairs = table.iloc[:0]
    with pytest.warns(RuntimeWarning, match="fewer than two resampling units, no CI"):
        none = bootstrap_over_seeds(no_pairs, "mean", n_boot=7)
    assert np.isnan(none.low) and np.isnan(none.high) and none.statistics.dtype == float and len(none.statistics) == 0
    assert (none.n_boot, none.n_skipped, none.n_nonfinite) == (7, 7, 0)
    two_units = pd.DataFrame({"eps": [0.0], "seed_a": [0], "seed_b": [1], "value": [0.5]})
    both = bootstrap_over_seeds(two_units, "mean", n_boot=200, seed=1)  # a draw is {0, 1} half the time
    assert both.low == both.high == 0.5 and 60 < len(both.statistics) < 140
    assert both.n_skipped == 200 - len(both.statistics) and both.n_nonfinite == 0
    with pytest.warns(RuntimeWarning, match="no finite statistic in 50 draws"):
        nan = bootstrap_over_seeds(two_units, lambda t: float("nan"), n_boot=50, seed=1)
    assert np.isnan(nan.low) and np.isnan(nan.high) and len(nan.statistics) == 0
    assert nan.n_boot == 50 and nan.n_skipped + nan.n_nonfinite == 50 and nan.n_nonfinite > 0


def test_bootstrap_skips_draws_without_a_listed_pair_at_the_enumerated_rate():
    """Units 0-3 but only pairs {0, 1} and {2, 3}: a draw is kept when it holds both units of
    some pair. The kept share of 20,000 draws matches the enumeration of all 4^4 draws."""
    table = pd.DataFrame({"eps": [0.0, 0.0], "seed_a": [0, 2], "seed_b": [1, 3], "value": [0.2, 0.6]})
    draws = list(itertools.product(range(4), repeat=4))
    kept = np.mean([({0, 1} <= set(d)) or ({2, 3} <= set(d)) for d in draws])
    result = bootstrap_over_seeds(table, "mean", n_boot=20000, seed=0)
    assert abs(len(result.statistics) / 20000 - kept) < 4 * np.sqrt(kept * (1 - kept) / 20000)
    assert result.n_skipped == 20000 - len(result.statistics)
    assert set(np.round(result.statistics, 12)) <= {0.2, 0.6, 0.4}
