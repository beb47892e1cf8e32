"""The headline and correlation tables on synthetic pair values with a planted effect."""

import itertools

import numpy as np
import pandas as pd
import pytest

from robustlens.universality import correlations_table, universality_table

SETTINGS = {"n_permutations": 500, "n_bootstrap": 200, "ci": 0.95, "seed": 0}
EPS = [0.0, 0.5, 1.0, 2.0]
SEEDS = [0, 1, 2]


def pairs():
    for eps in EPS:
        for sa, sb in itertools.combinations(SEEDS, 2):
            yield eps, sa, sb, f"m-eps{eps}-s{sa}", f"m-eps{eps}-s{sb}"


def predictive_frame(rng):
    rows = []
    for probe in ("natural", "inverted"):
        slope = -0.1 if probe == "natural" else 0.1
        for eps, sa, sb, a, b in pairs():
            for head, head_seed in (("original", -1), ("retrained", 0), ("retrained", 1)):
                value = 0.9 + (slope if head == "original" else 0.0) * eps + rng.normal(scale=0.01)
                rows.append({"probe": probe, "source": "digits", "head": head, "head_seed": head_seed, "measure": "agreement",
                             "model_a": a, "model_b": b, "eps_a": eps, "eps_b": eps, "seed_a": sa, "seed_b": sb,
                             "value": value, "accuracy_a": 0.95, "accuracy_b": 0.95 + rng.normal(scale=0.001)})
    return pd.DataFrame(rows)


def test_universality_table_recovers_the_planted_signs():
    table = universality_table("t", predictive_frame(np.random.default_rng(0)), SETTINGS)
    wide = table.pivot_table(index=["probe", "head", "measure"], columns="statistic", values="value")
    assert wide.loc[("natural", "original", "agreement"), "r"] < -0.9
    assert wide.loc[("inverted", "original", "agreement"), "r"] > 0.9
    assert wide.loc[("natural", "original", "agreement"), "p_value"] < 0.01
    assert abs(wide.loc[("natural", "retrained", "agreement"), "r"]) < 0.7  # no planted effect after retraining
    low, high = wide.loc[("natural", "original", "agreement"), ["ci_low", "ci_high"]]
    assert low - 1e-9 <= wide.loc[("natural", "original", "agreement"), "r"] <= high + 1e-9
    assert (table["n_pairs"] == len(EPS) * 3).all()


def test_correlations_table_has_q_values_per_layer():
    rng = np.random.default_rng(1)
    rows = []
    for layer, slope in (("block1", 0.0), ("penultimate", 0.1)):
        for eps, sa, sb, a, b in pairs():
            rows.append({"probe": "natural", "source": "digits", "measure": "cka", "layer": layer, "model_a": a, "model_b": b,
                         "eps_a": eps, "eps_b": eps, "seed_a": sa, "seed_b": sb, "value": 0.5 + slope * eps + rng.normal(scale=0.01)})
    table = correlations_table("t", pd.DataFrame(rows), SETTINGS)
    wide = table.pivot_table(index="layer", columns="statistic", values="value")
    assert wide.loc["penultimate", "r"] > 0.9 and wide.loc["penultimate", "q_value"] < 0.05
    assert wide.loc["block1", "q_value"] >= wide.loc["block1", "p_value"] - 1e-12
