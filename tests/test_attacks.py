"""PGD stays inside its eps-ball and the image range, and raises the loss."""

import pytest
import torch
import torch.nn.functional as F

from robustlens.attacks import pgd_attack, project
from robustlens.runtime import generator


@pytest.fixture(scope="module")
def linear_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_stays_in_ball_and_raises_loss(linear_model, norm):
    x = torch.rand(32, 1, 8, 8, generator=generator(1))
    y = torch.randint(0, 5, (32,), generator=generator(2))
    eps = 0.5 if norm == "l2" else 0.03
    x_adv = pgd_attack(linear_model, x, y, eps, norm, steps=10, restarts=1, gen=generator(0))
    delta = (x_adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        clean = F.cross_entropy(linear_model(x), y, reduction="none")
        adv = F.cross_entropy(linear_model(x_adv), y, reduction="none")
    assert (adv >= clean - 1e-6).all() and adv.mean() > clean.mean()


def test_l2_projection_matches_closed_form():
    delta = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    out = project(delta, 1.0, "l2")
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


def test_pgd_is_reproducible_for_a_seed(linear_model):
    x = torch.rand(8, 1, 8, 8, generator=generator(1))
    y = torch.zeros(8, dtype=torch.long)
    a = pgd_attack(linear_model, x, y, 0.5, "l2", steps=5, gen=generator(7))
    b = pgd_attack(linear_model, x, y, 0.5, "l2", steps=5, gen=generator(7))
    assert torch.equal(a, b)
