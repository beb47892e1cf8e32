"""Predictive similarity of two models from their logits (Klabunde, Caspari, Lemmerich).

Inputs: logits of shape (n_samples, n_classes), numpy or torch; computed in float64; each
function returns a Python float. numpy only: table jobs import this module and start fast.

Agreement falls mechanically when accuracy falls: two models with accuracies a and b agree on
at least a + b - 1 of the inputs (:func:`min_agreement_from_accuracy`). Cohen's kappa and error
consistency correct for that chance agreement.
"""

from __future__ import annotations

import numpy as np


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def agreement(logits_a, logits_b) -> float:
    """Agreement rate: the fraction of inputs whose argmax predictions coincide."""
    a, b = _as_array(logits_a), _as_array(logits_b)
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def jsd_similarity(logits_a, logits_b) -> float:
    """JSDSim = 1 - mean over inputs of the Jensen-Shannon divergence in bits between the two
    softmax outputs (range [0, 1], 1 = identical output distributions).

    JSD(p, q) = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2, log base 2, terms with
    p_i = 0 contributing 0. scipy's ``jensenshannon`` returns the *square root* of the
    divergence, in nats unless ``base=2``: JSD_bits = jensenshannon(p, q, base=2) ** 2.
    """
    log_p, log_q = _log_softmax(_as_array(logits_a)), _log_softmax(_as_array(logits_b))
    p, q = np.exp(log_p), np.exp(log_q)
    m = (p + q) / 2
    log_m = np.log(np.where(m > 0, m, 1.0))
    kl_pm = np.sum(np.where(p > 0, p * (log_p - log_m), 0.0), axis=1)
    kl_qm = np.sum(np.where(q > 0, q * (log_q - log_m), 0.0), axis=1)
    jsd_bits = np.clip((kl_pm + kl_qm) / 2 / np.log(2), 0.0, 1.0)
    return float(1.0 - jsd_bits.mean())


def cohen_kappa(logits_a, logits_b) -> float:
    """Cohen's kappa of the two models' predicted labels: (p_o - p_e) / (1 - p_e), with p_o the
    agreement and p_e = sum_k P_a(k) P_b(k) the agreement expected from each model's predicted
    class frequencies. Both models predicting one and the same class everywhere gives 1."""
    ya, yb = _as_array(logits_a).argmax(1), _as_array(logits_b).argmax(1)
    n_classes = int(max(ya.max(), yb.max())) + 1
    p_o = np.mean(ya == yb)
    p_e = np.sum(np.bincount(ya, minlength=n_classes) * np.bincount(yb, minlength=n_classes)) / len(ya) ** 2
    if p_e == 1.0:
        return 1.0
    return float((p_o - p_e) / (1 - p_e))


def error_consistency(logits_a, logits_b, labels) -> float:
    """Error consistency (Geirhos et al. 2020, Eq. 1-3): kappa = (c_obs - c_exp) / (1 - c_exp),
    with c_obs the fraction of inputs both models get right or both get wrong and
    c_exp = p_a p_b + (1 - p_a)(1 - p_b) from their accuracies p_a, p_b. When c_exp = 1 (both
    models always right, or always wrong) the errors are trivially consistent: returns 1."""
    labels = np.asarray(labels)
    ca = _as_array(logits_a).argmax(1) == labels
    cb = _as_array(logits_b).argmax(1) == labels
    pa, pb = ca.mean(), cb.mean()
    c_obs = np.mean(ca == cb)
    c_exp = pa * pb + (1 - pa) * (1 - pb)
    if c_exp == 1.0:
        return 1.0
    return float((c_obs - c_exp) / (1 - c_exp))


def min_agreement_from_accuracy(acc_a: float, acc_b: float) -> float:
    """The agreement two models with accuracies a and b reach at least: max(0, a + b - 1)."""
    return max(0.0, acc_a + acc_b - 1.0)
