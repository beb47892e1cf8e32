"""Predictive rows of a pair: the original heads' logits from the stores, the retrained heads'
logits recomputed here from the stored penultimate features, head seed against head seed."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from robustlens.activations import activations_dataset
from robustlens.comparisons import pair_predictive_rows


def store(rng, labels, shift):
    features = rng.normal(size=(len(labels), 6)) + shift
    logits = rng.normal(size=(len(labels), 4))
    return activations_dataset({"penultimate": features, "logits": logits}, labels), features, logits


def heads(rng, seeds):
    return {"seeds": np.array(seeds), "weight": rng.normal(size=(len(seeds), 4, 6)), "bias": rng.normal(size=(len(seeds), 4))}


def test_pair_rows_for_original_and_each_shared_retrained_head_seed():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    (sa, fa, la), (sb, fb, lb) = store(rng, labels, 0.0), store(rng, labels, 0.5)
    ha, hb = heads(rng, [0, 1, 2]), heads(rng, [1, 2, 5])  # seeds 1 and 2 shared
    rows = pd.DataFrame(pair_predictive_rows(sa, sb, ha, hb, {"probe": "natural", "model_a": "a", "model_b": "b"}))
    assert sorted(set(zip(rows["head"], rows["head_seed"]))) == [("original", -1), ("retrained", 1), ("retrained", 2)]
    assert (rows["probe"] == "natural").all() and (rows["model_a"] == "a").all()

    def expected(pa, pb):
        ya, yb = pa.argmax(1), pb.argmax(1)
        return {"agreement": np.mean(ya == yb), "cohen_kappa": cohen_kappa_score(ya, yb),
                "accuracy_a": np.mean(ya == labels), "accuracy_b": np.mean(yb == labels)}

    cases = {("original", -1): (la, lb)}
    for seed in (1, 2):
        ia, ib = list(ha["seeds"]).index(seed), list(hb["seeds"]).index(seed)
        cases[("retrained", seed)] = (fa @ ha["weight"][ia].T + ha["bias"][ia], fb @ hb["weight"][ib].T + hb["bias"][ib])
    for (head, seed), (pa, pb) in cases.items():
        got = rows[(rows["head"] == head) & (rows["head_seed"] == seed)].set_index("measure")
        want = expected(pa, pb)
        assert got.loc["agreement", "value"] == pytest.approx(want["agreement"])
        assert got.loc["cohen_kappa", "value"] == pytest.approx(want["cohen_kappa"])
        np.testing.assert_allclose(got["accuracy_a"], want["accuracy_a"])
        np.testing.assert_allclose(got["accuracy_b"], want["accuracy_b"])
    # the retrained heads change the predictions (the test would not tell heads apart otherwise)
    assert len(set(rows[rows["measure"] == "agreement"]["value"].round(6))) == 3


def test_pair_rows_without_heads_are_the_original_heads_only():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 20)
    (sa, _, _), (sb, _, _) = store(rng, labels, 0.0), store(rng, labels, 0.0)
    rows = pd.DataFrame(pair_predictive_rows(sa, sb, None, heads(rng, [0]), {}))
    assert set(rows["head"]) == {"original"}
