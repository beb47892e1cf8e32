"""Robustness transfer: the AS attack, LP/FT, Lemma 1 and Thm 2 against closed forms on linear
models. (The workflow's tables on the tiny study: tests/workflow/test_transfer_workflow.py.)"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from robustlens.runtime import generator
from robustlens.tables import BOUNDS_COLUMNS, TRANSFER_COLUMNS, transfer_tables
from robustlens.transfer import (
    AS_METHODS,
    FGSM_OFFSET_POWER,
    LIPSCHITZ,
    THM2_LABELS,
    as_attack,
    as_score,
    evaluate_transferred,
    fine_tune,
    fit_head,
    head_weight_norm,
    lemma1_bound,
    linear_probe,
    representation_change,
    thm2_criterion,
    thm2_margin,
)
from robustlens.zoo import build_architecture


class LinearExtractor(nn.Module):
    """g(x) = A (x - c) on flattened images, with a linear head: h(x) = W g(x) + b."""

    def __init__(self, a: torch.Tensor, n_outputs: int, center: float = 0.5):
        super().__init__()
        self.a = nn.Parameter(a.clone())
        self.center = center
        self.head = nn.Linear(a.shape[0], n_outputs)

    def forward_features(self, x):
        return (x.flatten(1) - self.center) @ self.a.T

    def forward(self, x):
        return self.head(self.forward_features(x))


def spectrum_matrix(k: int, d: int, singular_values, seed: int = 0) -> torch.Tensor:
    """A (k, d) matrix with the given singular values (random orthogonal factors)."""
    gen = generator(seed)
    u, _ = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
    return (u @ torch.diag(torch.tensor(singular_values, dtype=torch.float64)) @ v.T).float()


def small_cnn(seed: int = 0, n_outputs: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return build_architecture({"name": "smallcnn", "in_channels": 1, "num_classes": n_outputs, "widths": [4, 8], "convs_per_block": 1}).eval()


def attack_settings(norm="l2", eps=1.0, steps=10, restarts=0, as_restarts=0, linf_eps=0.05, step_size=None, as_method="pgd"):
    strength = {"steps": steps, "restarts": restarts, "step_size": step_size}
    as_strength = {**strength, "restarts": as_restarts}
    return {
        "as_method": as_method,
        "robust_accuracy": {"norm": norm, "eps": eps, **strength},
        "bounds": [
            {"norm": norm, "eps": eps, "as_attack": as_strength, "loss_attack": strength},
            {"norm": "linf", "eps": linf_eps, "as_attack": as_strength, "loss_attack": strength},
        ],
    }


def by_metric(rows, norm):
    return {r["metric"]: r["value"] for r in rows if r["attack_norm"] == norm}


# --------------------------------------------------------------------------- the AS attack


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("linf", 0.05)])
def test_as_attack_stays_in_its_ball_and_beats_a_random_perturbation(norm, eps):
    model = small_cnn()
    x = torch.rand(48, 1, 8, 8, generator=generator(1))
    x_adv = as_attack(model, x, eps=eps, norm=norm, steps=10, restarts=0, gen=generator(2))
    delta = (x_adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # a random perturbation of the same size: a random direction on the L2 sphere, or a random
    # corner of the Linf cube (the largest random perturbations the ball holds)
    noise = torch.randn(x.shape, generator=generator(3))
    rand = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps if norm == "l2" else noise.sign() * eps
    x_rand = (x + rand).clamp(0, 1)
    attacked = representation_change(model, x, x_adv)
    random = representation_change(model, x, x_rand)
    assert attacked.mean() > 1.5 * random.mean()
    assert (attacked > random).float().mean() > 0.9


def test_as_attack_reaches_eps_times_the_largest_singular_value_of_a_linear_extractor():
    """For g(x) = A x, max_{||d||_2 <= eps} ||A d||_2 = eps * sigma_max(A) (inside [0, 1])."""
    a = spectrum_matrix(5, 64, [3.0, 1.0, 0.5, 0.2, 0.1])
    model = LinearExtractor(a, 2).eval()
    x = 0.4 + 0.2 * torch.rand(16, 1, 8, 8, generator=generator(1))  # the ball stays in [0, 1]
    eps = 0.3
    # with PGD's default step (2.5 eps / steps) the steps add up to 2.5 eps whatever their
    # number, too little to turn a random start onto the top singular vector exactly; steps of
    # eps / 2 converge to float precision
    x_adv = as_attack(model, x, eps=eps, norm="l2", steps=60, restarts=0, gen=generator(2), step_size=eps / 2)
    change = representation_change(model, x, x_adv)
    exact = eps * torch.linalg.matrix_norm(a.double(), ord=2).item()
    assert change.max().item() <= exact * (1 + 1e-5)
    assert change.min().item() >= 0.999 * exact


# --------------------------------------------------------------------------- Lemma 1


def test_lemma1_holds_exactly_for_a_linear_regression_model():
    """g(x) = A x, scalar head w: with the absolute error, the adversarial loss over the L2
    ball is |r| + eps ||A^T w||_2 (r = clean residual), so LHS = eps ||A^T w|| / ||w|| and
    RHS = AS = eps * sigma_max(A): LHS <= RHS. The pipeline's PGD values match both."""
    a = spectrum_matrix(4, 16, [2.0, 1.0, 0.5, 0.25], seed=1)
    model = LinearExtractor(a, 1).eval()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[0.3, -1.2, 0.8, 0.5]]))
        model.head.bias.fill_(0.1)
    x = 0.4 + 0.2 * torch.rand(20, 1, 4, 4, generator=generator(4))
    eps = 0.2
    with torch.no_grad():
        h = model(x)[:, 0]
    sign = torch.where(torch.arange(20) % 2 == 0, 1.0, -1.0)
    y = (h + 3.0 * sign).unsqueeze(1)  # residuals far larger than eps ||A^T w||: no sign flip
    w = model.head.weight.detach().double()
    exact_lhs = eps * torch.linalg.vector_norm(a.double().T @ w[0]).item() / torch.linalg.vector_norm(w).item()
    exact_rhs = eps * torch.linalg.matrix_norm(a.double(), ord=2).item()
    assert exact_lhs <= exact_rhs

    _, rows = evaluate_transferred(model, x, y, "regression", attack_settings(eps=eps, steps=60, linf_eps=0.02, step_size=eps / 2), seed=0)
    l2 = by_metric(rows, "l2")
    assert l2["lipschitz"] == LIPSCHITZ["regression"] == 1.0
    assert l2["weight_norm"] == pytest.approx(torch.linalg.vector_norm(w).item(), rel=1e-6)
    assert l2["lhs"] == pytest.approx(exact_lhs, rel=1e-3)
    assert l2["rhs_as"] == pytest.approx(exact_rhs, rel=1e-3) and l2["rhs_as"] <= exact_rhs * (1 + 1e-5)
    assert l2["lhs"] <= l2["rhs_as"] <= l2["rhs_best"]


def test_lemma1_bound_from_per_input_values():
    out = lemma1_bound(clean_loss=[1.0, 2.0], adversarial_loss=[2.0, 4.0], as_change=[1.0, 0.5], loss_change=[0.5, 1.5],
                       lipschitz=2.0, weight_norm=0.5)
    assert out["lhs"] == pytest.approx((3.0 - 1.5) / (2.0 * 0.5))
    assert out["rhs_as"] == pytest.approx(0.75)
    assert out["rhs_best"] == pytest.approx((1.0 + 1.5) / 2)
    assert out["loss_attack_larger_fraction"] == 0.5


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_rhs_best_is_never_below_lhs(kind):
    """rhs_best bounds the LHS by construction (the loss attack's own change enters it), for
    any model, attack strength and norm; rhs_as may fall below it. A bug that takes the loss
    attack's change from another perturbation than the one that gave the adversarial loss, or
    the per-input minimum, breaks one of these."""
    for seed in range(3):
        model = small_cnn(seed, n_outputs=3)
        x = torch.rand(40, 1, 8, 8, generator=generator(10 + seed))
        y = torch.randint(0, 3, (40,), generator=generator(20 + seed)) if kind == "classification" else torch.randn(40, 3, generator=generator(20 + seed))
        _, rows = evaluate_transferred(model, x, y, kind, attack_settings(steps=4, restarts=1), seed=seed)
        for norm in ("l2", "linf"):
            values = by_metric(rows, norm)
            assert values["rhs_best"] >= values["lhs"] - 1e-6, (seed, norm, values)
            # rhs_best exceeds rhs_as exactly when the loss attack's change was the larger somewhere
            if values["loss_attack_larger_fraction"] > 0:
                assert values["rhs_best"] > values["rhs_as"]
            else:
                assert values["rhs_best"] == pytest.approx(values["rhs_as"], rel=1e-12)
            assert values["lipschitz"] == LIPSCHITZ[kind]


def test_head_weight_norm_is_the_largest_row_norm():
    w = np.array([[3.0, 4.0, 0.0], [1.0, 1.0, 1.0]])
    assert head_weight_norm(w) == pytest.approx(5.0)
    assert head_weight_norm(torch.tensor([[1.0, 2.0, 2.0]])) == pytest.approx(3.0)


# --------------------------------------------------------------------------- Thm 2


def test_thm2_margin_on_a_hand_computed_case():
    logits = np.array([[3.0, 1.0, 2.0]])
    weight = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # j=1: (3 - 1) / ||(1, -1)|| = sqrt(2); j=2: (3 - 2) / ||(0, -1)|| = 1
    assert thm2_margin(logits, [0], weight)[0] == pytest.approx(1.0)
    assert thm2_margin(logits, [2], weight)[0] == pytest.approx(min((2 - 3) / 1.0, (2 - 1) / 1.0))
    out = thm2_criterion([1.0, 0.5, 2.0], [0.8, 0.8, 0.1], [True, False, False])
    assert out["fulfilled_fraction"] == pytest.approx(2 / 3) and out["robust_among_fulfilled"] == pytest.approx(0.5)
    assert np.isnan(thm2_criterion([0.1], [1.0], [True])["robust_among_fulfilled"])


def test_thm2_criterion_on_a_linear_two_class_model():
    """g(x) = x - 0.5 on 2-pixel images, W = [[1, 0], [-1, 0]], b = 0. For x = (0.5 + a, 0.5)
    with label 0 the margin is (h_0 - h_1)/||W_0 - W_1|| = 2a/2 = a and AS(x) = eps exactly,
    so the criterion holds iff a > eps, and exactly those inputs are robust."""
    model = LinearExtractor(torch.eye(2), 2).eval()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        model.head.bias.zero_()
    a = torch.tensor([0.05, 0.08, 0.12, 0.2, -0.05, 0.3])
    x = torch.stack([0.5 + a, torch.full_like(a, 0.5)], dim=1).view(-1, 1, 1, 2)
    y = torch.zeros(len(a), dtype=torch.long)
    with torch.no_grad():
        margin = thm2_margin(model(x).numpy(), y.numpy(), model.head.weight.numpy())
    np.testing.assert_allclose(margin, a.numpy(), atol=1e-6)

    eps = 0.1
    transfer_rows, bound_rows = evaluate_transferred(model, x, y, "classification", attack_settings(eps=eps, steps=20, linf_eps=0.01), seed=0)
    l2 = by_metric(bound_rows, "l2")
    assert l2["rhs_as"] == pytest.approx(eps, rel=1e-5)  # the AS score is exact here
    assert l2["fulfilled_fraction"] == pytest.approx(3 / 6)  # a = 0.12, 0.2, 0.3
    assert l2["robust_among_fulfilled"] == 1.0
    assert l2["robust_accuracy"] == pytest.approx(3 / 6)
    robust = {r["metric"]: r["value"] for r in transfer_rows if r["attack_norm"] == "l2"}
    assert robust["robust_accuracy"] == pytest.approx(3 / 6)


@pytest.mark.parametrize("label", THM2_LABELS)
def test_thm2_with_the_largest_change_tried_is_never_wrong(label):
    """Thm 2 with AS(x) = the largest representation change among every perturbation tried in
    the ball (AS attack and every loss-attack run): no input that fulfils it is broken by those
    perturbations, for any model, label, norm and attack strength (the AS-only column may be
    wrong)."""
    n_checked = 0
    for seed in range(3):
        model = small_cnn(seed, n_outputs=3)
        x = torch.rand(60, 1, 8, 8, generator=generator(30 + seed))
        y = torch.randint(0, 3, (60,), generator=generator(40 + seed))
        for as_method in AS_METHODS:
            _, rows = evaluate_transferred(model, x, y, "classification",
                                           attack_settings(steps=4, restarts=1, linf_eps=0.1, as_method=as_method), seed=seed,
                                           thm2_label=label)
            assert {(r["as_method"], r["thm2_label"]) for r in rows} == {(as_method, label)}
            for norm in ("l2", "linf"):
                v = by_metric(rows, norm)
                assert v["n_fulfilled_best"] <= v["n_fulfilled"]
                if v["n_fulfilled_best"] > 0:
                    n_checked += 1
                    assert v["robust_among_fulfilled_best"] == 1.0, (seed, as_method, norm, v)
                else:
                    assert np.isnan(v["robust_among_fulfilled_best"])
    assert n_checked >= 6


def test_thm2_on_a_real_small_transfer_run():
    """transfer_study end to end (LP, FT, LP-FT of a small CNN on a learnable 3-class task,
    then every attack): on every row where some input fulfils Thm 2 with the largest change
    tried, none of them is broken, for both labels; and such rows exist (not vacuous)."""
    from robustlens.transfer import transfer_study

    gen = generator(50)
    x = torch.rand(240, 1, 8, 8, generator=gen) * 0.5
    y = torch.randint(0, 3, (240,), generator=gen)
    for k in range(3):  # class k: a bright k-th band of rows
        x[y == k, :, 2 * k : 2 * k + 3, :] += 0.45
    task = {"kind": "classification", "n_outputs": 3, "x_train": x[:160].numpy(), "y_train": y[:160].numpy(),
            "x_test": x[160:].numpy(), "y_test": y[160:].numpy()}
    fit = {"epochs": 15, "lr": 0.05, "weight_decay": 0.0, "batch_size": 32}
    n_checked = 0
    for label in THM2_LABELS:
        settings = {"seed": 0, "batch_size": 64, "thm2_label": label, "lp": fit, "ft": {**fit, "epochs": 5},
                    "lp_ft": {**fit, "epochs": 2, "lr": 0.01},
                    "attacks": {"seed": 0, **attack_settings(eps=0.5, steps=5, restarts=1, linf_eps=0.03)}}
        rows = transfer_study(small_cnn(0, n_outputs=3), task, settings, "cpu", progress=False)["bounds"]
        wide = pd.DataFrame(rows).pivot_table(index=["method", "attack_norm"], columns="metric", values="value")
        wide = wide.reindex(columns=pd.DataFrame(rows)["metric"].unique())
        best = wide[wide["n_fulfilled_best"] > 0]
        n_checked += len(best)
        assert (best["robust_among_fulfilled_best"] == 1.0).all(), (label, best)
        assert {r["thm2_label"] for r in rows} == {label}
    assert n_checked >= 4


def test_thm2_margin_with_the_predicted_label():
    """A misclassified input (label 0, prediction 1): its margin at the true label is negative,
    at the predicted label min_{j != 1} (h_1 - h_j) / ||W_1 - W_j||."""
    logits = np.array([[1.0, 3.0, 0.0], [3.0, 1.0, 2.0]])
    weight = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    true = thm2_margin(logits, [0, 0], weight, label="true_label")
    predicted = thm2_margin(logits, [0, 0], weight, label="predicted")
    # input 0, y = 0: j=1: (1 - 3) / sqrt(2); j=2: (1 - 0) / 1 -> -sqrt(2)
    assert true[0] == pytest.approx(-np.sqrt(2))
    # input 0, y = F(x) = 1: j=0: (3 - 1) / sqrt(2) = sqrt(2); j=2: (3 - 0) / ||(-1, 0)|| = 3
    assert predicted[0] == pytest.approx(np.sqrt(2))
    # input 1 is correctly classified: both labels give the same margin (1, as above)
    assert true[1] == predicted[1] == pytest.approx(1.0)
    assert np.array_equal(thm2_margin(logits, None, weight, label="predicted"), predicted)
    with pytest.raises(ValueError, match="true_label"):
        thm2_margin(logits, [0, 0], weight, label="true")


def test_thm2_predicted_label_on_a_linear_two_class_model():
    """As above (margin |a| at the predicted label, AS(x) = eps): with the true label only the
    correctly classified a > eps fulfil it; with the predicted label also the misclassified
    a < -eps, which keep their (wrong) prediction under attack."""
    model = LinearExtractor(torch.eye(2), 2).eval()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        model.head.bias.zero_()
    a = torch.tensor([0.05, 0.12, -0.05, -0.15, -0.3])
    x = torch.stack([0.5 + a, torch.full_like(a, 0.5)], dim=1).view(-1, 1, 1, 2)
    y = torch.zeros(len(a), dtype=torch.long)
    eps = 0.1
    values = {}
    for label in THM2_LABELS:
        _, rows = evaluate_transferred(model, x, y, "classification", attack_settings(eps=eps, steps=20, linf_eps=0.01), seed=0,
                                       thm2_label=label)
        assert {r["thm2_label"] for r in rows} == {label}
        values[label] = by_metric(rows, "l2")
    assert values["true_label"]["fulfilled_fraction"] == pytest.approx(1 / 5)  # a = 0.12
    assert values["predicted"]["fulfilled_fraction"] == pytest.approx(3 / 5)  # a = 0.12, -0.15, -0.3
    for v in values.values():
        assert v["robust_among_fulfilled"] == v["robust_among_fulfilled_best"] == 1.0
        assert v["robust_accuracy"] == pytest.approx(1 / 5)  # robust accuracy does not depend on the label
    with pytest.raises(ValueError, match="predicted"):
        evaluate_transferred(model, x, y, "classification", attack_settings(), seed=0, thm2_label="true")


# --------------------------------------------------------------------------- the AS attack's methods


def block_extractor():
    """g(x) = A (x - 0.5) on 1x2x4 images, A's two rows on disjoint pixels (0-3 and 4-7), with
    signs of both kinds, so sign(A^T r) = sign(A_ij) sign(r_i) for the row i of pixel j."""
    a = torch.zeros(2, 8)
    a[0, :4] = torch.tensor([4.0, -8.0, 2.0, 6.0])
    a[1, 4:] = torch.tensor([-4.0, 12.0, 8.0, -2.0])
    return LinearExtractor(a, 2).eval(), a.double().numpy()


def test_fgsm_as_attack_is_the_authors_single_signed_step():
    """fgsm: x' = clip(x + eps sign(grad), 0, 1) with grad the gradient of
    ||g(x') - sign(g)|g|^1.00001||_2 at x' = x, i.e. A^T r / ||r||, r = g - sign(g)|g|^1.00001;
    sign(r_i) = sign(g_i) sign(1 - |g_i|). Computed here in float64 numpy."""
    model, a = block_extractor()
    # features |g| away from 1: input 0 g = (0.3, -2.5) (r = (+, +)), input 1 g = (2.0, 0.4) (r = (-, +))
    x_np = np.full((2, 8), 0.5)
    x_np[0, 0], x_np[0, 5] = 0.5 + 0.3 / 4, 0.5 - 2.5 / 12
    x_np[1, 3], x_np[1, 5] = 0.5 + 2.0 / 6, 0.5 + 0.4 / 12
    x = torch.tensor(x_np, dtype=torch.float32).view(2, 1, 2, 4)
    g = (x_np - 0.5) @ a.T
    r = g - np.sign(g) * np.abs(g) ** FGSM_OFFSET_POWER
    assert np.all(np.sign(r) == np.sign(g) * np.sign(1 - np.abs(g)))
    grad = r @ a  # A^T r per input (the 1 / ||r|| factor does not change the direction)
    eps = 0.05
    for norm, step in [("linf", eps * np.sign(grad)),
                       ("l2", eps * grad / np.linalg.norm(grad, axis=1, keepdims=True))]:
        expected = np.clip(x_np + step, 0, 1)
        x_adv = as_attack(model, x, eps=eps, norm=norm, steps=7, restarts=3, gen=generator(0), method="fgsm")
        np.testing.assert_allclose(x_adv.view(2, -1).double().numpy(), expected, atol=2e-3 * eps if norm == "l2" else 1e-6)
    # a hand check of the Linf signs: input 0, row 0 (g = 0.3 -> r > 0): sign(A_0j); row 1
    # (g = -2.5 -> r > 0 too): sign(A_1j)
    assert np.array_equal(np.sign(grad[0]), np.sign(a.sum(axis=0)))
    # no randomness: the generator is not used
    again = as_attack(model, x, eps=eps, norm="linf", steps=1, restarts=0, gen=generator(99), method="fgsm")
    assert torch.equal(again, as_attack(model, x, eps=eps, norm="linf", steps=1, restarts=0, gen=generator(1), method="fgsm"))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_paper_pgd_as_attack_reaches_the_closed_form_maximum(norm):
    """pgd_20x0.7eps on g(x) = a.(x - c), one output: max_{||d|| <= eps} |a.d| is eps ||a||_2
    (L2 ball) and eps ||a||_1 (Linf ball, at d = eps sign(a)), with x inside [eps, 1 - eps].
    20 steps of 0.7 eps reach it whatever the ``steps`` and ``step_size`` passed (ignored): one
    step of robustlens' pgd with the same arguments does not."""
    a = torch.randn(1, 16, generator=generator(5))
    model = LinearExtractor(a, 2).eval()
    x = 0.3 + 0.4 * torch.rand(12, 1, 4, 4, generator=generator(6))
    eps = 0.1
    a64 = a.double().numpy()[0]
    exact = eps * (np.linalg.norm(a64) if norm == "l2" else np.abs(a64).sum())
    x_adv = as_attack(model, x, eps=eps, norm=norm, steps=1, restarts=0, gen=generator(7), step_size=eps / 100,
                      method="pgd_20x0.7eps")
    delta = (x_adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    change = representation_change(model, x, x_adv).double().numpy()
    np.testing.assert_allclose(change, exact, rtol=1e-4)
    weak = representation_change(model, x, as_attack(model, x, eps=eps, norm=norm, steps=1, restarts=0, gen=generator(7),
                                                     step_size=eps / 100, method="pgd")).double().numpy()
    assert (weak < 0.9 * exact).all()
    # as_score passes the method on
    mean, per = as_score(model, x, eps=eps, norm=norm, steps=1, restarts=0, seed=0, method="pgd_20x0.7eps")
    np.testing.assert_allclose(per, exact, rtol=1e-4)
    with pytest.raises(ValueError, match="pgd_20x0.7eps"):
        as_attack(model, x, eps=eps, norm=norm, steps=1, restarts=0, gen=generator(7), method="paper")


# --------------------------------------------------------------------------- LP, FT, LP-FT


@pytest.fixture(scope="module")
def trained_cnn():
    """A small CNN whose batch-norm statistics are no longer the defaults."""
    model = small_cnn(0, n_outputs=4)
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 1, 8, 8, generator=generator(5)))
    return model.eval()


def test_linear_probe_leaves_every_extractor_weight_unchanged(trained_cnn):
    before = copy.deepcopy(trained_cnn.state_dict())
    x = torch.rand(60, 1, 8, 8, generator=generator(6))
    y = torch.randint(0, 3, (60,), generator=generator(7))
    settings = {"epochs": 5, "lr": 0.1, "weight_decay": 0.0, "batch_size": 16}
    probe = linear_probe(trained_cnn, x, y, "classification", 3, settings, seed=0)
    after = copy.deepcopy(probe.state_dict())  # a copy: state_dict() holds views of the parameters
    extractor = [k for k in before if not k.startswith("head.")]
    assert any("running_mean" in k for k in extractor)
    for key in extractor:
        assert torch.equal(after[key], before[key]), key
    assert probe.head.weight.shape == (3, trained_cnn.head.in_features)
    for key, value in trained_cnn.state_dict().items():  # the source model is untouched too
        assert torch.equal(value, before[key]), key
    # fine-tuning, by contrast, changes the extractor (so the comparison above can fail)
    tuned = fine_tune(trained_cnn, x, y, "classification", 3, settings, seed=0).state_dict()
    assert any(not torch.equal(tuned[k], before[k]) for k in extractor)
    lp_ft = fine_tune(probe, x, y, "classification", 3, {**settings, "epochs": 1}, seed=0, head=probe.head)
    assert lp_ft.head.weight.shape == probe.head.weight.shape
    assert torch.equal(probe.state_dict()["head.weight"], after["head.weight"])  # the LP model is not modified


def test_fit_head_recovers_an_exact_linear_regression():
    """Targets that are an exact linear function of the features: the head (fitted on
    standardised features, folded back) matches least squares."""
    gen = generator(8)
    feats = torch.randn(200, 6, generator=gen) * torch.tensor([1.0, 5.0, 0.2, 2.0, 1.0, 3.0]) + 2.0
    true_w = torch.randn(2, 6, generator=gen)
    y = feats @ true_w.T + torch.tensor([0.5, -1.0])
    head = fit_head(feats, y, "regression", 2, epochs=300, lr=0.1, weight_decay=0.0, batch_size=200, seed=0)
    with torch.no_grad():
        pred = head(feats)
    assert torch.mean((pred - y) ** 2).item() < 1e-4
    np.testing.assert_allclose(head.weight.detach().numpy(), true_w.numpy(), atol=1e-2)


def test_transfer_tables_are_tidy():
    spec = {"id": "m", "eps": 0.5, "seed": 0}
    result = {"transfer": [{"method": "lp", "attack_norm": "none", "attack_eps": 0.0, "metric": "clean_accuracy", "value": 0.9}],
              "bounds": [{"method": "lp", "attack_norm": "l2", "attack_eps": 1.0, "metric": "lhs", "value": 0.1},
                         {"method": "lp", "attack_norm": "l2", "attack_eps": 1.0, "metric": "rhs_as", "value": 0.3}]}
    result["bounds"][1].update(as_method="fgsm", thm2_label="predicted")
    transfer, bounds = transfer_tables("s", [(spec, "heldout")], [result])
    assert list(transfer.columns) == TRANSFER_COLUMNS
    assert list(bounds.columns) == BOUNDS_COLUMNS == TRANSFER_COLUMNS[:-2] + ["as_method", "thm2_label", "metric", "value"]
    assert len(transfer) == 1 and len(bounds) == 2
    assert bounds.iloc[0].to_dict() == {"study": "s", "model": "m", "eps": 0.5, "seed": 0, "task": "heldout", "task_kind": "classification",
                                        "method": "lp", "attack_norm": "l2", "attack_eps": 1.0, "as_method": "pgd",
                                        "thm2_label": "true_label", "metric": "lhs", "value": 0.1}
    assert bounds.iloc[1][["as_method", "thm2_label"]].tolist() == ["fgsm", "predicted"]


# --------------------------------------------------------------------------- closed forms of every reported metric


def _diag_model(scales, weight, bias=None):
    """g(x) = diag(scales) (x - 0.5) on 1x1xD images, head (weight, bias)."""
    model = LinearExtractor(torch.diag(torch.tensor(scales, dtype=torch.float32)), len(weight)).eval()
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        model.head.bias.copy_(torch.zeros(len(weight)) if bias is None else torch.tensor(bias, dtype=torch.float32))
    return model


def test_evaluate_transferred_regression_metrics_match_the_linear_closed_form():
    """g(x) = x - 0.5 on 4 pixels, scalar head w: over the Linf ball the worst residual is
    |r| + eps ||w||_1 (sign PGD reaches it exactly when the residual keeps its sign), so
    robust MSE = mean (|r| + eps ||w||_1)^2, clean MSE = mean r^2; the bound loss is |r|, so
    adversarial loss = mean |r| + eps ||w||_1, relative gap = eps ||w||_1 / mean |r|,
    lhs = eps ||w||_1 / ||w||_2 (L = 1); the AS attack reaches a corner: eps sqrt(4)."""
    w = np.array([0.3, -1.2, 0.8, 0.5])
    model = _diag_model([1.0] * 4, [w.tolist()], bias=[0.1])
    x = 0.4 + 0.2 * torch.rand(10, 1, 1, 4, generator=generator(3))
    with torch.no_grad():
        h = model(x)[:, 0].double().numpy()
    offsets = np.array([2.0 + 0.3 * i for i in range(10)]) * np.where(np.arange(10) % 2 == 0, 1.0, -1.0)
    y_np = h + offsets
    y = torch.tensor(y_np, dtype=torch.float32).unsqueeze(1)
    r = h - y.double().numpy()[:, 0]
    eps, eps2 = 0.05, 0.02
    strength = {"steps": 20, "restarts": 0}
    settings = {"robust_accuracy": {"norm": "linf", "eps": eps, **strength},
                "bounds": [{"norm": "linf", "eps": eps, "as_attack": strength, "loss_attack": strength},
                           {"norm": "linf", "eps": eps2, "as_attack": strength, "loss_attack": {"steps": 25, "restarts": 1}}]}
    transfer_rows, bound_rows = evaluate_transferred(model, x, y, "regression", settings, seed=0)
    worst = np.abs(r) + eps * np.abs(w).sum()
    assert [(t["attack_norm"], t["attack_eps"], t["metric"]) for t in transfer_rows] == [("none", 0.0, "clean_mse"), ("linf", eps, "robust_mse")]
    assert all(set(t) == {"attack_norm", "attack_eps", "metric", "value"} for t in transfer_rows)
    assert transfer_rows[0]["value"] == pytest.approx(np.mean(r**2), rel=1e-5)
    assert transfer_rows[1]["value"] == pytest.approx(np.mean(worst**2), rel=1e-5)
    for e in (eps, eps2):
        v = {b["metric"]: b["value"] for b in bound_rows if b["attack_eps"] == e}
        assert all(b["as_method"] == "pgd" and b["thm2_label"] == "none" for b in bound_rows)
        assert all(set(b) == {"attack_norm", "attack_eps", "as_method", "thm2_label", "metric", "value"} for b in bound_rows)
        gap = e * np.abs(w).sum()
        assert v["clean_loss"] == pytest.approx(np.mean(np.abs(r)), rel=1e-5)
        assert v["adversarial_loss"] == pytest.approx(np.mean(np.abs(r)) + gap, rel=1e-5)
        assert v["relative_loss_gap"] == pytest.approx(gap / np.mean(np.abs(r)), rel=1e-3)
        assert v["lhs"] == pytest.approx(gap / np.linalg.norm(w), rel=1e-3)
        assert v["rhs_as"] == pytest.approx(2 * e, rel=1e-5)
        assert v["weight_norm"] == pytest.approx(np.linalg.norm(w), rel=1e-6)
        assert v["lipschitz"] == 1.0
        assert set(v) == {"lhs", "rhs_as", "rhs_best", "loss_attack_larger_fraction", "clean_loss", "adversarial_loss",
                          "relative_loss_gap", "lipschitz", "weight_norm"}


def test_evaluate_transferred_classification_metrics_match_the_linear_closed_form():
    """Two classes, g(x) = diag(0.5, 2) (x - 0.5), W = [[1, 0], [-2, 0]], x1 = 0.5: the logit gap
    of label 0 is 1.5 a (a = x0 - 0.5, scaled by 0.5) and the Linf worst case lowers it by
    eps ||A^T (W_0 - W_1)||_1 = 1.5 eps; CE = log(1 + exp(-gap)); ||W|| = max row norm = 2,
    L = 2; Thm 2's margin is gap / ||W_0 - W_1|| = a / 2. The authors' FGSM AS attack from
    g = (a/2, 0) moves x0 only (the offset of g_1 = 0 is 0), so AS(x) = 0.5 eps, while PGD on
    the AS would move x1 (scale 2)."""
    model = _diag_model([0.5, 2.0], [[1.0, 0.0], [-2.0, 0.0]])
    a = np.array([0.15, 0.12, 0.08, 0.03, -0.02, -0.06, 0.1, -0.12])
    y_np = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    x = torch.tensor(np.stack([0.5 + a, np.full_like(a, 0.5)], axis=1), dtype=torch.float32).view(-1, 1, 1, 2)
    a = x.view(-1, 2)[:, 0].double().numpy() - 0.5
    y = torch.tensor(y_np)
    eps = 0.04
    strength = {"steps": 20, "restarts": 0}
    settings = {"as_method": "fgsm", "robust_accuracy": {"norm": "linf", "eps": eps, **strength},
                "bounds": [{"norm": "linf", "eps": eps, "as_attack": strength, "loss_attack": strength}]}
    sign = np.where(y_np == 0, 1.0, -1.0)
    gap = sign * 1.5 * a  # h_y - h_other
    worst = gap - 1.5 * eps
    clean_ce, adv_ce = np.log1p(np.exp(-gap)), np.log1p(np.exp(-worst))
    for label in THM2_LABELS:
        transfer_rows, bound_rows = evaluate_transferred(model, x, y, "classification", settings, seed=0, thm2_label=label)
        assert [(t["attack_norm"], t["attack_eps"], t["metric"]) for t in transfer_rows] == [
            ("none", 0.0, "clean_accuracy"), ("none", 0.0, "clean_cross_entropy"),
            ("linf", eps, "robust_accuracy"), ("linf", eps, "robust_cross_entropy")]
        t = [row["value"] for row in transfer_rows]
        assert t[0] == pytest.approx(np.mean(gap > 0))
        assert t[1] == pytest.approx(clean_ce.mean(), rel=1e-5)
        assert t[2] == pytest.approx(np.mean(worst > 0))
        assert t[3] == pytest.approx(adv_ce.mean(), rel=1e-5)
        v = {b["metric"]: b["value"] for b in bound_rows}
        assert {(b["as_method"], b["thm2_label"]) for b in bound_rows} == {("fgsm", label)}
        assert v["clean_loss"] == pytest.approx(clean_ce.mean(), rel=1e-5)
        assert v["adversarial_loss"] == pytest.approx(adv_ce.mean(), rel=1e-5)
        assert v["relative_loss_gap"] == pytest.approx((adv_ce.mean() - clean_ce.mean()) / clean_ce.mean(), rel=1e-4)
        assert v["weight_norm"] == pytest.approx(2.0) and v["lipschitz"] == 2.0
        assert v["lhs"] == pytest.approx((adv_ce.mean() - clean_ce.mean()) / 4.0, rel=1e-4)
        assert v["rhs_as"] == pytest.approx(0.5 * eps, rel=1e-4)
        margin = np.abs(gap) / 3.0 if label == "predicted" else gap / 3.0
        fulfilled = margin > 0.5 * eps
        assert v["fulfilled_fraction"] == pytest.approx(fulfilled.mean())
        assert v["n_fulfilled"] == fulfilled.sum()
        assert v["robust_accuracy"] == pytest.approx(np.mean(worst > 0))


def test_loss_attack_is_shared_with_the_robust_accuracy_attack():
    """A loss attack with the robust-accuracy settings is run once and used for both: with a
    weak (one small step) attack, whose result depends on its random start, the bounds'
    adversarial loss and robust accuracy equal the robust cross-entropy and accuracy."""
    model = small_cnn(0, n_outputs=3)
    x = torch.rand(30, 1, 8, 8, generator=generator(61))
    y = torch.randint(0, 3, (30,), generator=generator(62))
    settings = attack_settings(norm="linf", eps=0.1, steps=1, step_size=0.001, linf_eps=0.1)
    settings["bounds"] = settings["bounds"][1:]  # the Linf bound only: the robust-accuracy attack's settings
    transfer_rows, bound_rows = evaluate_transferred(model, x, y, "classification", settings, seed=3)
    t = by_metric(transfer_rows, "linf")
    b = by_metric(bound_rows, "linf")
    assert b["adversarial_loss"] == t["robust_cross_entropy"]
    assert b["robust_accuracy"] == t["robust_accuracy"]


# --------------------------------------------------------------------------- small functions against hand computations


def test_task_loss_objectives():
    out = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    y = torch.tensor([[0.0, 1.0], [1.5, 0.25]])
    diff = out.double().numpy() - y.double().numpy()
    from robustlens.transfer import task_loss

    np.testing.assert_allclose(task_loss(out, y, "regression").numpy(), (diff**2).mean(axis=1), rtol=1e-6)  # default: train
    np.testing.assert_allclose(task_loss(out, y, "regression", "train").numpy(), (diff**2).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(task_loss(out, y, "regression", "bound").numpy(), np.abs(diff).max(axis=1), rtol=1e-6)
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    z = logits.double().numpy()[0]
    ce = -z[2] + np.log(np.exp(z).sum())
    for objective in ("train", "bound"):
        assert task_loss(logits, torch.tensor([2]), "classification", objective).item() == pytest.approx(ce, rel=1e-6)


def test_head_weight_norm_of_a_vector_and_in_float64():
    assert head_weight_norm(np.array([3.0, 4.0])) == pytest.approx(5.0)  # a scalar head given as a vector
    w = np.full((2, 1001), 0.1, dtype=np.float32)
    w[1, 0] = 0.3
    exact = np.linalg.norm(w.astype(np.float64), axis=1).max()
    assert head_weight_norm(w) == pytest.approx(exact, rel=1e-12)


def test_lemma1_bound_is_computed_in_float64_and_counts_ties_as_not_larger():
    big = np.float32(2**24)
    clean = np.array([big, 1, 1, 1], dtype=np.float32)
    adv = np.array([big, 3, 3, 3], dtype=np.float32)
    as_change = np.array([big, 1, 1, 1], dtype=np.float32)
    loss_change = np.array([1.0, 1.0, 2.0, 0.5])
    out = lemma1_bound(clean, adv, as_change, loss_change, lipschitz=1.0, weight_norm=1.0)
    c64, a64, s64 = (v.astype(np.float64) for v in (clean, adv, as_change))
    assert out["lhs"] == pytest.approx(a64.mean() - c64.mean(), rel=1e-12)  # 1.5
    assert out["rhs_as"] == pytest.approx(s64.mean(), rel=1e-12)
    assert out["loss_attack_larger_fraction"] == 0.25  # the tie (1.0 vs 1.0) does not count


def test_thm2_margin_with_equal_weight_rows_and_close_rows():
    """W_y = W_j: +inf when the logit gap is positive (even below 1), -inf when it is 0 or
    negative; and ||W_y - W_j|| below 1 is divided by, not replaced."""
    weight = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.5]])
    logits = np.array([[1.0, 0.5, -10.0], [1.0, 1.0, -10.0], [0.0, 1.0, -10.0]])
    m = thm2_margin(logits, [0, 0, 0], weight)
    # input 0: j=1 -> +inf, j=2 -> 11 / 0.5 = 22
    assert m[0] == pytest.approx(22.0)
    assert m[1] == -np.inf and m[2] == -np.inf
    m1 = thm2_margin(np.array([[1.0, 0.5, 0.8]]), [0], weight)
    assert m1[0] == pytest.approx(0.2 / 0.5)  # 0.4 < +inf of j=1


def test_thm2_margin_is_computed_in_float64():
    logits = np.array([[1e8, 1.5]], dtype=np.float32)
    weight = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    expected = (np.float64(logits[0, 0]) - np.float64(logits[0, 1])) / np.sqrt(2.0)
    assert thm2_margin(logits, [0], weight)[0] == pytest.approx(expected, rel=1e-12)
    w32 = np.array([[1e8, 0.0], [1.5, 0.0]], dtype=np.float32)
    expected = 1.0 / (np.float64(w32[0, 0]) - np.float64(w32[1, 0]))
    assert thm2_margin(np.array([[1.0, 0.0]]), [0], w32)[0] == pytest.approx(expected, rel=1e-12)
    # labels read from a float column
    assert thm2_margin(np.array([[1.0, 0.0]]), np.array([1.0]), np.eye(2))[0] == pytest.approx(-1 / np.sqrt(2))


def test_thm2_criterion_is_strict_and_reports_best_only_when_given():
    out = thm2_criterion([0.5, 0.3, 0.2], [0.5, 0.1, 0.1], [False, True, False])
    assert set(out) == {"fulfilled_fraction", "n_fulfilled", "robust_among_fulfilled"}
    assert out["n_fulfilled"] == 2.0  # the margin 0.5 equal to its change does not fulfil it
    assert out["robust_among_fulfilled"] == pytest.approx(0.5)
    best = thm2_criterion([0.5, 0.3, 0.2], [0.5, 0.1, 0.1], [False, True, False], best_change=[0.1, 0.3, 0.1])
    assert best["n_fulfilled_best"] == 2.0 and best["robust_among_fulfilled_best"] == 0.0


def test_transfer_tables_concatenate_and_default_the_regression_label():
    spec = {"id": "m", "eps": 0.5, "seed": 0}
    row = {"method": "lp", "metric": "clean_mse", "value": 1.0, "attack_eps": 0.0, "attack_norm": "none"}  # keys out of order
    first = {"transfer": [row], "bounds": [{"method": "lp", "attack_norm": "l2", "attack_eps": 1.0, "metric": "lhs", "value": 0.1}]}
    second = {"transfer": [], "bounds": [{"method": "ft", "attack_norm": "l2", "attack_eps": 1.0, "metric": "lhs", "value": 0.2}]}
    transfer, bounds = transfer_tables("s", [(spec, "shapes-factors"), (spec, "heldout")], [first, second])
    assert list(transfer.columns) == TRANSFER_COLUMNS and len(transfer) == 1
    assert bounds["value"].tolist() == [0.1, 0.2]
    assert bounds["thm2_label"].tolist() == ["none", "true_label"]
    assert bounds["task_kind"].tolist() == ["regression", "classification"]
    empty_transfer, _ = transfer_tables("s", [(spec, "heldout")], [second])
    assert list(empty_transfer.columns) == TRANSFER_COLUMNS


# --------------------------------------------------------------------------- the loss attack and the AS attack's arguments


def test_loss_attack_runs_aggregate_over_runs(monkeypatch):
    """loss_attack_runs with PGD replaced by fixed perturbations per run (run 0: x0 - 0.1,
    run 1: x1 + 0.2, run 2: x0 - 0.05) on g(x) = x - 0.5, W = [[1, 0], [-1, 0]]: per input
    the largest loss over the runs, the change of the run that gave it, the largest change,
    robust = correct in every run, consistent = clean prediction kept in every run; each run
    one PGD run from a random start with per-input generators."""
    import robustlens.transfer as transfer
    from robustlens.transfer import loss_attack_runs

    deltas = [np.array([-0.1, 0.0]), np.array([0.0, 0.2]), np.array([-0.05, 0.0])]
    calls = []

    def fake_pgd(objective, x, eps, norm, steps, step_size, random_init, restarts, gen):
        calls.append((len(x), steps, step_size, random_init, restarts, gen))
        run = (len(calls) - 1) % len(deltas)
        return x + torch.tensor(deltas[run], dtype=x.dtype).view(1, 1, 1, 2)

    monkeypatch.setattr(transfer, "pgd_maximize", fake_pgd)
    model = _diag_model([1.0, 1.0], [[1.0, 0.0], [-1.0, 0.0]])
    a = np.array([0.07, 0.07, 0.2, 0.03])
    y_np = np.array([0, 1, 0, 1])
    x = torch.tensor(np.stack([0.5 + a, np.full_like(a, 0.5)], axis=1), dtype=torch.float32).view(-1, 1, 1, 2)
    a = x.view(-1, 2)[:, 0].double().numpy() - 0.5
    out = loss_attack_runs(model, x, torch.tensor(y_np), "classification", eps=0.3, norm="l2", steps=7, restarts=2, seed=0,
                           step_size=0.01, batch_size=2)
    assert len(calls) == 2 * 3  # two batches, 1 + restarts runs each
    for n, steps, step_size, random_init, restarts, gen in calls:
        assert (n, steps, step_size, random_init, restarts) == (2, 7, 0.01, True, 0)
        assert isinstance(gen, (list, tuple)) and len(gen) == 2
    sign = np.where(y_np == 0, 1.0, -1.0)
    losses, changes, correct, kept = [], [], [], []
    for d in deltas:
        h0 = a + d[0]
        margin = sign * 2 * h0  # h_y - h_other
        losses.append(np.log1p(np.exp(-margin)))
        changes.append(np.full(len(a), np.linalg.norm(d)))
        correct.append(margin > 0)
        kept.append((h0 > 0) == (a > 0))
    losses, changes = np.array(losses), np.array(changes)
    best = losses.argmax(axis=0)
    np.testing.assert_allclose(out["loss"], losses.max(axis=0), rtol=1e-5)
    np.testing.assert_allclose(out["change"], changes[best, np.arange(len(a))], rtol=1e-5)
    np.testing.assert_allclose(out["change_max"], changes.max(axis=0), rtol=1e-5)
    assert out["robust"].tolist() == np.all(correct, axis=0).tolist() == [False, False, True, False]
    assert out["consistent"].tolist() == np.all(kept, axis=0).tolist() == [False, False, True, False]


def test_as_attack_passes_its_attack_settings_to_pgd(monkeypatch):
    """pgd: steps, step_size, 1 + restarts runs and the generator as given; pgd_20x0.7eps:
    20 steps of 0.7 eps, one run from a random start, the same generator."""
    import robustlens.transfer as transfer

    calls = []

    def fake_pgd(objective, x, eps, norm, steps, step_size, random_init, restarts, gen):
        calls.append((eps, norm, steps, step_size, random_init, restarts, gen))
        return x.clone()

    monkeypatch.setattr(transfer, "pgd_maximize", fake_pgd)
    model = _diag_model([1.0, 1.0], [[1.0, 0.0], [-1.0, 0.0]])
    x = torch.full((3, 1, 1, 2), 0.5)
    gen = generator(0)
    as_attack(model, x, eps=0.2, norm="linf", steps=7, restarts=3, gen=gen, step_size=0.03)
    as_attack(model, x, eps=0.2, norm="l2", steps=7, restarts=3, gen=gen, step_size=0.03, method="pgd_20x0.7eps")
    assert calls[0] == (0.2, "linf", 7, 0.03, True, 3, gen)
    eps, norm, steps, step_size, random_init, restarts, g = calls[1]
    assert (eps, norm, steps, random_init, restarts) == (0.2, "l2", 20, True, 0) and g is gen
    assert step_size == pytest.approx(0.7 * 0.2)


@pytest.mark.parametrize("method", ["pgd", "pgd_20x0.7eps"])
def test_as_score_does_not_depend_on_the_batch_size(method):
    """Input i's random starts come from its own generator (seed, i) and the best run is kept
    per input, so the per-input AS values do not depend on the batch size nor on the global
    random state."""
    model = small_cnn(1, n_outputs=3)
    x = torch.rand(10, 1, 8, 8, generator=generator(71))
    torch.manual_seed(1)
    _, whole = as_score(model, x, eps=0.5, norm="l2", steps=3, restarts=2, seed=5, method=method)
    torch.manual_seed(2)
    _, split = as_score(model, x, eps=0.5, norm="l2", steps=3, restarts=2, seed=5, method=method, batch_size=3)
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)


def test_loss_attack_runs_do_not_depend_on_the_batch_size():
    from robustlens.transfer import loss_attack_runs

    model = small_cnn(2, n_outputs=3)
    x = torch.rand(10, 1, 8, 8, generator=generator(72))
    y = torch.randint(0, 3, (10,), generator=generator(73))
    torch.manual_seed(1)
    whole = loss_attack_runs(model, x, y, "classification", eps=0.5, norm="l2", steps=2, restarts=1, seed=4)
    torch.manual_seed(2)
    split = loss_attack_runs(model, x, y, "classification", eps=0.5, norm="l2", steps=2, restarts=1, seed=4, batch_size=3)
    for key in ("loss", "change", "change_max"):
        np.testing.assert_allclose(split[key], whole[key], rtol=1e-5, atol=1e-6)


def test_fgsm_as_attack_is_clipped_to_the_input_range():
    """g(x) = x - 0.5 near both ends of [0, 1]: the signed step of length eps moves each pixel
    away from 0.5 (sign(r) = sign(g) for |g| < 1) and is clipped to [0, 1]."""
    model = _diag_model([1.0, 1.0], [[1.0, 0.0], [-1.0, 0.0]])
    x_np = np.array([[0.99, 0.01], [0.97, 0.6]])
    x = torch.tensor(x_np, dtype=torch.float32).view(2, 1, 1, 2)
    eps = 0.05
    expected = np.clip(x_np + eps * np.sign(x_np - 0.5), 0, 1)
    x_adv = as_attack(model, x, eps=eps, norm="linf", steps=1, restarts=0, gen=generator(0), method="fgsm")
    np.testing.assert_allclose(x_adv.view(2, 2).double().numpy(), expected, atol=1e-6)


# --------------------------------------------------------------------------- LP and FT against a plain training loop


def _reference_sgd(params, loss_fn, batches, lr, weight_decay):
    """Plain SGD (momentum 0.9, weight decay) with the cosine schedule written out:
    lr_t = lr (1 + cos(pi t / T)) / 2 at step t of T."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    total = len(batches)
    for t, idx in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr * (1 + np.cos(np.pi * t / total)) / 2
        opt.zero_grad()
        loss_fn(idx).backward()
        opt.step()


def _reference_init(d, k, gen):
    bound = 1 / np.sqrt(d)
    w = (torch.rand(k, d, generator=gen) * 2 - 1) * bound
    b = (torch.rand(k, generator=gen) * 2 - 1) * bound
    return w.requires_grad_(True), b.requires_grad_(True)


def _reference_batches(n, epochs, batch_size, gen):
    batches = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        batches += [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return batches


def _reference_loss(out, y, kind):
    if kind == "classification":
        return -torch.log_softmax(out, dim=1)[torch.arange(len(y)), y].mean()
    return ((out - y) ** 2).mean()


def _reference_fit_head(feats, y, kind, k, epochs, lr, weight_decay, batch_size, seed):
    gen = torch.Generator().manual_seed(seed)
    mean = feats.mean(0)
    std = ((feats - mean) ** 2).mean(0).sqrt()
    std = torch.where(std > 0, torch.maximum(std, 0.01 * std.max()), torch.ones_like(std))  # the documented floor
    z = (feats - mean) / std
    w, b = _reference_init(z.shape[1], k, gen)
    # the generator is drawn from in this order: the init, then one permutation per epoch
    batches = _reference_batches(len(z), epochs, batch_size, gen)
    _reference_sgd([w, b], lambda idx: _reference_loss(z[idx] @ w.T + b, y[idx], kind), batches, lr, weight_decay)
    w_raw = (w / std).detach()
    return w_raw, (b - w_raw @ mean).detach()


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_fit_head_matches_a_plain_sgd_loop(kind):
    """fit_head against its documented recipe written out: standardise (population std, a
    constant feature left as is), PyTorch's uniform +-1/sqrt(d) init and per-epoch
    permutations from the seed, minibatch SGD with momentum 0.9, weight decay and the cosine
    schedule over every step, then fold the standardisation back."""
    gen = generator(80)
    feats = torch.randn(22, 5, generator=gen) * torch.tensor([0.3, 2.0, 1.0, 0.5, 0.0]) + 1.0
    y = torch.randint(0, 3, (22,), generator=gen) if kind == "classification" else torch.randn(22, 2, generator=gen)
    k = 3 if kind == "classification" else 2
    kw = {"epochs": 3, "lr": 0.1, "weight_decay": 0.01, "batch_size": 6}
    torch.manual_seed(0)
    head = fit_head(feats, y, kind, k, seed=7, **kw)
    w, b = _reference_fit_head(feats, y, kind, k, seed=7, **kw)
    assert torch.isfinite(head.weight).all()
    np.testing.assert_allclose(head.weight.detach().numpy(), w.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(head.bias.detach().numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    torch.manual_seed(1)  # the global random state is not used
    again = fit_head(feats, y, kind, k, seed=7, **kw)
    assert torch.equal(again.weight, head.weight)


def linear_extractor_task(seed: int, data_seed: int):
    """A 3-feature LinearExtractor of a 2 x 2 grey input (singular values 2, 1, 0.5) and 20
    random inputs with labels of 3 classes."""
    a = spectrum_matrix(3, 4, [2.0, 1.0, 0.5], seed=seed)
    x = torch.rand(20, 1, 2, 2, generator=generator(data_seed))
    y = torch.randint(0, 3, (20,), generator=generator(data_seed + 1))
    return a, LinearExtractor(a, 3).eval(), x, y


def test_linear_probe_fits_its_head_on_the_features_and_freezes_the_extractor():
    a, model, x, y = linear_extractor_task(3, 81)
    settings = {"epochs": 2, "lr": 0.1, "weight_decay": 0.0, "batch_size": 8}
    probe = linear_probe(model, x, y, "classification", 3, settings, seed=2)
    feats = (x.flatten(1) - 0.5) @ a.T
    w, b = _reference_fit_head(feats, y, "classification", 3, seed=2, **settings)
    np.testing.assert_allclose(probe.head.weight.detach().numpy(), w.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probe.head.bias.detach().numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    assert not probe.a.requires_grad  # the extractor is frozen


def _reference_fine_tune(model, x, y, kind, k, settings, seed, head=None):
    """FT of a LinearExtractor written out: g = (x - 0.5) A^T, a new head from the seed (or a
    copy of ``head``), every weight trained."""
    gen = torch.Generator().manual_seed(seed)
    a = model.a.detach().clone().requires_grad_(True)
    if head is None:
        w, b = _reference_init(a.shape[0], k, gen)
    else:
        w, b = head.weight.detach().clone().requires_grad_(True), head.bias.detach().clone().requires_grad_(True)
    batches = _reference_batches(len(x), settings["epochs"], settings["batch_size"], gen)
    flat = x.flatten(1) - 0.5

    def loss(idx):
        return _reference_loss((flat[idx] @ a.T) @ w.T + b, y[idx], kind)

    _reference_sgd([a, w, b], loss, batches, settings["lr"], settings["weight_decay"])
    return a.detach(), w.detach(), b.detach()


def test_fine_tune_and_lp_ft_match_a_plain_sgd_loop():
    from robustlens.transfer import transfer_models

    _, model, x, y = linear_extractor_task(4, 83)
    fit = {"epochs": 2, "lr": 0.05, "weight_decay": 0.01, "batch_size": 6}
    settings = {"lp": fit, "ft": fit, "lp_ft": {**fit, "epochs": 3, "lr": 0.02}, "batch_size": 7}
    torch.manual_seed(0)
    models = transfer_models(model, x, y, "classification", 3, settings, seed=5)
    ra, rw, rb = _reference_fine_tune(model, x, y, "classification", 3, fit, seed=5)
    ft = models["ft"]
    np.testing.assert_allclose(ft.a.detach().numpy(), ra.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ft.head.weight.detach().numpy(), rw.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ft.head.bias.detach().numpy(), rb.numpy(), rtol=1e-4, atol=1e-5)
    # LP-FT starts from the LP model, its head included, and leaves the LP model as it was
    lp = models["lp"]
    lp_head_before = lp.head.weight.detach().clone()
    ra, rw, rb = _reference_fine_tune(lp, x, y, "classification", 3, settings["lp_ft"], seed=5, head=lp.head)
    lp_ft = models["lp_ft"]
    np.testing.assert_allclose(lp_ft.a.detach().numpy(), ra.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lp_ft.head.weight.detach().numpy(), rw.numpy(), rtol=1e-4, atol=1e-5)
    again = fine_tune(lp, x, y, "classification", 3, settings["lp_ft"], seed=5, head=lp.head)
    assert torch.equal(lp.head.weight, lp_head_before)
    assert torch.equal(again.head.weight, lp_ft.head.weight)


def test_fine_tune_stops_on_a_non_finite_loss():
    model = LinearExtractor(torch.eye(4), 1).eval()
    x = torch.rand(8, 1, 2, 2, generator=generator(85))
    y = torch.full((8, 1), 1e30)
    with pytest.raises(FloatingPointError, match="fine-tuning loss is"):
        fine_tune(model, x, y, "regression", 1, {"epochs": 1, "lr": 0.1, "weight_decay": 0.0, "batch_size": 4}, seed=0)


# --------------------------------------------------------------------------- task input, recipes


def _step_lr(lr, gamma, step_epochs, steps_per_epoch):
    """StepLR written out: lr x gamma^floor(epoch / step_epochs) at step t."""
    return lambda t: lr * gamma ** ((t // steps_per_epoch) // step_epochs)


def _reference_sgd_with(params, loss_fn, batches, lr_at, momentum, weight_decay):
    opt = torch.optim.SGD(params, lr=lr_at(0), momentum=momentum, weight_decay=weight_decay)
    for t, idx in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr_at(t)
        opt.zero_grad()
        loss_fn(idx).backward()
        opt.step()


def test_fine_tune_takes_its_momentum_and_step_schedule_from_the_settings():
    """Salman et al.'s recipe (momentum, StepLR) through the settings, against plain SGD."""
    _, model, x, y = linear_extractor_task(6, 87)
    fit = {"epochs": 4, "lr": 0.05, "weight_decay": 0.01, "batch_size": 7, "momentum": 0.5,
           "schedule": {"kind": "step", "step_epochs": 2, "gamma": 0.1}}
    tuned = fine_tune(model, x, y, "classification", 3, fit, seed=3)
    gen = torch.Generator().manual_seed(3)
    a = model.a.detach().clone().requires_grad_(True)
    w, b = _reference_init(3, 3, gen)
    batches = _reference_batches(len(x), 4, 7, gen)
    flat = x.flatten(1) - 0.5
    _reference_sgd_with([a, w, b], lambda idx: _reference_loss((flat[idx] @ a.T) @ w.T + b, y[idx], "classification"),
                        batches, _step_lr(0.05, 0.1, 2, 3), 0.5, 0.01)
    np.testing.assert_allclose(tuned.a.detach().numpy(), a.detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tuned.head.weight.detach().numpy(), w.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_fit_head_takes_its_momentum_and_schedule():
    gen = generator(88)
    feats, y = torch.randn(20, 4, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    kw = {"epochs": 4, "lr": 0.1, "weight_decay": 0.0, "batch_size": 5}
    cosine = fit_head(feats, y, "classification", 3, seed=1, **kw)
    stepped = fit_head(feats, y, "classification", 3, seed=1, momentum=0.0, schedule={"kind": "step", "step_epochs": 1, "gamma": 0.5}, **kw)
    # written out: standardise, init, permutations, plain SGD (no momentum) with lr halved per epoch
    g = torch.Generator().manual_seed(1)
    mean, std = feats.mean(0), feats.std(0, unbiased=False)
    z = (feats - mean) / std
    w, b = _reference_init(4, 3, g)
    batches = _reference_batches(20, 4, 5, g)
    _reference_sgd_with([w, b], lambda idx: _reference_loss(z[idx] @ w.T + b, y[idx], "classification"), batches,
                        _step_lr(0.1, 0.5, 1, 4), 0.0, 0.0)
    np.testing.assert_allclose(stepped.weight.detach().numpy(), (w / std).detach().numpy(), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(cosine.weight, stepped.weight)


def tiny_task_model(in_channels=1, size=4, resize="resize", seed=0):
    """A LinearExtractor of (in_channels, size, size) images seen through TaskInputModel."""
    from robustlens.modules import TaskInputModel

    a = torch.randn(3, in_channels * size * size, generator=generator(seed))
    inner = LinearExtractor(a, 2).eval()
    return inner, TaskInputModel(inner, size, in_channels, resize)


def test_task_input_model_resizes_and_repeats_like_torchvision():
    import torchvision.transforms.v2.functional as TF

    inner, model = tiny_task_model(in_channels=3, size=8)
    x = torch.rand(5, 1, 3, 3, generator=generator(90))
    expected_input = TF.resize(x, [8, 8], antialias=True).repeat(1, 3, 1, 1)
    torch.testing.assert_close(model(x), inner(expected_input), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.forward_features(x), inner.forward_features(expected_input), rtol=1e-5, atol=1e-6)
    assert isinstance(inner.head, nn.Linear)  # the wrapped model is copied, not changed

    inner, cropped = tiny_task_model(in_channels=3, size=7, resize="resize_center_crop", seed=1)
    x3 = torch.rand(4, 3, 5, 5, generator=generator(91))
    expected_input = TF.center_crop(TF.resize(x3, [8], antialias=True), [7])  # round(7 / 0.875) = 8
    torch.testing.assert_close(cropped(x3), inner(expected_input), rtol=1e-5, atol=1e-6)


def test_task_input_model_at_the_models_size_is_the_model():
    inner, model = tiny_task_model(in_channels=1, size=4)
    x = torch.rand(6, 1, 4, 4, generator=generator(92))
    assert torch.equal(model(x), inner(x))


def test_task_input_model_attacks_perturb_the_task_pixels():
    _, model = tiny_task_model(in_channels=3, size=8)
    x = torch.rand(3, 1, 2, 2, generator=generator(93), requires_grad=True)
    model(x).sum().backward()
    assert x.grad.shape == (3, 1, 2, 2) and x.grad.abs().sum() > 0
    _, one_channel = tiny_task_model(in_channels=1, size=4)
    with pytest.raises(ValueError, match="task images have 3 channels; the model takes 1"):
        one_channel(torch.rand(2, 3, 4, 4))


def test_fine_tune_augments_each_batch_from_its_own_generator():
    """FT with resized_crop_flip: each batch is cropped, resized to the model's size and flipped
    (robustlens.augment, checked against torchvision there) from a generator seeded seed +
    1,000,003, the batch order and head from the seed, as a plain loop does it."""
    from robustlens.augment import augment_batch

    inner, model = tiny_task_model(in_channels=1, size=4, seed=2)
    x = torch.rand(12, 1, 3, 3, generator=generator(94))
    y = torch.randint(0, 3, (12,), generator=generator(95))
    fit = {"epochs": 2, "lr": 0.05, "weight_decay": 0.0, "batch_size": 5, "augment": "resized_crop_flip"}
    tuned = fine_tune(model, x, y, "classification", 3, fit, seed=4)
    gen, aug = torch.Generator().manual_seed(4), generator(4 + 1_000_003)
    a = inner.a.detach().clone().requires_grad_(True)
    w, b = _reference_init(3, 3, gen)
    batches = _reference_batches(12, 2, 5, gen)
    views = [augment_batch(x[idx], "resized_crop_flip", aug, size=4) for idx in batches]
    step = iter(range(len(batches)))

    def loss(idx):
        view = views[next(step)]
        return _reference_loss(((view.flatten(1) - 0.5) @ a.T) @ w.T + b, y[idx], "classification")

    _reference_sgd([a, w, b], loss, batches, 0.05, 0.0)
    np.testing.assert_allclose(tuned.body.a.detach().numpy(), a.detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tuned.head.weight.detach().numpy(), w.detach().numpy(), rtol=1e-4, atol=1e-6)
    plain = fine_tune(model, x, y, "classification", 3, {**fit, "augment": "none"}, seed=4)
    assert not torch.allclose(plain.head.weight, tuned.head.weight)


def test_linear_probe_refuses_an_augmentation():
    _, model, x, y = linear_extractor_task(3, 81)
    with pytest.raises(ValueError, match="transfer.lp.augment must be none"):
        linear_probe(model, x, y, "classification", 3, {"epochs": 1, "lr": 0.1, "weight_decay": 0.0, "batch_size": 8,
                                                        "augment": "crop_flip"}, seed=0)


TRANSFER_RESUME_SCRIPT = """
import json, sys
sys.path.insert(0, {workflow!r})
import torch
from robustlens.runtime import configure_torch, generator
from robustlens.transfer import resumable_parts, transfer_study
from robustlens.zoo import build_architecture

configure_torch(1)
gen = generator(50)
x = torch.rand(1200, 1, 12, 12, generator=gen) * 0.5
y = torch.randint(0, 3, (1200,), generator=gen)
for k in range(3):
    x[y == k, :, 3 * k : 3 * k + 4, :] += 0.45
task = {{"kind": "classification", "n_outputs": 3, "x_train": x[:1000].numpy(), "y_train": y[:1000].numpy(),
        "x_test": x[1000:].numpy(), "y_test": y[1000:].numpy()}}
fit = {{"epochs": 6, "lr": 0.05, "weight_decay": 5e-4, "batch_size": 25}}
strength = {{"steps": 2, "restarts": 0, "step_size": None}}
attack = {{"norm": "l2", "eps": 0.5, **strength}}
settings = {{"seed": 0, "batch_size": 100, "lp": fit, "ft": {{**fit, "epochs": 12, "augment": "crop_flip"}},
            "lp_ft": {{**fit, "epochs": 4, "lr": 0.01, "schedule": {{"kind": "step", "step_epochs": 2, "gamma": 0.5}}}},
            "attacks": {{"seed": 0, "as_method": "pgd", "robust_accuracy": attack,
                        "bounds": [{{"norm": "l2", "eps": 0.5, "as_attack": strength, "loss_attack": strength}}]}}}}
torch.manual_seed(0)
model = build_architecture({{"name": "smallcnn", "in_channels": 1, "num_classes": 3, "widths": [8, 8], "convs_per_block": 1}})
resume = resumable_parts(sys.argv[1], {{"task": "bands"}}, every_s=0) if sys.argv[1] != "-" else None
rows = transfer_study(model.eval(), task, settings, "cpu", progress=False, desc="bands", resume=resume)
print("ROWS", json.dumps(rows, sort_keys=True))
"""


def test_a_killed_transfer_job_resumes_to_the_rows_of_an_uninterrupted_run(tmp_path):
    """Kill a transfer (SIGKILL) while it fine-tunes, once the FT state holds epoch 2 or later:
    the rerun restores the finished linear probe from its last-epoch state, continues FT from
    the saved epoch (not from scratch) and gives rows identical to an uninterrupted run (FT with
    augmentation, LP-FT with a step schedule: every generator and schedule restored). A third
    run finds every method evaluated and returns the same rows without fitting anything."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import robustlens

    script = tmp_path / "transfer.py"
    script.write_text(TRANSFER_RESUME_SCRIPT.format(workflow=str(Path(robustlens.__file__).parents[1])))

    def run(state):
        return subprocess.run([sys.executable, str(script), str(state)], capture_output=True, text=True, check=True).stdout

    whole = run("-")
    state = tmp_path / "resume"
    proc = subprocess.Popen([sys.executable, str(script), str(state)], stdout=subprocess.PIPE)
    epoch = 0
    while proc.poll() is None and epoch < 2:
        time.sleep(0.01)
        try:
            epoch = torch.load(state / "ft.pt", weights_only=False)["epoch"]
        except Exception:  # noqa: BLE001  (not written yet, or a read racing the rename)
            pass
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the transfer finished before it could be killed"
    saved = torch.load(state / "ft.pt", weights_only=False)["epoch"]
    assert 2 <= saved < 12 and not (state / "evaluated.pt").exists()
    resumed = run(state)
    assert "linear probe continues after epoch 6 of 6" in resumed
    assert f"fine-tuning continues after epoch {saved} of 12" in resumed
    assert whole.split("ROWS")[1] == resumed.split("ROWS")[1]
    assert sorted(p.name for p in state.iterdir()) == ["evaluated.pt", "ft.pt", "lp.pt", "lp_ft.pt"]
    again = run(state)
    assert "bands: lp, ft, lp_ft already evaluated" in again and "continues after" not in again
    assert again.split("ROWS")[1] == whole.split("ROWS")[1]
