"""The shared SGD loop (robustlens.fitting) against closed forms and an independent numpy SGD.

Learning-rate schedules are compared with their formulas (the robustness library's StepLR, cosine
annealing, OneCycleLR's two cosine phases), the loop's weights with plain gradient descent and
with PyTorch's documented SGD update (momentum, coupled weight decay, Nesterov) computed in
float64 numpy, and resuming with an uninterrupted run, bit for bit.
"""

import math
import re

import numpy as np
import pytest
import torch

from robustlens.fitting import SCHEDULES, NonFiniteLossError, Resume, batch_order, fit, lr_schedule, sgd

# ---------------------------------------------------------------- lr_schedule


def _lrs(schedule, *, lr, epochs, steps_per_epoch):
    """The learning rate at each scheduler step (before the step), after the last step, and
    whether the schedule is stepped per batch."""
    opt = sgd([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched, per_step = lr_schedule(opt, schedule, epochs=epochs, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(epochs * steps_per_epoch if per_step else epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, opt.param_groups[0]["lr"], per_step


def test_step_schedule_is_robustness_step_lr():
    # the robustness library's step_lr: lr * gamma ** (epoch // step_lr), stepped per epoch
    lrs, _, per_step = _lrs({"kind": "step", "step_epochs": 50, "gamma": 0.1}, lr=0.1, epochs=150, steps_per_epoch=7)
    assert per_step is False
    np.testing.assert_allclose(lrs, [0.1 * 0.1 ** (e // 50) for e in range(150)], rtol=1e-12)
    for epoch, expected in [(0, 0.1), (49, 0.1), (50, 0.01), (99, 0.01), (100, 0.001), (149, 0.001)]:
        assert lrs[epoch] == pytest.approx(expected, rel=1e-12)
    lrs, _, _ = _lrs({"kind": "step", "step_epochs": 3, "gamma": 0.5}, lr=0.2, epochs=10, steps_per_epoch=2)
    np.testing.assert_allclose(lrs, [0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025], rtol=1e-12)


def test_cosine_schedules_are_cosine_annealing_to_zero():
    lr, epochs, spe = 0.3, 4, 5
    lrs, last, per_step = _lrs({"kind": "cosine"}, lr=lr, epochs=epochs, steps_per_epoch=spe)
    total = epochs * spe
    assert per_step is True
    np.testing.assert_allclose(lrs, [lr * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total)], rtol=1e-10)
    assert abs(last) < 1e-12
    lrs, last, per_step = _lrs({"kind": "cosine_epoch"}, lr=lr, epochs=7, steps_per_epoch=spe)
    assert per_step is False
    np.testing.assert_allclose(lrs, [lr * (1 + math.cos(math.pi * e / 7)) / 2 for e in range(7)], rtol=1e-10)
    assert abs(last) < 1e-12


@pytest.mark.parametrize("warmup", [None, 0.3])
def test_onecycle_is_two_cosine_phases(warmup):
    # OneCycleLR (Smith & Topin 2019) with cosine annealing: from max_lr / 25 up to max_lr at
    # step pct * total - 1, then down to max_lr / 25 / 1e4 at the last step
    lr, epochs, spe = 0.4, 5, 8
    total = epochs * spe
    schedule = {"kind": "onecycle"} if warmup is None else {"kind": "onecycle", "warmup": warmup}
    lrs, _, per_step = _lrs(schedule, lr=lr, epochs=epochs, steps_per_epoch=spe)
    assert per_step is True
    pct = 0.2 if warmup is None else warmup
    initial, final, peak = lr / 25, lr / 25 / 1e4, pct * total - 1

    def expected(t):
        if t <= peak:
            return initial + (lr - initial) * (1 - math.cos(math.pi * t / peak)) / 2
        return final + (lr - final) * (1 + math.cos(math.pi * (t - peak) / (total - 1 - peak))) / 2

    np.testing.assert_allclose(lrs, [expected(t) for t in range(total)], rtol=1e-9)
    assert lrs[0] == pytest.approx(initial) and lrs[round(pct * total) - 1] == pytest.approx(lr)
    assert lrs[-1] == pytest.approx(final) and max(lrs) == pytest.approx(lr)


def test_unknown_schedule_kind():
    opt = sgd([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError) as err:
        lr_schedule(opt, {"kind": "linear"}, epochs=2, steps_per_epoch=3)
    assert "linear" in str(err.value)
    assert all(kind in str(err.value) for kind in ("onecycle", "cosine", "cosine_epoch", "step"))
    assert SCHEDULES == ("onecycle", "cosine", "cosine_epoch", "step")


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ({"kind": "cosine"}, lambda t, e: 0.2 * (1 + math.cos(math.pi * t / 12)) / 2),
        ({"kind": "cosine_epoch"}, lambda t, e: 0.2 * (1 + math.cos(math.pi * e / 3)) / 2),
        ({"kind": "step", "step_epochs": 2, "gamma": 0.25}, lambda t, e: 0.2 * 0.25 ** (e // 2)),
    ],
)
def test_fit_steps_with_the_scheduled_lr_and_weights_the_epoch_loss(schedule, expected):
    # loss = w (a float64 scalar), momentum 0: each step moves w by exactly -lr, so the
    # learning rate of every step is read off the weight trajectory. n = 10, batch 3: 4 steps
    # per epoch of sizes 3, 3, 3, 1; the epoch loss is the batch losses weighted by size.
    w = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    seen, sizes = [], []

    def batch_loss(idx):
        seen.append(w.item())
        sizes.append(len(idx))
        return w * 1.0

    history = fit([], [w], 10, batch_loss, epochs=3, batch_size=3, lr=0.2, momentum=0.0, schedule=schedule, gen=torch.Generator().manual_seed(0))
    seen.append(w.item())
    assert sizes == [3, 3, 3, 1] * 3
    used = -np.diff(seen)
    np.testing.assert_allclose(used, [expected(t, t // 4) for t in range(12)], rtol=1e-9, atol=1e-12)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for e, row in enumerate(history):
        assert row["lr"] == pytest.approx(expected(4 * e, e), rel=1e-9)  # the lr the epoch started with
        losses = np.array(seen[4 * e : 4 * e + 4])
        assert row["loss"] == pytest.approx(float((losses * [3, 3, 3, 1]).sum() / 10), rel=1e-12)
        assert set(row) == {"epoch", "lr", "loss"}  # no counts returned: no train_accuracy


# ---------------------------------------------------------------- batch_order


@pytest.mark.parametrize("n, batch_size, sizes", [(103, 10, [10] * 10 + [3]), (100, 10, [10] * 10), (5, 10, [5]), (7, 1, [1] * 7)])
def test_batch_order_is_a_permutation_in_consecutive_batches(n, batch_size, sizes):
    batches = batch_order(n, batch_size, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == sizes
    assert sorted(torch.cat(batches).tolist()) == list(range(n))


def test_batch_order_is_reproducible_and_random():
    a = torch.cat(batch_order(50, 8, torch.Generator().manual_seed(3)))
    b = torch.cat(batch_order(50, 8, torch.Generator().manual_seed(3)))
    c = torch.cat(batch_order(50, 8, torch.Generator().manual_seed(4)))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(3)
    first, second = torch.cat(batch_order(50, 8, g)), torch.cat(batch_order(50, 8, g))
    assert torch.equal(first, a) and not torch.equal(first, second)  # a new order every epoch
    # uniform: over many draws each sample lands in the first batch with probability 8 / 50
    g = torch.Generator().manual_seed(5)
    hits = np.zeros(50)
    for _ in range(2000):
        hits[batch_order(50, 8, g)[0].numpy()] += 1
    p = 8 / 50
    assert np.abs(hits - 2000 * p).max() < 5 * math.sqrt(2000 * p * (1 - p))


# ---------------------------------------------------------------- fit vs numpy


def _regression(n=20, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    w0 = rng.normal(size=d)
    return x, y, w0


def _linear(w0):
    model = torch.nn.Linear(len(w0), 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w0)[None])
    return model


def test_full_batch_fit_is_gradient_descent():
    x, y, w0 = _regression(n=24)
    model = _linear(w0)
    xt, yt = torch.tensor(x), torch.tensor(y)
    epochs, lr = 6, 0.05

    def batch_loss(idx):
        return ((model(xt[idx]).squeeze(1) - yt[idx]) ** 2).mean()

    history = fit([model], model.parameters(), 24, batch_loss, epochs=epochs, batch_size=24, lr=lr, momentum=0.0,
                  weight_decay=0.0, schedule={"kind": "cosine_epoch"}, gen=torch.Generator().manual_seed(0))
    w = w0.copy()
    for e, row in enumerate(history):
        lr_e = lr * (1 + math.cos(math.pi * e / epochs)) / 2
        r = x @ w - y
        assert row["epoch"] == e + 1
        assert row["lr"] == pytest.approx(lr_e, rel=1e-12)
        assert row["loss"] == pytest.approx(float(np.mean(r**2)), rel=1e-12)
        w = w - lr_e * (2 / len(y)) * (x.T @ r)
    np.testing.assert_allclose(model.weight.detach().numpy()[0], w, rtol=1e-12)
    assert not np.allclose(w, w0)


@pytest.mark.parametrize("nesterov", [False, True])
def test_minibatch_fit_is_pytorch_sgd_with_momentum_and_weight_decay(nesterov):
    n, batch_size, epochs, lr, mu, wd = 20, 7, 5, 0.05, 0.9, 0.01
    x, y, w0 = _regression(n=n, seed=1)
    model = _linear(w0)
    xt, yt = torch.tensor(x), torch.tensor(y)

    def batch_loss(idx):
        residual = model(xt[idx]).squeeze(1) - yt[idx]
        return (residual**2).mean(), int((residual < 0).sum())

    history = fit([model], model.parameters(), n, batch_loss, epochs=epochs, batch_size=batch_size, lr=lr, momentum=mu,
                  weight_decay=wd, nesterov=nesterov, schedule={"kind": "step", "step_epochs": 2, "gamma": 0.5},
                  gen=torch.Generator().manual_seed(11), on_epoch_end=lambda epoch: {"val": 10.0 * epoch})

    # the same batch orders, replayed from a generator seeded alike (one order per epoch)
    replay = torch.Generator().manual_seed(11)
    orders = [[b.numpy() for b in batch_order(n, batch_size, replay)] for _ in range(epochs)]
    w, buf = w0.copy(), np.zeros_like(w0)
    for e in range(epochs):
        lr_e = lr * 0.5 ** (e // 2)
        loss_sum, below = 0.0, 0
        for idx in orders[e]:
            r = x[idx] @ w - y[idx]
            loss_sum += np.mean(r**2) * len(idx)
            below += int((r < 0).sum())
            g = (2 / len(idx)) * (x[idx].T @ r) + wd * w
            buf = mu * buf + g  # torch.optim.SGD: buf = g on the first step, then mu buf + g
            w = w - lr_e * (g + mu * buf if nesterov else buf)
        row = history[e]
        assert set(row) == {"epoch", "lr", "loss", "train_accuracy", "val"}
        assert row["epoch"] == e + 1 and row["val"] == 10.0 * (e + 1)
        assert row["lr"] == pytest.approx(lr_e, rel=1e-12)
        assert row["loss"] == pytest.approx(loss_sum / n, rel=1e-10)
        assert row["train_accuracy"] == pytest.approx(below / n, abs=1e-12)
    np.testing.assert_allclose(model.weight.detach().numpy()[0], w, rtol=1e-10)
    assert all(0 < row["train_accuracy"] < 1 for row in history)  # the counts are not trivially 0 or n


def _nan_problem(k0, value):
    x, y, w0 = _regression(n=20, seed=2)
    y[k0] = value
    return _linear(w0), torch.tensor(x), torch.tensor(y)


def test_nan_loss_names_the_epoch_and_step():
    k0, batch_size = 13, 4
    model, xt, yt = _nan_problem(k0, float("nan"))
    order = batch_order(20, batch_size, torch.Generator().manual_seed(21))
    step = 1 + next(s for s, b in enumerate(order) if k0 in b.tolist())
    with pytest.raises(NonFiniteLossError) as err:
        fit([model], model.parameters(), 20, lambda idx: ((model(xt[idx]).squeeze(1) - yt[idx]) ** 2).mean(),
            epochs=3, batch_size=batch_size, lr=0.01, schedule={"kind": "cosine"}, gen=torch.Generator().manual_seed(21), name="probe")
    assert str(err.value) == f"probe loss is nan at epoch 1, step {step}"
    assert isinstance(err.value, FloatingPointError)
    assert torch.isfinite(model.weight).all()  # raised before stepping on the NaN loss


def test_inf_loss_in_a_later_epoch():
    # the loss is infinite only from the second epoch on (4 steps an epoch), for the batch with k0
    k0, batch_size = 6, 5
    model, xt, yt = _nan_problem(k0, 3.0)
    calls = []

    def batch_loss(idx):
        calls.append(1)
        loss = ((model(xt[idx]).squeeze(1) - yt[idx]) ** 2).mean()
        return loss * math.inf if len(calls) > 4 and k0 in idx.tolist() else loss

    replay = torch.Generator().manual_seed(22)
    batch_order(20, batch_size, replay)
    step = 1 + next(s for s, b in enumerate(batch_order(20, batch_size, replay)) if k0 in b.tolist())
    with pytest.raises(NonFiniteLossError, match=re.escape(f"lin loss is inf at epoch 2, step {step}")):
        fit([model], model.parameters(), 20, batch_loss, epochs=3, batch_size=batch_size, lr=0.01,
            schedule={"kind": "cosine"}, gen=torch.Generator().manual_seed(22), name="lin")
    assert len(calls) == 4 + step


# ---------------------------------------------------------------- Resume


class Killed(Exception):
    """Stands for the job being killed at the end of an epoch."""


_XR = torch.randn(30, 4, generator=torch.Generator().manual_seed(100))
_YR = torch.randn(30, 2, generator=torch.Generator().manual_seed(101))
_SCHEDULES = [{"kind": "onecycle", "warmup": 0.3}, {"kind": "step", "step_epochs": 3, "gamma": 0.5}]


def _noisy_fit(*, init_seed, schedule, carry, gen_seed=1, noise_seed=2, resume=None, kill_at=None, epochs=5):
    """A small regression whose every step adds input noise drawn from a second generator;
    ``carry`` keeps the epochs seen and the latest weights."""
    torch.manual_seed(init_seed)
    model = torch.nn.Linear(4, 2)
    gen, noise = torch.Generator().manual_seed(gen_seed), torch.Generator().manual_seed(noise_seed)

    def batch_loss(idx):
        out = model(_XR[idx] + 0.3 * torch.randn(len(idx), 4, generator=noise))
        return ((out - _YR[idx]) ** 2).mean(), int((out.argmax(1) == _YR[idx].argmax(1)).sum())

    def on_epoch_end(epoch):
        carry["seen"] = carry.get("seen", []) + [epoch]
        carry["weight"] = model.weight.detach().clone()
        if epoch == kill_at:
            raise Killed
        return {"weight_norm": float(model.weight.detach().norm())}

    history = fit([model], model.parameters(), 30, batch_loss, epochs=epochs, batch_size=8, lr=0.05, momentum=0.9,
                  weight_decay=1e-3, nesterov=True, schedule=schedule, gen=gen, generators=[noise], carry=carry,
                  on_epoch_end=on_epoch_end, resume=resume, name="noisy")
    return model, history


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("schedule", _SCHEDULES, ids=["onecycle", "step"])
def test_resumed_fit_ends_bit_identical_to_uninterrupted(schedule, tmp_path, capsys):
    ref_carry = {}
    ref_model, ref_history = _noisy_fit(init_seed=0, schedule=schedule, carry=ref_carry)
    path = tmp_path / "state" / "noisy.pt"
    fingerprint = {"lr": 0.05, "data": "xr"}

    with pytest.raises(Killed):
        _noisy_fit(init_seed=0, schedule=schedule, carry={}, resume=Resume(path, fingerprint, every_s=0), kill_at=3)
    assert sorted(p.name for p in path.parent.iterdir()) == ["noisy.pt"]  # written by rename, no .tmp left
    assert torch.load(path, weights_only=False)["epoch"] == 2  # epoch 3 was killed before its save
    capsys.readouterr()

    # a new process: other initial weights, other generator seeds, a stale carry; all restored
    carry = {"stale": True}
    resume = Resume(path, fingerprint, every_s=0)
    model, history = _noisy_fit(init_seed=99, gen_seed=7, noise_seed=8, schedule=schedule, carry=carry, resume=resume)
    assert "noisy continues after epoch 2 of 5" in capsys.readouterr().out
    assert _same_weights(model, ref_model)
    assert history == ref_history
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]
    assert set(carry) == {"seen", "weight"} and carry["seen"] == [1, 2, 3, 4, 5]
    assert torch.equal(carry["weight"], ref_carry["weight"])
    # the last epoch's state is written whatever every_s says: a job killed after the fit skips it
    assert torch.load(path, weights_only=False)["epoch"] == 5
    assert sorted(p.name for p in path.parent.iterdir()) == ["noisy.pt"]
    capsys.readouterr()
    model, history = _noisy_fit(init_seed=3, gen_seed=9, noise_seed=9, schedule=schedule, carry=carry,
                                resume=Resume(path, fingerprint, every_s=3600))
    assert "noisy continues after epoch 5 of 5" in capsys.readouterr().out
    assert _same_weights(model, ref_model) and history == ref_history
    resume.clear()
    assert not path.exists()
    resume.clear()  # clearing twice is fine
    assert not path.exists()


def test_state_of_other_settings_is_ignored(tmp_path, capsys):
    schedule = _SCHEDULES[0]
    path = tmp_path / "noisy.pt"
    with pytest.raises(Killed):
        _noisy_fit(init_seed=0, schedule=schedule, carry={}, resume=Resume(path, {"lr": 0.05, "seed": 0}, every_s=0), kill_at=3)
    # the fingerprint's key order does not matter
    assert Resume(path, {"seed": 0, "lr": 0.05}).load()["epoch"] == 2
    capsys.readouterr()

    model, history = _noisy_fit(init_seed=5, schedule=schedule, carry={}, resume=Resume(path, {"lr": 0.05, "seed": 1}, every_s=0))
    out = capsys.readouterr().out
    assert "belongs to other settings; starting afresh" in out and "continues after" not in out
    fresh_model, fresh_history = _noisy_fit(init_seed=5, schedule=schedule, carry={})
    assert _same_weights(model, fresh_model) and history == fresh_history
    # the file now holds the new settings' state
    assert Resume(path, {"lr": 0.05, "seed": 0}).load() is None
    assert Resume(path, {"lr": 0.05, "seed": 1}).load()["epoch"] == 5


def test_resume_writes_at_most_every_every_s(tmp_path):
    path = tmp_path / "noisy.pt"
    resume = Resume(path, {"k": 1}, every_s=3600)
    writes = []
    original = torch.save
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "save", lambda obj, f: (writes.append(obj["epoch"]), original(obj, f)))
        _noisy_fit(init_seed=0, schedule=_SCHEDULES[1], carry={}, resume=resume, epochs=3)
    assert writes == [3]  # an hour has not passed since the Resume was made: only the forced last epoch
    path.unlink()
    assert resume.save({"epoch": 7}) is False and not path.exists()
    assert resume.save({"epoch": 7}, force=True) is True
    assert Resume(path, {"k": 1}).load()["epoch"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noisy.pt"]


def test_standardising_scale_floors_nearly_constant_features():
    """Standard deviations below 1 % of the largest are raised to it (numpy and torch alike);
    constant features (std 0) are divided by 1."""
    from robustlens.fitting import STD_FLOOR, standardising_scale

    std = np.array([2.0, 0.5, 1e-5, 0.0])
    expected = np.array([2.0, 0.5, 2.0 * STD_FLOOR, 1.0])
    np.testing.assert_array_equal(standardising_scale(std), expected)
    np.testing.assert_array_equal(standardising_scale(torch.as_tensor(std)).numpy(), expected)
    np.testing.assert_array_equal(standardising_scale(np.zeros(3)), np.ones(3))
    assert STD_FLOOR == 0.01


def test_a_head_on_a_nearly_constant_feature_keeps_a_bounded_weight():
    """A unit of std 1e-5 beside informative ones: the LP head's folded weight on it stays
    within (its standardised weight) / (1 % of the largest std), not / 1e-5 (the default study's
    LP-FT diverged on such a unit), and fine-tuning from that head stays finite."""
    from robustlens.head_training import fit_linear_head
    from robustlens.transfer import fit_head

    rng = np.random.default_rng(0)
    informative = rng.normal(size=(400, 2))
    labels = (informative[:, 0] > 0).astype(np.int64)
    tiny = 1e-5 * rng.normal(size=(400, 1)) + 1e-5 * labels[:, None]  # tiny but predictive
    features = np.hstack([informative, tiny]).astype(np.float32)
    w, _ = fit_linear_head(features, labels, 2, seed=0, epochs=30, lr=0.5, weight_decay=0.0, batch_size=32)
    assert np.abs(w[:, 2]).max() < 100 * np.abs(w[:, :2]).max()
    head = fit_head(torch.as_tensor(features), torch.as_tensor(labels), "classification", 2, epochs=30, lr=0.5,
                    weight_decay=0.0, batch_size=32, seed=0)
    assert head.weight[:, 2].abs().max() < 100 * head.weight[:, :2].abs().max()
