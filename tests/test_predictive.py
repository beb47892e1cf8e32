"""Predictive measures against independent computations (scipy, scikit-learn, by hand)."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from sklearn.metrics import cohen_kappa_score

from robustlens.predictive import agreement, cohen_kappa, error_consistency, jsd_similarity, min_agreement_from_accuracy


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 5)) * 2, rng.normal(size=(200, 5)) * 2


def test_agreement_with_itself_is_one(logits):
    a, _ = logits
    assert agreement(a, a) == 1.0
    assert jsd_similarity(a, a) == pytest.approx(1.0, abs=1e-12)
    assert cohen_kappa(a, a) == pytest.approx(1.0)


def test_agreement_hand_case():
    a = np.eye(3)[[0, 1, 2, 0, 1]]
    b = np.eye(3)[[0, 1, 1, 2, 1]]
    assert agreement(a, b) == pytest.approx(3 / 5)


def test_jsd_matches_scipy_in_bits(logits):
    a, b = logits
    p, q = softmax(a, axis=1), softmax(b, axis=1)
    expected = 1 - np.mean([jensenshannon(pi, qi, base=2) ** 2 for pi, qi in zip(p, q)])
    assert jsd_similarity(a, b) == pytest.approx(expected, abs=1e-10)


def test_jsd_of_opposite_confident_predictions_is_near_zero():
    a = np.array([[50.0, 0.0], [0.0, 50.0]])
    b = a[:, ::-1]
    assert jsd_similarity(a, b) == pytest.approx(0.0, abs=1e-9)


def test_kappa_matches_sklearn(logits):
    a, b = logits
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a.argmax(1), b.argmax(1)))


def test_error_consistency_hand_case():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred_a = np.array([0, 0, 0, 1, 1, 1, 0, 0])  # right on 0,1,2,4,5: p_a = 5/8
    pred_b = np.array([0, 0, 1, 1, 1, 0, 0, 0])  # right on 0,1,4: p_b = 3/8
    c_obs = 6 / 8  # both right: 0,1,4; both wrong: 3,6,7
    c_exp = 5 / 8 * 3 / 8 + 3 / 8 * 5 / 8
    expected = (c_obs - c_exp) / (1 - c_exp)
    assert error_consistency(np.eye(2)[pred_a], np.eye(2)[pred_b], labels) == pytest.approx(expected)


def test_error_consistency_of_identical_correctness_is_one(logits):
    a, _ = logits
    labels = np.random.default_rng(1).integers(0, 5, size=len(a))
    assert error_consistency(a, a + 0.01, labels) == pytest.approx(1.0)


def test_agreement_respects_accuracy_bound():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, size=500)
    for _ in range(20):
        a = np.eye(4)[np.where(rng.random(500) < 0.8, labels, rng.integers(0, 4, 500))]
        b = np.eye(4)[np.where(rng.random(500) < 0.7, labels, rng.integers(0, 4, 500))]
        acc_a, acc_b = np.mean(a.argmax(1) == labels), np.mean(b.argmax(1) == labels)
        assert agreement(a, b) >= min_agreement_from_accuracy(acc_a, acc_b) - 1e-12
