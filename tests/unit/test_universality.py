"""The headline and correlation tables, and the figures that read the same pairs, on synthetic
pair values with a planted effect, for every design a config can make: several seeds per eps
(same-eps pairs), trained models mixed with zoo models that all default to seed 0, one model
per eps with all pairs, and an explicit pair list."""

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from scipy.stats import false_discovery_control, pearsonr

from robustlens.plots import predictive as predictive_plots
from robustlens.plots import similarity as similarity_plots
from robustlens.similarity_tables import correlations_table
from robustlens.universality import universality_table

SETTINGS = {"n_permutations": 500, "ci": 0.95, "seed": 0}
EPS = [0.0, 0.5, 1.0, 2.0]
SEEDS = [0, 1, 2]
UNIVERSALITY_COLUMNS = ["study", "design", "x", "probe", "head", "measure", "n_pairs", "n_units", "n_levels", "statistic",
                        "value", "test", "reason"]
CORRELATIONS_COLUMNS = ["study", "design", "x", "probe", "measure", "layer", "n_pairs", "n_units", "n_levels", "statistic",
                        "value", "test", "reason"]


def trained(eps, seed):
    return {"id": f"m-eps{eps}-s{seed}", "source": "train", "eps": float(eps), "seed": seed}


def zoo(name, eps):
    return {"id": name, "source": "robustbench", "eps": float(eps), "seed": 0}  # zoo entries default to seed 0


def grid_models(eps_values=EPS, seeds=SEEDS):
    return {s["id"]: s for s in (trained(e, k) for e in eps_values for k in seeds)}


def same_eps_pairs(models):
    return [(a, b) for a, b in itertools.combinations(models, 2) if models[a]["eps"] == models[b]["eps"]]


def predictive_frame(models, pairs, value_fn, rng, probes=(("natural", 1.0), ("inverted", -1.0))):
    """Agreement rows of every pair: value_fn(eps_a, eps_b) * sign(probe) with the original heads,
    no effect with retrained heads (two head seeds); accuracies vary so the partial r is defined."""
    rows = []
    for probe, sign in probes:
        for a, b in pairs:
            ea, eb = models[a]["eps"], models[b]["eps"]
            for head, head_seed in (("original", -1), ("retrained", 0), ("retrained", 1)):
                effect = sign * value_fn(ea, eb) if head == "original" else 0.0
                rows.append({"probe": probe, "source": "digits", "head": head, "head_seed": head_seed, "measure": "agreement",
                             "model_a": a, "model_b": b, "eps_a": ea, "eps_b": eb, "seed_a": models[a]["seed"],
                             "seed_b": models[b]["seed"], "value": 0.5 + effect + rng.normal(scale=0.01),
                             "accuracy_a": 0.95 - 0.02 * ea + rng.normal(scale=0.01),
                             "accuracy_b": 0.95 - 0.02 * eb + rng.normal(scale=0.01)})
    return pd.DataFrame(rows)


def similarity_frame(models, pairs, value_fn, rng, layers=(("block1", 0.0), ("penultimate", 1.0)), measures=("cka_unbiased",)):
    rows = []
    for measure in measures:
        for layer, slope in layers:
            for a, b in pairs:
                ea, eb = models[a]["eps"], models[b]["eps"]
                rows.append({"probe": "natural", "source": "digits", "measure": measure, "layer": layer, "model_a": a,
                             "model_b": b, "eps_a": ea, "eps_b": eb, "seed_a": models[a]["seed"], "seed_b": models[b]["seed"],
                             "value": 0.5 + slope * value_fn(ea, eb) + rng.normal(scale=0.01)})
    return pd.DataFrame(rows)


def wide(table, index):
    return table.pivot_table(index=index, columns="statistic", values="value", dropna=False)


def mean_pairs(frame, keys=("probe", "head", "measure", "model_a", "model_b", "eps_a", "eps_b")):
    return frame.groupby(list(keys), as_index=False)[["value", "accuracy_a", "accuracy_b"]].mean()


# --------------------------------------------------------------------------- same-eps design (trained seeds)


def group_relabeling_p(x, values) -> float:
    """Exact p of the eps-group test written out: every assignment of the k eps values to the k
    groups of pairs, Pearson r over the pairs, two-sided, the identity included."""
    levels = sorted(set(x))
    observed = np.corrcoef(x, values)[0, 1]
    null = [np.corrcoef([dict(zip(levels, order))[e] for e in x], values)[0, 1] for order in itertools.permutations(levels)]
    return float(np.mean(np.abs(null) >= abs(observed) - 1e-10))


def group_slope_interval(x, values, ci=0.95):
    """OLS slope of the per-eps means with scipy's standard error and a t quantile, k - 2 df."""
    from scipy.stats import linregress, t

    means = pd.Series(values).groupby(np.asarray(x)).mean()
    fit = linregress(means.index.to_numpy(float), means.to_numpy())
    half = t.ppf((1 + ci) / 2, len(means) - 2) * fit.stderr
    return fit.slope, fit.slope - half, fit.slope + half


def freedman_lane_p(x, values, covariate, index_rows) -> float:
    """Freedman-Lane written out with lstsq: values = a + b covariate + e; for each row of
    ``index_rows`` the null values fitted + e[row]; partial r of x with them given the covariate."""
    x, values, covariate = (np.asarray(v, dtype=float) for v in (x, values, covariate))
    design = np.column_stack([np.ones(len(values)), covariate])
    fitted = design @ np.linalg.lstsq(design, values, rcond=None)[0]
    observed = lstsq_partial_r(x, values, covariate)
    null = [lstsq_partial_r(x, fitted + (values - fitted)[list(row)], covariate) for row in index_rows]
    return float(np.mean(np.abs(null) >= abs(observed) - 1e-10))


def test_universality_table_same_eps_tests_match_their_definitions():
    models = grid_models()
    frame = predictive_frame(models, same_eps_pairs(models), lambda a, b: -0.1 * a, np.random.default_rng(0))
    table = universality_table("t", frame, SETTINGS, models)
    assert list(table.columns) == UNIVERSALITY_COLUMNS
    assert set(table["design"]) == {"same_eps"} and set(table["x"]) == {"eps"}
    w = wide(table, ["probe", "head", "measure"])
    row = w.loc[("natural", "original", "agreement")]
    pairs = mean_pairs(frame[(frame["probe"] == "natural") & (frame["head"] == "original")])
    x, v = pairs["eps_a"].to_numpy(), pairs["value"].to_numpy()
    assert row["r"] == pytest.approx(pearsonr(x, v)[0], abs=1e-12) and row["r"] < -0.9
    assert w.loc[("inverted", "original", "agreement"), "r"] > 0.9
    # 4 eps levels: 4! = 24 relabelings of the groups; the planted effect reaches the smallest p
    assert row["p_value"] == pytest.approx(group_relabeling_p(x, v)) and row["p_value"] == pytest.approx(1 / 24)
    assert row["min_p"] == pytest.approx(group_relabeling_p(x, x)) == pytest.approx(1 / 24)
    assert (row["slope"], row["slope_ci_low"], row["slope_ci_high"]) == pytest.approx(group_slope_interval(x, v), abs=1e-12)
    assert row["slope_ci_low"] < -0.1 < row["slope_ci_high"]  # the planted slope
    # partial r: Freedman-Lane over the 4 eps groups, residuals of the group means permuted
    covariate = (pairs["accuracy_a"] + pairs["accuracy_b"]) / 2
    assert row["partial_r"] == pytest.approx(lstsq_partial_r(x, v, covariate), abs=1e-10)
    groups = pd.DataFrame({"x": x, "v": v, "c": covariate}).groupby("x").mean()
    assert row["partial_p_value"] == pytest.approx(freedman_lane_p(groups.index, groups["v"], groups["c"],
                                                                   itertools.permutations(range(4))))
    assert row["covariate_r2"] == pytest.approx(pearsonr(groups.index, groups["c"])[0] ** 2)
    # retrained heads: the pairs' values averaged over the two head seeds, no planted effect
    retrained = mean_pairs(frame[(frame["probe"] == "natural") & (frame["head"] == "retrained")])
    assert len(retrained) == len(pairs)
    expected = pearsonr(retrained["eps_a"], retrained["value"])[0]
    assert w.loc[("natural", "retrained", "agreement"), "r"] == pytest.approx(expected, abs=1e-12) and abs(expected) < 0.7
    assert (table["n_pairs"] == len(EPS) * 3).all() and (table["n_units"] == 3).all() and (table["n_levels"] == 4).all()
    assert table["value"].notna().all() and (table["reason"] == "").all()
    tests = table.set_index("statistic")["test"].groupby(level=0).first()
    assert tests["p_value"] == "eps_groups_permutation" and tests["slope_ci_low"] == "t_interval_group_means"
    assert tests["partial_p_value"] == "freedman_lane_eps_groups" and tests["r"] == "pearson_r_over_pairs"


def test_correlations_table_has_q_values_per_layer():
    models = grid_models()
    table = correlations_table("t", similarity_frame(models, same_eps_pairs(models), lambda a, b: 0.1 * a,
                                                     np.random.default_rng(1)), SETTINGS, models)
    assert list(table.columns) == CORRELATIONS_COLUMNS
    w = wide(table, "layer")
    assert w.loc["penultimate", "r"] > 0.9 and w.loc["penultimate", "p_value"] == pytest.approx(1 / 24)
    np.testing.assert_allclose(w["q_value"], false_discovery_control(w["p_value"], method="bh"))


def test_three_eps_levels_give_r_and_a_slope_but_no_p_value():
    """The smallest same-eps design: 3 eps x 2 seeds. A p-value needs 4 eps levels (with 3 the
    group test cannot go below 1/3); the slope interval has 1 degree of freedom."""
    models = grid_models([0.0, 1.0, 2.0], [0, 1])
    frame = predictive_frame(models, same_eps_pairs(models), lambda a, b: -0.1 * a, np.random.default_rng(2))
    table = universality_table("t", frame, SETTINGS, models)
    w = wide(table, ["probe", "head", "measure"])
    row = w.loc[("natural", "original", "agreement")]
    pairs = mean_pairs(frame[(frame["probe"] == "natural") & (frame["head"] == "original")])
    assert row["r"] == pytest.approx(pearsonr(pairs["eps_a"], pairs["value"])[0], abs=1e-12)
    assert (row["slope"], row["slope_ci_low"], row["slope_ci_high"]) == pytest.approx(
        group_slope_interval(pairs["eps_a"].to_numpy(), pairs["value"].to_numpy()), abs=1e-12)
    no_p = table[table["statistic"].isin(["p_value", "min_p"])]
    assert no_p["value"].isna().all() and (no_p["reason"] == "3 eps levels: a p-value needs at least 4").all()
    partial = table[table["statistic"].str.startswith("partial")]  # 3 pairs: partial r itself is +-1
    assert partial["value"].isna().all() and partial["reason"].str.startswith("fewer than 4 pairs").all()


# --------------------------------------------------------------------------- trained + zoo models (seed 0)


def robustbench_like():
    """configs/robustbench-filters.yaml in small: trained eps-0 models of seeds 0, 1, 2, a zoo
    eps-0 model and four zoo eps-0.5 models, all zoo models of seed 0; pairs: all."""
    models = grid_models([0.0], [0, 1, 2]) | {s["id"]: s for s in [zoo("rb-standard", 0)] + [zoo(f"rb-{i}", 0.5) for i in range(4)]}
    return models, list(itertools.combinations(models, 2))


def test_zoo_models_sharing_seed_0_with_trained_models_are_their_own_units():
    """The robustbench config's shape: two eps levels (0 and 0.5), so r and the slope but no
    p-value and no slope interval (it needs 3 levels)."""
    models, pairs = robustbench_like()
    frame = predictive_frame(models, pairs, lambda a, b: -0.2 * (a + b), np.random.default_rng(3))
    table = universality_table("t", frame, SETTINGS, models)
    assert set(table["design"]) == {"same_eps"} and (table["n_levels"] == 2).all()
    w = wide(table, ["probe", "head", "measure"])
    same = mean_pairs(frame[(frame["eps_a"] == frame["eps_b"]) & (frame["probe"] == "natural") & (frame["head"] == "original")])
    row = w.loc[("natural", "original", "agreement")]
    assert row["r"] == pytest.approx(pearsonr(same["eps_a"], same["value"])[0], abs=1e-12) and row["r"] < -0.9
    means = same.groupby("eps_a")["value"].mean()
    assert row["slope"] == pytest.approx((means[0.5] - means[0.0]) / 0.5, abs=1e-12)
    undefined = table[table["statistic"].isin(["p_value", "min_p", "slope_ci_low", "slope_ci_high", "partial_p_value"])]
    assert undefined["value"].isna().all() and (undefined["reason"].str.len() > 0).all()
    # units: the three trained seeds and each of the five zoo models
    assert (table["n_units"] == 8).all() and (table["n_pairs"] == len(same)).all()


# --------------------------------------------------------------------------- one model per eps, all pairs


ONE_PER_EPS = [0.0, 0.25, 0.5, 1.0, 2.0, 3.0]


def one_per_eps():
    """configs/imagenet-universality.yaml in small: one url checkpoint per eps, pairs: all."""
    models = {f"r50-eps{e:g}": {"id": f"r50-eps{e:g}", "source": "url", "eps": e, "seed": 0} for e in ONE_PER_EPS}
    return models, list(itertools.combinations(models, 2))


def brute_force_p(pairs: pd.DataFrame, x_of) -> float:
    """Exact permutation p over all 720 assignments of the 6 eps to the 6 models."""
    models = sorted(set(pairs["model_a"]) | set(pairs["model_b"]))
    eps = dict(zip(pairs["model_a"], pairs["eps_a"])) | dict(zip(pairs["model_b"], pairs["eps_b"]))

    def r_of(assignment):
        x = [x_of(assignment[a], assignment[b]) for a, b in zip(pairs["model_a"], pairs["model_b"])]
        return np.corrcoef(x, pairs["value"])[0, 1]

    observed = r_of(eps)
    null = [r_of(dict(zip(models, p))) for p in itertools.permutations([eps[m] for m in models])]
    return float(np.mean(np.abs(null) >= abs(observed) - 1e-10))


def lstsq_partial_r(x, y, c):
    design = np.column_stack([np.ones(len(c)), c])
    res = [v - design @ np.linalg.lstsq(design, v, rcond=None)[0] for v in (np.asarray(x, float), np.asarray(y, float))]
    return np.corrcoef(*res)[0, 1]


def test_one_model_per_eps_correlates_with_eps_distance_and_min_eps():
    models, pairs = one_per_eps()
    frame = predictive_frame(models, pairs, lambda a, b: -0.05 * abs(a - b), np.random.default_rng(5))
    table = universality_table("t", frame, SETTINGS | {"n_permutations": 1000}, models)  # 6! = 720: exact p
    assert list(table.columns) == UNIVERSALITY_COLUMNS
    assert set(table["design"]) == {"all_pairs"} and set(table["x"]) == {"eps_distance", "min_eps"}
    w = wide(table, ["x", "probe", "head", "measure"])
    pairs_df = mean_pairs(frame[(frame["probe"] == "natural") & (frame["head"] == "original")])
    covariate = (pairs_df["accuracy_a"] + pairs_df["accuracy_b"]) / 2
    names = sorted(models)
    index = {frozenset(p): i for i, p in enumerate(zip(pairs_df["model_a"], pairs_df["model_b"]))}
    # Freedman-Lane over model relabelings: pair {a, b} takes the residual of pair {pi(a), pi(b)}
    relabelings = [[index[frozenset((dict(zip(names, order))[a], dict(zip(names, order))[b]))]
                    for a, b in zip(pairs_df["model_a"], pairs_df["model_b"])] for order in itertools.permutations(names)]
    for x, x_of in (("eps_distance", lambda a, b: abs(a - b)), ("min_eps", min)):
        row = w.loc[(x, "natural", "original", "agreement")]
        xs = [x_of(a, b) for a, b in zip(pairs_df["eps_a"], pairs_df["eps_b"])]
        assert row["r"] == pytest.approx(pearsonr(xs, pairs_df["value"])[0], abs=1e-12)
        assert row["p_value"] == pytest.approx(brute_force_p(pairs_df, x_of))
        assert row["min_p"] == pytest.approx(brute_force_p(pairs_df.assign(value=xs), x_of))
        assert row["partial_r"] == pytest.approx(lstsq_partial_r(xs, pairs_df["value"], covariate), abs=1e-10)
        assert row["partial_p_value"] == pytest.approx(freedman_lane_p(xs, pairs_df["value"], covariate, relabelings))
        assert row["covariate_r2"] == pytest.approx(pearsonr(xs, covariate)[0] ** 2)
    assert w.loc[("eps_distance", "natural", "original", "agreement"), "r"] < -0.9
    assert w.loc[("eps_distance", "natural", "original", "agreement"), "p_value"] < 0.01
    assert np.isfinite(w[["r", "p_value", "min_p", "partial_r", "partial_p_value"]].to_numpy()).all()
    assert "slope" not in w.columns  # no slope interval without several models per eps
    assert (table["n_pairs"] == 15).all() and (table["n_units"] == 6).all() and (table["n_levels"] == 6).all()


def test_one_model_per_eps_correlations_table():
    models, pairs = one_per_eps()
    table = correlations_table("t", similarity_frame(models, pairs, lambda a, b: 0.1 * min(a, b), np.random.default_rng(6)),
                               SETTINGS, models)
    assert list(table.columns) == CORRELATIONS_COLUMNS
    w = wide(table, ["x", "layer"])
    assert len(w) == 4 and np.isfinite(w[["r", "p_value", "q_value"]].to_numpy(float)).all()
    assert w.loc[("min_eps", "penultimate"), "r"] > 0.9
    np.testing.assert_allclose(w["q_value"], false_discovery_control(w["p_value"], method="bh"))


# --------------------------------------------------------------------------- explicit pair lists


def transfer_like():
    """configs/imagenet-transfer.yaml: [[r18-0, r18-3], [r50-0, r50-3], [r18-3, r50-3]], all url
    checkpoints of seed 0; one same-eps pair (eps 3) only, so the all-pairs analysis."""
    models = {m: {"id": m, "source": "url", "eps": e, "seed": 0} for m, e in
              (("r18-eps0", 0.0), ("r18-eps3", 3.0), ("r50-eps0", 0.0), ("r50-eps3", 3.0))}
    return models, [("r18-eps0", "r18-eps3"), ("r50-eps0", "r50-eps3"), ("r18-eps3", "r50-eps3")]


def test_explicit_pair_list_is_defined_or_says_why_not():
    models, pairs = transfer_like()
    frame = predictive_frame(models, pairs, lambda a, b: -0.05 * abs(a - b), np.random.default_rng(7))
    table = universality_table("t", frame, SETTINGS, models)
    assert set(table["design"]) == {"all_pairs"} and (table["n_pairs"] == 3).all()
    w = wide(table, ["x", "probe", "head", "measure"])
    natural = mean_pairs(frame[(frame["probe"] == "natural") & (frame["head"] == "original")])
    assert w.loc[("eps_distance", "natural", "original", "agreement"), "r"] == pytest.approx(
        pearsonr((natural["eps_a"] - natural["eps_b"]).abs(), natural["value"])[0], abs=1e-12)
    partial = table[table["statistic"].str.startswith("partial")]
    assert partial["value"].isna().all() and partial["reason"].str.startswith("fewer than 4 pairs").all()
    undefined = table[table["value"].isna()]
    assert (undefined["reason"].str.len() > 0).all() and (table.loc[table["value"].notna(), "reason"] == "").all()

    two_pairs = universality_table("t", frame[frame["model_a"] != "r18-eps3"], SETTINGS, models)
    r_rows = two_pairs[two_pairs["statistic"] == "r"]
    assert r_rows["value"].isna().all() and (r_rows["reason"] == "fewer than 3 pairs").all()
    assert two_pairs.loc[two_pairs["statistic"] == "mean_value", "value"].notna().all()


def test_a_pair_list_that_is_not_every_pair_gets_no_p_value():
    """Pairs with the eps-0 model only (a star), 6 eps levels: relabeling models would move the
    star's centre, so no permutation of models keeps the pairs and no calibrated test exists."""
    models, _ = one_per_eps()
    star = [("r50-eps0", m) for m in models if m != "r50-eps0"]
    table = universality_table("t", predictive_frame(models, star, lambda a, b: -0.05 * abs(a - b), np.random.default_rng(10)),
                               SETTINGS, models)
    table = table[table["x"] == "eps_distance"]  # min eps is 0 for every pair of the star: r undefined
    p = table[table["statistic"].isin(["p_value", "min_p", "partial_p_value"])]
    assert p["value"].isna().all() and p["reason"].str.contains("not every pair of their models").all()
    assert table.loc[table["statistic"] == "r", "value"].notna().all()


def test_tables_fail_clearly_without_pairs_or_specs():
    models, pairs = one_per_eps()
    frame = predictive_frame(models, pairs, lambda a, b: 0.0, np.random.default_rng(8))
    with pytest.raises(ValueError, match="no pair"):
        universality_table("t", frame.iloc[:0], SETTINGS, models)
    with pytest.raises(KeyError, match="r50-eps0"):
        universality_table("t", frame, SETTINGS, {m: s for m, s in models.items() if m != "r50-eps0"})


# --------------------------------------------------------------------------- figures of every design


@pytest.fixture
def captured(monkeypatch):
    """Figures the plot functions would save, kept for inspection (no pyplot state to close)."""
    figures = []
    for module in (predictive_plots, similarity_plots):
        monkeypatch.setattr(module, "save", lambda fig, paths, dpi, tight=False: figures.append(fig))
    return figures


def finite_points(ax) -> int:
    """Finite (x, y) points drawn on an axes by lines, scatters, error bars and bands."""
    arrays = [line.get_xydata() for line in ax.lines]
    for c in ax.collections:
        if isinstance(c, PathCollection):
            arrays.append(np.asarray(c.get_offsets(), dtype=float))
        elif isinstance(c, (LineCollection, PolyCollection)):
            arrays += [np.asarray(p.vertices, dtype=float) for p in c.get_paths()]
    return sum(int(np.isfinite(a.reshape(-1, 2)).all(axis=1).sum()) for a in arrays if a.size)


DESIGNS = {"same_eps": lambda: (grid_models(), None), "zoo_seed0": robustbench_like, "one_per_eps": one_per_eps,
           "pair_list": transfer_like}


@pytest.mark.parametrize("design", DESIGNS)
def test_every_figure_plots_data_in_every_design(design, captured):
    models, pairs = DESIGNS[design]()
    pairs = pairs or same_eps_pairs(models)
    rng = np.random.default_rng(9)
    predictive = predictive_frame(models, pairs, lambda a, b: -0.05 * abs(a - b) - 0.05 * a, rng)
    similarity = similarity_frame(models, pairs, lambda a, b: 0.1 * min(a, b), rng, measures=("cka_unbiased", "procrustes"))
    predictive_plots.plot_agreement_vs_eps(predictive, [], {}, 50, SETTINGS)
    similarity_plots.plot_cka_by_layer(similarity, [], {}, 50)
    predictive_plots.plot_heads_agreement(predictive, [], {}, 50)
    predictive_plots.plot_universality(universality_table("t", predictive, SETTINGS, models), [], {}, 50)
    similarity_plots.plot_similarity_vs_eps(similarity, [], {}, 50)
    assert len(captured) == 5
    for fig in captured:
        panels = [ax for ax in fig.axes if ax.axison]
        assert panels and all(finite_points(ax) > 0 for ax in panels), fig.texts[0].get_text() if fig.texts else fig
    n_x = 1 if design in ("same_eps", "zoo_seed0") else 2
    assert len(captured[0].axes) == n_x  # agreement vs eps: one panel per x of the design
    assert len(captured[2].axes) == 2 * n_x  # heads: probes x analyses
