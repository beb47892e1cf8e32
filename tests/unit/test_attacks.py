"""PGD stays inside its eps-ball and the image range, reaches the closed-form worst case of a
linear model, keeps each sample's best restart and starts uniformly in the ball; in batches it
gives the images of one batch (per-example random starts)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlens.attacks import example_generators, example_seed, pgd_attack, pgd_maximize, project, random_start
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


# --------------------------------------------------------------------------- batching: per-example random starts


@pytest.fixture(scope="module")
def conv_model():
    """A small conv net with batch norm, in eval mode (what every attack runs on)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(24, 4),
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.1, 0.1)
        net[1].running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_per_example_start_is_the_draw_of_its_own_seeded_generator():
    """Example i's start is exactly what a CPU generator seeded with example_seed(seed, i) draws
    for one image: independent of the rows around it."""
    x = torch.rand(5, 3, 4, 4, generator=generator(1))
    for norm in ("l2", "linf"):
        starts = random_start(x, 0.5, norm, example_generators(7, 10, 5))
        for i in range(5):
            alone = random_start(x[i : i + 1], 0.5, norm, torch.Generator().manual_seed(example_seed(7, 10 + i)))
            assert torch.equal(starts[i : i + 1], alone)
        size = starts.flatten(1).norm(dim=1) if norm == "l2" else starts.flatten(1).abs().amax(dim=1)
        assert (size <= 0.5 * (1 + 1e-6)).all() and (size > 0).all()
    assert example_seed(7, 10) != example_seed(7, 11) and example_seed(7, 10) != example_seed(8, 10)


@pytest.mark.parametrize("norm,eps", [("l2", 0.5), ("linf", 0.03)])
def test_pgd_in_batches_equals_pgd_on_all_inputs_at_once(conv_model, norm, eps):
    x = torch.rand(13, 3, 8, 8, generator=generator(1))
    y = torch.randint(0, 4, (13,), generator=generator(2))
    whole = pgd_attack(conv_model, x, y, eps, norm, steps=5, restarts=1, gen=example_generators(3, 0, 13))
    parts = torch.cat([
        pgd_attack(conv_model, x[i : i + 5], y[i : i + 5], eps, norm, steps=5, restarts=1, gen=example_generators(3, i, len(x[i : i + 5])))
        for i in range(0, 13, 5)
    ])
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=0)
    assert not torch.allclose(whole, x)  # the attack moved the inputs
    # with one generator for the batch the starts depend on the batching: what per-example
    # generators are for
    shared = torch.cat([pgd_attack(conv_model, x[i : i + 5], y[i : i + 5], eps, norm, steps=5, gen=generator(3)) for i in range(0, 13, 5)])
    assert not torch.allclose(shared, pgd_attack(conv_model, x, y, eps, norm, steps=5, gen=generator(3)), atol=1e-4)


class _Extractor(torch.nn.Module):
    """g = the conv net up to its penultimate layer, h = W g + b: the transfer module's model."""

    def __init__(self, net):
        super().__init__()
        self.body, self.head = net[:-1], net[-1]

    def forward_features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def test_transfer_attacks_in_batches_equal_one_batch(conv_model):
    from robustlens.transfer import as_score, loss_attack_runs

    model = _Extractor(conv_model).eval()
    x = torch.rand(11, 3, 8, 8, generator=generator(4))
    y = torch.randint(0, 4, (11,), generator=generator(5))
    kw = {"eps": 0.5, "norm": "l2", "steps": 4, "restarts": 1, "seed": 9}
    score_one, per_one = as_score(model, x, batch_size=11, **kw)
    score_parts, per_parts = as_score(model, x, batch_size=4, **kw)
    np.testing.assert_allclose(per_parts, per_one, rtol=1e-5, atol=1e-6)
    assert score_parts == pytest.approx(score_one, rel=1e-6) and score_one > 0
    one = loss_attack_runs(model, x, y, "classification", batch_size=11, **kw)
    parts = loss_attack_runs(model, x, y, "classification", batch_size=3, **kw)
    for key in ("loss", "change", "change_max"):
        np.testing.assert_allclose(parts[key], one[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(parts["robust"], one["robust"])


# --------------------------------------------------------------------------- strength: known optima


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_pgd_reaches_the_closed_form_worst_case_of_a_linear_two_class_model(norm):
    """Two classes, logits W x + b: the cross-entropy of class y grows as the margin
    (w_y - w_o) . x falls, so its maximum over the eps-ball is at x - eps d / ||d||_2 (L2) or
    x - eps sign(d) (Linf), d = w_y - w_o, when the ball stays inside [0, 1]. PGD's first run
    (from x) lands there; the two restarts from random L2 starts end up to 0.02 away (the
    projection shrinks the off-axis part of a start by eps / (eps + step) per step), so the
    result must be the first run: restarts keep the best run, not the last or the worst."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).double()
    x = (0.4 + 0.2 * torch.rand(6, 1, 4, 4, generator=generator(1))).double()
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    eps = 0.25 if norm == "l2" else 0.05
    x_adv = pgd_attack(model, x, y, eps, norm, steps=40, random_init=False, restarts=2, gen=example_generators(0, 0, 6))
    w = model[1].weight.detach()
    d = (w[y] - w[1 - y]).view_as(x)
    optimum = x - eps * (d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) if norm == "l2" else d.sign())
    torch.testing.assert_close(x_adv, optimum, atol=1e-9, rtol=0)
    with torch.no_grad():
        best = F.cross_entropy(model(optimum), y, reduction="none")
        found = F.cross_entropy(model(x_adv), y, reduction="none")
    assert (found <= best + 1e-9).all() and (best - found).max() < 1e-4 * best.max()


def test_restarts_keep_each_samples_best_run():
    """An objective with two local maxima per coordinate (sin 10x in the Linf ball of 0.3
    around 0.5: the edge 0.2 and the peak 0.785): where a run ends depends on its random start.
    The result of 1 + 3 runs is, per sample, the run with the highest objective, each run
    replayed on its own from the same generator."""
    from robustlens.attacks import pgd_maximize

    def objective(x):
        return torch.sin(10 * x).flatten(1).sum(1)

    x = torch.full((40, 1, 1, 3), 0.5, dtype=torch.float64)
    kw = {"eps": 0.3, "norm": "linf", "steps": 8, "step_size": 0.05}
    result = pgd_maximize(objective, x, restarts=3, random_init=True, gen=generator(5), **kw)
    gen = generator(5)
    runs = torch.stack([objective(pgd_maximize(objective, x, restarts=0, random_init=True, gen=gen, **kw)) for _ in range(4)])
    best_run = runs.argmax(0)
    torch.testing.assert_close(objective(result), runs.max(0).values, atol=0, rtol=0)
    assert set(best_run.tolist()) == {0, 1, 2, 3}  # every run is the best somewhere: first, last, worst all differ
    assert (runs.max(0).values > runs.min(0).values + 0.05).sum() > 20


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_random_start_is_uniform_in_the_ball(norm):
    """L2: uniform in volume, so the radius over eps has CDF t^d (Beta(d, 1)) and the direction
    is isotropic; Linf: each coordinate uniform on [-eps, eps]. Kolmogorov-Smirnov at n = 4000."""
    from scipy import stats as sps

    d, eps = 3, 0.7
    starts = random_start(torch.zeros(4000, 1, 1, d, dtype=torch.float64), eps, norm, generator(11)).flatten(1).numpy()
    if norm == "l2":
        radius = np.linalg.norm(starts, axis=1) / eps
        assert sps.kstest(radius, lambda t: np.clip(t, 0, 1) ** d).pvalue > 1e-3
        assert sps.kstest(radius, "uniform").pvalue < 1e-6  # the test tells t^d from a uniform radius
        directions = starts / np.linalg.norm(starts, axis=1, keepdims=True)
        assert np.abs(directions.mean(0)).max() < 4 / np.sqrt(4000)
    else:
        for j in range(d):
            assert sps.kstest(starts[:, j], sps.uniform(loc=-eps, scale=2 * eps).cdf).pvalue > 1e-3


# --------------------------------------------------------------------------- one step, edges, defaults


def _linear_two_class():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).double()
    return model, model[1].weight.detach()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_one_pgd_step_from_x_is_one_steepest_ascent_step_of_the_given_size(norm):
    """One step of size s from x (no random start) on the two-class linear model moves x by
    -s d / ||d|| (L2) or -s sign(d) (Linf), d = w_y - w_o, when s < eps keeps it in the ball."""
    model, w = _linear_two_class()
    x = (0.4 + 0.2 * torch.rand(5, 1, 4, 4, generator=generator(2))).double()
    y = torch.tensor([0, 1, 1, 0, 1])
    eps, s = (0.3, 0.1) if norm == "l2" else (0.05, 0.02)
    x_adv = pgd_attack(model, x, y, eps, norm, steps=1, step_size=s, random_init=False)
    d = (w[y] - w[1 - y]).view_as(x)
    step = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) if norm == "l2" else d.sign()
    torch.testing.assert_close(x_adv, x - s * step, atol=1e-12, rtol=0)
    # the default step size is 2.5 eps / steps (Madry et al.): one step goes to the ball's edge
    x_default = pgd_attack(model, x, y, eps, norm, steps=1, random_init=False)
    torch.testing.assert_close(x_default, x - eps * step, atol=1e-12, rtol=0)


def test_pgd_defaults_to_the_l2_ball():
    model, _ = _linear_two_class()
    x = (0.4 + 0.2 * torch.rand(4, 1, 4, 4, generator=generator(2))).double()
    y = torch.tensor([0, 1, 1, 0])
    a = pgd_attack(model, x, y, 0.3, steps=3, random_init=False)
    torch.testing.assert_close(a, pgd_attack(model, x, y, 0.3, "l2", steps=3, random_init=False), atol=0, rtol=0)
    assert not torch.equal(a, pgd_attack(model, x, y, 0.3, "linf", steps=3, random_init=False))


def test_linf_step_leaves_coordinates_with_zero_gradient_where_they_are():
    """sign(0) = 0: a coordinate the loss does not depend on never moves."""
    model, _ = _linear_two_class()
    with torch.no_grad():
        model[1].weight[:, :4] = 0.0
    x = torch.full((3, 1, 4, 4), 0.5, dtype=torch.float64)
    x_adv = pgd_attack(model, x, torch.tensor([0, 1, 0]), 0.05, "linf", steps=5, random_init=False)
    assert torch.equal(x_adv.flatten(1)[:, :4], x.flatten(1)[:, :4])
    assert (x_adv.flatten(1)[:, 4:] - 0.5).abs().min() > 0.04


def test_pgd_clamps_to_the_image_range_at_both_ends():
    """Pixels at 0 pushed down and pixels at 1 pushed up stay at 0 and 1: the worst case of the
    linear model in the L-inf ball intersected with [0, 1] is x - eps sign(d), clamped."""
    model, w = _linear_two_class()
    x = torch.rand(6, 1, 4, 4, generator=generator(4)).double().round()  # pixels at 0 or 1
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    x_adv = pgd_attack(model, x, y, 0.1, "linf", steps=10, random_init=False)
    d = (w[y] - w[1 - y]).view_as(x)
    torch.testing.assert_close(x_adv, (x - 0.1 * d.sign()).clamp(0, 1), atol=1e-12, rtol=0)


def test_one_restart_without_random_init_starts_its_second_run_at_random():
    """``random_init=False, restarts=1``: run 0 from x, run 1 from a random start; the result is
    per sample the better of the two, each replayed on its own."""
    from robustlens.attacks import pgd_maximize

    def objective(x):  # peaks near 0.16 (height 0.16) and 0.79 (0.79); x = 0.4 climbs to the low one
        return (x * torch.sin(10 * x)).flatten(1).sum(1)

    x = torch.full((40, 1, 1, 3), 0.4, dtype=torch.float64)
    kw = {"eps": 0.4, "norm": "linf", "steps": 8, "step_size": 0.06}
    result = pgd_maximize(objective, x, restarts=1, random_init=False, gen=generator(5), **kw)
    from_x = objective(pgd_maximize(objective, x, random_init=False, **kw))
    from_random = objective(pgd_maximize(objective, x, random_init=True, gen=generator(5), **kw))
    torch.testing.assert_close(objective(result), torch.maximum(from_x, from_random), atol=0, rtol=0)
    assert (from_random > from_x).any()


def test_zero_steps_or_zero_eps_return_the_inputs():
    model, _ = _linear_two_class()
    x = torch.rand(2, 1, 4, 4, generator=generator(4)).double()
    y = torch.tensor([0, 1])
    assert torch.equal(pgd_attack(model, x, y, 0.0, steps=5, gen=generator(0)), x)
    assert torch.equal(pgd_attack(model, x, y, 0.3, steps=0, gen=generator(0)), x)


def test_bad_norm_error_and_generator_count_are_named():
    with pytest.raises(ValueError, match="norm must be one of.*'l1'"):
        project(torch.zeros(2, 3), 1.0, "l1")
    with pytest.raises(ValueError, match="2 per-example generators for 3 inputs"):
        random_start(torch.zeros(3, 4), 1.0, "l2", example_generators(0, 0, 2))


def test_regression_errors_against_their_formulas():
    from robustlens.attacks import regression_error

    h = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0, 0.5], [1.0, -1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(regression_error(h, y), torch.tensor([10 / 3, 6 / 3], dtype=torch.float64))
    torch.testing.assert_close(regression_error(h, y, "max_abs"), torch.tensor([3.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(regression_error(h[:, :1], y[:, 0], "max_abs"), torch.tensor([1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="error must be one of.*'abs'"):
        regression_error(h, y, "abs")


def test_pgd_defaults_are_l2_ten_steps_random_start_no_restart():
    from robustlens.attacks import pgd_maximize

    def objective(x):
        return (x * torch.sin(10 * x)).flatten(1).sum(1)

    x = torch.full((4, 1, 1, 3), 0.4, dtype=torch.float64)
    explicit = pgd_maximize(objective, x, 0.3, "l2", 10, None, True, 0, generator(2))
    torch.testing.assert_close(pgd_maximize(objective, x, 0.3, gen=generator(2)), explicit, atol=0, rtol=0)
    model, _ = _linear_two_class()
    x, y = torch.rand(4, 1, 4, 4, generator=generator(3)).double(), torch.tensor([0, 1, 1, 0])
    explicit = pgd_attack(model, x, y, 0.3, "l2", 10, None, True, 0, generator(2))
    torch.testing.assert_close(pgd_attack(model, x, y, 0.3, gen=generator(2)), explicit, atol=0, rtol=0)


def test_default_step_size_is_two_and_a_half_eps_over_steps():
    """On an objective where the step size decides which peak PGD ends on, the default equals
    step_size = 2.5 eps / steps and differs from nearby step sizes."""
    from robustlens.attacks import pgd_maximize

    def objective(x):
        return torch.sin(25 * x).flatten(1).sum(1)

    x = torch.linspace(0.2, 0.8, 30, dtype=torch.float64).view(30, 1, 1, 1)
    kw = {"eps": 0.3, "norm": "linf", "steps": 4, "random_init": False}
    default = pgd_maximize(objective, x, **kw)
    torch.testing.assert_close(default, pgd_maximize(objective, x, step_size=2.5 * 0.3 / 4, **kw), atol=0, rtol=0)
    for other in (3.5 * 0.3 / 4, 2.5 * 0.3 / 5, 2.5 * 0.3 * 4):
        assert not torch.equal(default, pgd_maximize(objective, x, step_size=other, **kw))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_one_step_from_a_random_start_replayed_by_hand(norm):
    """x0 = clip(x + start), x1 = clip(x + proj(x0 + s * ascent - x)) with the start drawn from
    the same generator; pixels at 0 and 1, so both clips act."""
    model, w = _linear_two_class()
    x = torch.rand(6, 1, 4, 4, generator=generator(4)).double().round()
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    eps, s = (0.5, 0.2) if norm == "l2" else (0.1, 0.03)
    x_adv = pgd_attack(model, x, y, eps, norm, steps=1, step_size=s, random_init=True, gen=generator(9))
    start = random_start(x, eps, norm, generator(9))
    x0 = (x + start).clamp(0, 1)
    d = (w[y] - w[1 - y]).view_as(x)
    ascent = -d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) if norm == "l2" else -d.sign()
    torch.testing.assert_close(x_adv, (x + project(x0 + s * ascent - x, eps, norm)).clamp(0, 1), atol=1e-12, rtol=0)


@pytest.mark.parametrize("per_example", [False, True])
def test_random_starts_have_the_inputs_dtype(per_example):
    x = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    for norm in ("l2", "linf"):
        gen = example_generators(0, 0, 3) if per_example else generator(0)
        start = random_start(x, 0.5, norm, gen)
        assert start.dtype == torch.float64 and start.shape == x.shape
        assert start.float().double().ne(start).any()  # drawn in float64, not float32 widened


def test_ties_keep_the_first_run():
    """A flat objective (zero gradient): every run stays at its start and ties; with
    random_init=False the first run starts at x, so the clean input is returned, not noise."""
    from robustlens.attacks import pgd_maximize

    x = torch.full((3, 1, 2, 2), 0.5, dtype=torch.float64)
    out = pgd_maximize(lambda z: 0 * z.flatten(1).sum(1), x, 0.2, "l2", steps=2, random_init=False, restarts=2, gen=generator(0))
    assert torch.equal(out, x)


def test_use_best_returns_the_iterate_with_the_highest_objective_of_each_run():
    """Without a random start, a k-step run with a fixed step size is the first k steps of a
    longer one, so the iterates of a T-step run are the results of runs with k = 0..T steps.
    An objective whose PGD path overshoots (a large step on a concave objective) has its
    best iterate inside the path; use_best must return, per sample, the iterate of highest
    objective among x_0..x_T (the robustness library's ``use_best``, T + 1 candidates), and
    without use_best the last one."""
    torch.manual_seed(0)
    x = torch.rand(6, 1, 4, 4) * 0.5 + 0.25
    centre = x + 0.05 * torch.randn_like(x)

    def objective(z):
        return -((z - centre) ** 2).flatten(1).sum(1)

    eps, steps, step = 0.6, 5, 0.35
    iterates = [pgd_maximize(objective, x, eps, "l2", steps=k, step_size=step, random_init=False) if k else x.clone()
                for k in range(steps + 1)]
    values = torch.stack([objective(z) for z in iterates])  # (T + 1, n)
    best = values.argmax(0)
    assert len(set(best.tolist())) > 1 or 0 < best[0] < steps  # the best is not always the last iterate
    expected = torch.stack([iterates[k][i] for i, k in enumerate(best.tolist())])
    got = pgd_maximize(objective, x, eps, "l2", steps=steps, step_size=step, random_init=False, use_best=True)
    assert torch.allclose(got, expected, atol=1e-6)
    last = pgd_maximize(objective, x, eps, "l2", steps=steps, step_size=step, random_init=False)
    assert torch.allclose(last, iterates[-1], atol=1e-6)
    assert (best < steps).any() and not torch.allclose(got, last)
