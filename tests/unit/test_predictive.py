"""Predictive measures against independent computations (scipy, scikit-learn, by hand)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from sklearn.metrics import cohen_kappa_score

from robustlens.predictive import (
    PAIRWISE_MEASURES,
    accuracy,
    agreement,
    cohen_kappa,
    error_consistency,
    jsd_similarity,
    min_agreement_from_accuracy,
    pairwise_predictive,
)


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 5)) * 2, rng.normal(size=(200, 5)) * 2


def one_hot(pred, n_classes=3, scale=1.0):
    return np.eye(n_classes)[np.asarray(pred)] * scale


def test_a_model_compared_with_itself_scores_one(logits):
    a, _ = logits
    labels = np.random.default_rng(1).integers(0, 5, size=len(a))
    assert agreement(a, a) == 1.0
    assert jsd_similarity(a, a) == pytest.approx(1.0, abs=1e-12)
    assert cohen_kappa(a, a) == 1.0
    assert error_consistency(a, a, labels) == 1.0


def test_agreement_hand_case():
    a = one_hot([0, 1, 2, 0, 1])
    b = one_hot([0, 1, 1, 2, 1])
    assert agreement(a, b) == pytest.approx(3 / 5)
    assert isinstance(agreement(a, b), float)


def test_agreement_ties_go_to_the_lowest_class():
    a = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])  # argmax: 0, 1
    b = one_hot([0, 2])
    assert agreement(a, b) == 0.5


def test_jsd_matches_scipy_in_bits(logits):
    a, b = logits
    p, q = softmax(a, axis=1), softmax(b, axis=1)
    expected = 1 - np.mean([jensenshannon(pi, qi, base=2) ** 2 for pi, qi in zip(p, q)])
    assert jsd_similarity(a, b) == pytest.approx(expected, abs=1e-10)
    # scipy's default is the distance (a square root) in nats: a different number
    nats_distance = 1 - np.mean([jensenshannon(pi, qi) for pi, qi in zip(p, q)])
    assert abs(jsd_similarity(a, b) - nats_distance) > 0.05


def test_jsd_with_exact_zero_probabilities_is_finite_and_matches_scipy():
    # probabilities that underflow to exactly 0 (logit gaps of 1000) and masked -inf classes
    a = np.array([[0.0, -1000.0, 1.0], [0.0, -np.inf, 0.0], [5.0, 5.0, -np.inf]])
    b = np.array([[-1000.0, 0.0, 1.0], [-np.inf, 0.0, -np.inf], [-np.inf, 0.0, 0.0]])
    p, q = softmax(a, axis=1), softmax(b, axis=1)
    assert (p == 0).any() and (q == 0).any()
    expected = 1 - np.mean([jensenshannon(pi, qi, base=2) ** 2 for pi, qi in zip(p, q)])
    value = jsd_similarity(a, b)
    assert np.isfinite(value) and value == pytest.approx(expected, abs=1e-12)


def test_jsd_of_opposite_confident_predictions_is_near_zero():
    a = np.array([[50.0, 0.0], [0.0, 50.0]])
    assert jsd_similarity(a, a[:, ::-1]) == pytest.approx(0.0, abs=1e-9)
    huge = np.array([[1e6, -1e6], [-1e6, 1e6]])  # log-sum-exp: no overflow
    assert jsd_similarity(huge, huge[:, ::-1]) == pytest.approx(0.0, abs=1e-12)


def test_jsd_is_invariant_to_a_per_input_shift(logits):
    a, b = logits
    shift = np.random.default_rng(3).normal(size=(len(a), 1)) * 100
    assert jsd_similarity(a + shift, b) == pytest.approx(jsd_similarity(a, b), abs=1e-10)


@pytest.mark.parametrize("n_classes", [2, 5, 10])
def test_kappa_matches_sklearn(n_classes):
    rng = np.random.default_rng(n_classes)
    a = rng.normal(size=(300, n_classes))
    b = a + rng.normal(size=(300, n_classes)) * 1.5  # correlated predictions
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a.argmax(1), b.argmax(1)), abs=1e-12)


def test_kappa_when_models_predict_few_classes():
    a = one_hot([0, 0, 1, 1, 0, 0], n_classes=4)
    b = one_hot([0, 1, 1, 1, 0, 3], n_classes=4)
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a.argmax(1), b.argmax(1)))
    # hand: p_o = 4/6; P_a = (4, 2, 0, 0)/6, P_b = (2, 3, 0, 1)/6; p_e = (8 + 6)/36
    p_o, p_e = 4 / 6, 14 / 36
    assert cohen_kappa(a, b) == pytest.approx((p_o - p_e) / (1 - p_e))


def test_kappa_degenerate_case_is_documented_one():
    a = one_hot([2, 2, 2, 2])  # both models predict class 2 everywhere: p_e = 1
    assert cohen_kappa(a, a * 3) == 1.0


def test_error_consistency_hand_case():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred_a = np.array([0, 0, 0, 1, 1, 1, 0, 0])  # right on 0,1,2,4,5: p_a = 5/8
    pred_b = np.array([0, 0, 1, 1, 1, 0, 0, 0])  # right on 0,1,4: p_b = 3/8
    c_obs = 6 / 8  # both right: 0,1,4; both wrong: 3,6,7
    c_exp = 5 / 8 * 3 / 8 + 3 / 8 * 5 / 8
    expected = (c_obs - c_exp) / (1 - c_exp)
    assert error_consistency(one_hot(pred_a, 2), one_hot(pred_b, 2), labels) == pytest.approx(expected)


def test_error_consistency_is_kappa_of_correctness(logits):
    """Independent route: Cohen's kappa of the two boolean correct/wrong vectors (sklearn)."""
    a, b = logits
    rng = np.random.default_rng(4)
    labels = np.where(rng.random(len(a)) < 0.5, a.argmax(1), rng.integers(0, 5, len(a)))
    expected = cohen_kappa_score(a.argmax(1) == labels, b.argmax(1) == labels)
    assert error_consistency(a, b, labels) == pytest.approx(expected, abs=1e-12)


def test_error_consistency_of_identical_correctness_is_one(logits):
    a, _ = logits
    labels = np.random.default_rng(1).integers(0, 5, size=len(a))
    pred = a.argmax(1)
    # b predicts a different wrong class wherever a is wrong: same correctness, other labels
    b = one_hot(np.where(pred == labels, pred, (pred + 1 + (labels == (pred + 1) % 5)) % 5), 5)
    assert not np.array_equal(b.argmax(1), pred)
    assert np.array_equal(b.argmax(1) == labels, pred == labels)
    assert error_consistency(a, b, labels) == 1.0


def test_error_consistency_degenerate_case_is_documented_one():
    labels = np.array([0, 1, 2, 1])
    right = one_hot(labels)
    assert error_consistency(right, right * 2, labels) == 1.0  # both always right: c_exp = 1
    wrong_a, wrong_b = one_hot((labels + 1) % 3), one_hot((labels + 2) % 3)
    assert error_consistency(wrong_a, wrong_b, labels) == 1.0  # both always wrong: c_exp = 1
    # one always right, one always wrong: c_exp = 0, c_obs = 0 -> 0, not degenerate
    assert error_consistency(right, wrong_a, labels) == 0.0


def test_min_agreement_closed_form_and_bound():
    assert min_agreement_from_accuracy(0.9, 0.8) == pytest.approx(0.7)
    assert min_agreement_from_accuracy(0.3, 0.4) == 0.0
    with pytest.raises(ValueError):
        min_agreement_from_accuracy(1.2, 0.5)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, size=500)
    for _ in range(20):
        a = one_hot(np.where(rng.random(500) < 0.8, labels, rng.integers(0, 4, 500)), 4)
        b = one_hot(np.where(rng.random(500) < 0.7, labels, rng.integers(0, 4, 500)), 4)
        assert agreement(a, b) >= min_agreement_from_accuracy(accuracy(a, labels), accuracy(b, labels)) - 1e-12
    # the bound is attained: errors on disjoint inputs
    labels = np.zeros(10, dtype=int)
    a, b = one_hot([0] * 8 + [1, 1]), one_hot([1, 1] + [0] * 8)
    assert agreement(a, b) == pytest.approx(min_agreement_from_accuracy(0.8, 0.8))


def test_pairwise_predictive_rows_match_the_measures(logits):
    a, b = logits
    c = a + np.random.default_rng(5).normal(size=a.shape)
    labels = np.random.default_rng(6).integers(0, 5, size=len(a))
    by_model = {"m0": a, "m1": b, "m2": c}
    rows = pairwise_predictive(by_model, labels, [("m0", "m1"), ("m2", "m0")])
    assert len(rows) == 2 * len(PAIRWISE_MEASURES)
    got = {(r["model_a"], r["model_b"], r["measure"]): r["value"] for r in rows}
    for x, y in [("m0", "m1"), ("m2", "m0")]:
        assert got[(x, y, "agreement")] == agreement(by_model[x], by_model[y])
        assert got[(x, y, "jsd_similarity")] == jsd_similarity(by_model[x], by_model[y])
        assert got[(x, y, "cohen_kappa")] == cohen_kappa(by_model[x], by_model[y])
        assert got[(x, y, "error_consistency")] == error_consistency(by_model[x], by_model[y], labels)
    all_pairs = pairwise_predictive(by_model, labels)
    assert {(r["model_a"], r["model_b"]) for r in all_pairs} == {("m0", "m1"), ("m0", "m2"), ("m1", "m2")}
    with pytest.raises(KeyError):
        pairwise_predictive(by_model, labels, [("m0", "nope")])


def test_torch_tensors_are_accepted(logits):
    a, b = logits
    labels = np.random.default_rng(7).integers(0, 5, size=len(a))
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b).to(torch.bfloat16)
    tl = torch.tensor(labels)
    assert agreement(ta, torch.tensor(b)) == agreement(a, b)
    assert jsd_similarity(ta, torch.tensor(b)) == pytest.approx(jsd_similarity(a, b), abs=1e-12)
    assert error_consistency(ta, torch.tensor(b), tl) == pytest.approx(error_consistency(a, b, labels))
    bf = tb.double().numpy()  # bfloat16 has no numpy dtype: converted through float64
    assert jsd_similarity(a, tb) == pytest.approx(jsd_similarity(a, bf), abs=1e-12)


def test_bad_inputs_raise(logits):
    a, b = logits
    with pytest.raises(ValueError):
        agreement(a, b[:-1])
    with pytest.raises(ValueError):
        jsd_similarity(a[0], b[0])  # 1-D
    with pytest.raises(ValueError):
        jsd_similarity(np.where(a > 3, np.nan, a), b)
    with pytest.raises(ValueError):
        error_consistency(a, b, np.zeros(len(a) + 1, dtype=int))


def test_module_does_not_import_torch():
    code = "import sys, robustlens.predictive, robustlens.stats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# --------------------------------------------------------------------------- inputs: what is accepted, what is refused


def test_accuracy_against_a_hand_count():
    logits = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert accuracy(logits, [1, 0, 0, 1]) == 0.5  # predictions 1, 0, 2, 0 (tie to the lowest)
    assert accuracy(logits, np.array([1.0, 0.0, 2.0, 0.0])) == 1.0  # integral float labels are class indices


def test_jsd_is_stable_for_rows_of_very_different_scale():
    """log-softmax subtracts each row's own maximum: a row near 1000 and a row near 0 together."""
    a = np.array([[1000.0, 999.0, 990.0], [0.0, -1.0, -3.0]])
    b = np.array([[998.0, 999.0, 995.0], [-2.0, 0.0, -1.0]])
    expected = 1 - np.mean(jensenshannon(softmax(a, axis=1), softmax(b, axis=1), axis=1, base=2) ** 2)
    assert jsd_similarity(a, b) == pytest.approx(expected, abs=1e-12)


def test_float32_logits_are_measured_in_float64():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 10)).astype(np.float32), rng.normal(size=(50, 10)).astype(np.float32)
    assert jsd_similarity(a, b) == jsd_similarity(a.astype(np.float64), b.astype(np.float64))
    assert jsd_similarity(torch.from_numpy(a), torch.from_numpy(b)) == jsd_similarity(a.astype(np.float64), b.astype(np.float64))


def test_smallest_shapes_and_masked_classes_are_accepted():
    one_sample = np.array([[0.2, 0.1]])
    assert agreement(one_sample, one_sample) == 1.0
    one_class = np.zeros((3, 1))
    assert agreement(one_class, one_class) == 1.0 and jsd_similarity(one_class, one_class) == pytest.approx(1.0)
    masked = np.array([[-np.inf, 0.0, 1.0], [2.0, -np.inf, -np.inf]])
    assert agreement(masked, masked) == 1.0 and jsd_similarity(masked, masked) == pytest.approx(1.0)


def test_cohen_kappa_when_one_model_never_predicts_the_last_class():
    a = np.eye(4)[[0, 1, 2, 3, 3, 1, 0, 2]]
    b = np.eye(4)[[0, 1, 2, 2, 1, 1, 0, 2]]  # never class 3
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a.argmax(1), b.argmax(1)))
    assert cohen_kappa(b, a) == pytest.approx(cohen_kappa_score(b.argmax(1), a.argmax(1)))


@pytest.mark.parametrize("call,message", [
    (lambda: agreement(np.zeros((0, 3)), np.zeros((0, 3))), r"logits_a: expected logits of shape .* got \(0, 3\)"),
    (lambda: agreement(np.zeros((2, 0)), np.zeros((2, 0))), r"logits_a: expected logits of shape .* got \(2, 0\)"),
    (lambda: agreement(np.zeros(3), np.zeros(3)), r"logits_a: expected logits of shape .* got \(3,\)"),
    (lambda: agreement(np.zeros((2, 3)), np.full((2, 3), np.nan)), r"logits_b: logits contain NaN"),
    (lambda: agreement(np.array([[0.0, np.inf]]), np.zeros((1, 2))), r"logits_a: logits contain NaN, \+inf"),
    (lambda: agreement(np.array([[-np.inf, -np.inf]]), np.zeros((1, 2))), r"logits_a: .*a row without any finite logit"),
    (lambda: agreement(np.zeros((2, 3)), np.zeros((3, 3))), r"logits_a and logits_b must have the same shape, got \(2, 3\) and \(3, 3\)"),
    (lambda: accuracy(np.zeros((2, 3)), [0, 1, 2]), r"labels: expected shape \(2,\), got \(3,\)"),
    (lambda: accuracy(np.zeros((2, 3)), [0.0, 1.5]), r"labels must be integer class indices"),
    (lambda: min_agreement_from_accuracy(1.2, 0.5), r"acc_a must lie in \[0, 1\], got 1.2"),
    (lambda: min_agreement_from_accuracy(0.5, -0.1), r"acc_b must lie in \[0, 1\], got -0.1"),
    (lambda: pairwise_predictive({"a": np.zeros((2, 3))}, [0, 1], [("a", "b")]), r"no logits for model 'b'"),
    (lambda: pairwise_predictive({"a": np.zeros((2, 3)), "b": np.zeros((2, 0))}, [0, 1]), r"logits of 'b': expected logits"),
])
def test_bad_inputs_are_refused_naming_the_argument(call, message):
    with pytest.raises((ValueError, KeyError), match=message):
        call()


def test_accuracies_at_the_ends_of_the_unit_interval_are_accepted():
    assert min_agreement_from_accuracy(0.0, 1.0) == 0.0 and min_agreement_from_accuracy(1.0, 1.0) == 1.0
