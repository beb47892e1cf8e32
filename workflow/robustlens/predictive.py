"""Predictive similarity of two models from their logits (Klabunde, Caspari, Lemmerich:
"Revisiting the relation between robustness and universality").

Inputs are logits of shape (n_samples, n_classes), as ``numpy.ndarray`` or ``torch.Tensor``
(any device or float dtype; converted with ``.detach().cpu()``), row i of both models being the
same input. Everything is computed in float64 and each measure returns a Python float.
Predictions are argmax over classes; ties go to the lowest class index (numpy's argmax).
Logits must not contain NaN or +inf; -inf (a masked class) is allowed as long as every row
keeps one finite logit.

Agreement falls mechanically when accuracy falls: two models with accuracies a and b agree on
at least a + b - 1 of the inputs (:func:`min_agreement_from_accuracy`). Cohen's kappa and error
consistency (Geirhos et al. 2020) correct for chance agreement.

numpy only, no torch import: table and figure jobs import this module and must start fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

#: The measures :func:`pairwise_predictive` computes, in row order.
PAIRWISE_MEASURES = ("agreement", "jsd_similarity", "cohen_kappa", "error_consistency")

_LOG2 = math.log(2.0)


def _to_numpy(x, dtype=None) -> np.ndarray:
    """numpy view of an array-like or a torch tensor (detached, moved to the CPU; floating
    tensors cast to float64 first, since numpy has no bfloat16)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if dtype is not None and x.is_floating_point():
            x = x.double()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _logits(x, name: str) -> np.ndarray:
    arr = _to_numpy(x, np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected logits of shape (n_samples >= 1, n_classes >= 1), got {arr.shape}")
    if np.isnan(arr).any() or not np.isfinite(arr.max(axis=1)).all():
        raise ValueError(f"{name}: logits contain NaN, +inf, or a row without any finite logit")
    return arr


def _logit_pair(logits_a, logits_b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _logits(logits_a, "logits_a"), _logits(logits_b, "logits_b")
    if a.shape != b.shape:
        raise ValueError(f"logits_a and logits_b must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def _labels(labels, n_samples: int) -> np.ndarray:
    arr = _to_numpy(labels)
    if arr.shape != (n_samples,):
        raise ValueError(f"labels: expected shape ({n_samples},), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        as_int = arr.astype(np.int64)
        if not np.array_equal(as_int, arr):
            raise ValueError("labels must be integer class indices")
        arr = as_int
    return arr


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax by log-sum-exp: subtract the row maximum before exponentiating."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def predictions(logits) -> np.ndarray:
    """Predicted class per input: argmax over classes (ties to the lowest index)."""
    return _logits(logits, "logits").argmax(axis=1)


def accuracy(logits, labels) -> float:
    """Fraction of inputs whose argmax prediction equals the label."""
    pred = predictions(logits)
    return float(np.mean(pred == _labels(labels, len(pred))))


def agreement(logits_a, logits_b) -> float:
    """Agreement rate (Klabunde, Caspari, Lemmerich): the fraction of inputs whose argmax
    predictions coincide, (1/n) sum_i [argmax a_i = argmax b_i]. Range [0, 1], higher = more
    similar; it is at least max(0, acc_a + acc_b - 1), see :func:`min_agreement_from_accuracy`."""
    a, b = _logit_pair(logits_a, logits_b)
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def jsd_similarity(logits_a, logits_b) -> float:
    """JSDSim (Klabunde, Caspari, Lemmerich) = 1 - (1/n) sum_i JSD(p_i, q_i), the Jensen-Shannon
    divergence in bits between the two models' softmax outputs p_i, q_i on input i.
    Range [0, 1]; 1 = identical output distributions, 0 = disjoint supports.

    JSD(p, q) = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2 and log base 2, so each
    term lies in [0, 1]. The softmax is computed by log-sum-exp and the KL terms in log space;
    classes with p_k = 0 (underflow, or a -inf logit) contribute 0 (0 log 0 = 0), never NaN.

    Note: scipy's ``scipy.spatial.distance.jensenshannon`` returns the Jensen-Shannon *distance*,
    the square root of the divergence, in nats unless ``base=2``:
    JSD_bits(p, q) = jensenshannon(p, q, base=2) ** 2.
    """
    a, b = _logit_pair(logits_a, logits_b)
    log_p, log_q = _log_softmax(a), _log_softmax(b)
    log_m = np.logaddexp(log_p, log_q) - _LOG2
    p, q = np.exp(log_p), np.exp(log_q)
    with np.errstate(invalid="ignore"):  # -inf - -inf where p = q = 0: masked by np.where
        kl_pm = np.where(p > 0, p * (log_p - log_m), 0.0).sum(axis=1)
        kl_qm = np.where(q > 0, q * (log_q - log_m), 0.0).sum(axis=1)
    jsd_bits = np.clip((kl_pm + kl_qm) / (2 * _LOG2), 0.0, 1.0)
    return float(1.0 - jsd_bits.mean())


def cohen_kappa(logits_a, logits_b) -> float:
    """Cohen's kappa (Cohen 1960) of the two models' predicted labels:
    kappa = (p_o - p_e) / (1 - p_e), with p_o the agreement rate and
    p_e = sum_k P_a(k) P_b(k) the agreement expected by chance from each model's predicted-class
    frequencies P_a, P_b. Range [-1, 1]; 0 = chance-level agreement, 1 = identical predictions.

    Degenerate case: p_e = 1 happens only when both models predict one and the same class on
    every input. Their predictions are then identical and this returns 1.0 (the value for
    identical predictions everywhere else); scikit-learn's ``cohen_kappa_score`` returns NaN.
    """
    a, b = _logit_pair(logits_a, logits_b)
    ya, yb = a.argmax(axis=1), b.argmax(axis=1)
    n, n_classes = a.shape
    p_o = float(np.mean(ya == yb))
    if p_o == 1.0:  # identical predictions (includes the degenerate p_e = 1): exactly 1
        return 1.0
    freq_a = np.bincount(ya, minlength=n_classes) / n
    freq_b = np.bincount(yb, minlength=n_classes) / n
    p_e = float(freq_a @ freq_b)
    return float((p_o - p_e) / (1.0 - p_e))


def error_consistency(logits_a, logits_b, labels) -> float:
    """Error consistency (Geirhos, Meding, Wichmann 2020, "Beyond accuracy: quantifying
    trial-by-trial behaviour of CNNs and humans by measuring error consistency", NeurIPS;
    Eqs. 1-3): Cohen's kappa of the two models' correct/wrong outcomes,

        c_obs = fraction of inputs both models get right or both get wrong,
        c_exp = p_a p_b + (1 - p_a)(1 - p_b)   (p_a, p_b: the models' accuracies),
        kappa = (c_obs - c_exp) / (1 - c_exp).

    Range [-1, 1]; 0 = errors as consistent as two independent models with these accuracies,
    1 = the same inputs are right and wrong. ``labels``: integer classes, shape (n_samples,).

    Degenerate case: c_exp = 1 exactly when both models are right on every input or both are
    wrong on every input. Then c_obs = 1 too (their correctness patterns are identical) and
    this returns 1.0, the value of every identical correctness pattern; the reference code of
    Geirhos et al. (model-vs-human) likewise returns 1 whenever c_obs = 1. Such a pair carries
    no information about error consistency: drop it if that matters for the analysis.
    """
    a, b = _logit_pair(logits_a, logits_b)
    y = _labels(labels, a.shape[0])
    right_a, right_b = a.argmax(axis=1) == y, b.argmax(axis=1) == y
    c_obs = float(np.mean(right_a == right_b))
    if c_obs == 1.0:  # identical correctness patterns (includes the degenerate c_exp = 1)
        return 1.0
    p_a, p_b = float(right_a.mean()), float(right_b.mean())
    c_exp = p_a * p_b + (1.0 - p_a) * (1.0 - p_b)
    return float((c_obs - c_exp) / (1.0 - c_exp))


def min_agreement_from_accuracy(acc_a: float, acc_b: float) -> float:
    """The agreement rate that two models with accuracies a and b reach at least, whatever
    their errors: max(0, a + b - 1). (Both are right, hence agree, on at least a + b - 1 of
    the inputs.) This is why falling accuracy alone lowers agreement, and why
    :func:`cohen_kappa` and :func:`error_consistency` are reported beside it."""
    for name, acc in (("acc_a", acc_a), ("acc_b", acc_b)):
        if not 0.0 <= acc <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {acc}")
    return max(0.0, float(acc_a) + float(acc_b) - 1.0)


def pairwise_predictive(logits_by_model: Mapping[str, object], labels,
                        pairs: Iterable[tuple[str, str]] | None = None) -> list[dict]:
    """All four predictive measures for each pair of models: rows
    ``{"model_a", "model_b", "measure", "value"}``, one per (pair, measure), measures in the
    order of :data:`PAIRWISE_MEASURES` (agreement, jsd_similarity, cohen_kappa,
    error_consistency). ``logits_by_model`` maps a model id to its logits on the same inputs;
    ``labels`` are the inputs' classes (for error consistency). ``pairs``: (model_a, model_b)
    tuples; ``None`` means every unordered pair in the mapping's order."""
    ids = list(logits_by_model)
    if pairs is None:
        pairs = [(ids[i], ids[j]) for i in range(len(ids)) for j in range(i + 1, len(ids))]
    cache: dict[str, np.ndarray] = {}

    def get(model: str) -> np.ndarray:
        if model not in cache:
            if model not in logits_by_model:
                raise KeyError(f"no logits for model {model!r}")
            cache[model] = _logits(logits_by_model[model], f"logits of {model!r}")
        return cache[model]

    labels = _to_numpy(labels)
    rows = []
    for model_a, model_b in pairs:
        a, b = get(model_a), get(model_b)
        values = {
            "agreement": agreement(a, b),
            "jsd_similarity": jsd_similarity(a, b),
            "cohen_kappa": cohen_kappa(a, b),
            "error_consistency": error_consistency(a, b, labels),
        }
        rows += [{"model_a": model_a, "model_b": model_b, "measure": m, "value": values[m]} for m in PAIRWISE_MEASURES]
    return rows
