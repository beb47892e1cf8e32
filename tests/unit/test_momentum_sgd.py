"""MomentumSGD (robustlens.momentum_sgd) against torch.optim.SGD, bit for bit.

The same model (a convolution, two linear layers, a float64 parameter and one the loss never
uses) and the same gradients are stepped by both optimisers under every schedule of
robustlens.fitting, with and without Nesterov momentum and weight decay, on the single-tensor
and the foreach path: parameters, momentum buffers and the scheduled learning rate and momentum
must be equal after every step. Saved states (of either optimiser) resume bit-identically, and a
fit leaves torch._dynamo unimported, the reason MomentumSGD exists.
"""

import io
import os
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import robustlens
from robustlens.fitting import SCHEDULES, lr_schedule
from robustlens.momentum_sgd import MomentumSGD

EPOCHS, STEPS = 3, 3
#: One schedule of each kind of fitting.SCHEDULES (a per-epoch StepLR that decays every epoch).
SCHEDULE_OF = {
    "onecycle": {"kind": "onecycle"},
    "cosine": {"kind": "cosine"},
    "cosine_epoch": {"kind": "cosine_epoch"},
    "step": {"kind": "step", "step_epochs": 1, "gamma": 0.5},
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class _Net(torch.nn.Module):
    """Conv, ReLU, two linear layers, a float64 scale (a second dtype for the foreach path's
    grouping) and a parameter the loss never uses (its gradient stays None: not stepped)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc1 = torch.nn.Linear(2 * 4 * 4, 5)
        self.fc2 = torch.nn.Linear(5, 3)
        self.scale = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        self.unused = torch.nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1)))) * self.scale


def _batches(device="cpu"):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 1, 6, 6, generator=gen).to(device), torch.randint(0, 3, (4,), generator=gen).to(device))
            for _ in range(EPOCHS * STEPS)]


def _net(device="cpu"):
    """A fresh _Net, always with the same initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _Net().to(device)


def _run(optimizer, kind, device="cpu", **hyper):
    """A fresh model, its optimiser and fitting's schedule."""
    model = _net(device)
    opt = optimizer(model.parameters(), **{"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False, **hyper})
    sched, per_step = lr_schedule(opt, SCHEDULE_OF[kind], epochs=EPOCHS, steps_per_epoch=STEPS)
    return model, opt, sched, per_step


def _backward(run, x, y):
    model, opt, _, _ = run
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def _step(run, t):
    """Step the optimiser after batch ``t`` (0-based over the fit), and the schedule as fit does."""
    _, opt, sched, per_step = run
    opt.step()
    if per_step or (t + 1) % STEPS == 0:
        sched.step()


def _assert_same(run, ref):
    (model, opt, _, _), (ref_model, ref_opt, _, _) = run, ref
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        assert torch.equal(p, q), name
    state, ref_state = opt.state_dict(), ref_opt.state_dict()
    assert state["state"].keys() == ref_state["state"].keys()
    for i, values in ref_state["state"].items():
        assert torch.equal(state["state"][i]["momentum_buffer"], values["momentum_buffer"]), i
    group, ref_group = opt.param_groups[0], ref_opt.param_groups[0]
    common = (group.keys() & ref_group.keys()) - {"params"}
    assert {"lr", "momentum", "initial_lr"} <= common
    assert {k: group[k] for k in common} == {k: ref_group[k] for k in common}


def _train(run, batches, start=0):
    for t, (x, y) in enumerate(batches, start):
        _backward(run, x, y)
        _step(run, t)


def _lockstep(run, ref, device="cpu"):
    """Step ``run`` and ``ref`` with the same gradients (``run``'s, copied: bit-identical even
    where a backward pass is not deterministic) through all batches, comparing every step."""
    _assert_same(run, ref)
    for t, (x, y) in enumerate(_batches(device)):
        _backward(run, x, y)
        for p, q in zip(run[0].parameters(), ref[0].parameters()):
            q.grad = None if p.grad is None else p.grad.clone()
        assert run[0].unused.grad is None
        _step(run, t)
        _step(ref, t)
        _assert_same(run, ref)
    assert len(ref[1].state_dict()["state"]) == 7  # every parameter but the unused one was stepped
    assert not torch.equal(run[0].fc1.weight, _net(device).fc1.weight)  # the steps moved the weights


def test_the_schedules_cover_fitting():
    assert set(SCHEDULE_OF) == set(SCHEDULES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("foreach", [None, True], ids=["default", "foreach"])
@pytest.mark.parametrize("weight_decay", [0.0, 5e-3], ids=["no_decay", "decay"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
@pytest.mark.parametrize("kind", SCHEDULES)
def test_steps_are_torch_sgd_bit_for_bit(kind, nesterov, weight_decay, foreach, device):
    # None is torch's default (foreach on CUDA, the single-tensor loop on the CPU); True takes the
    # torch._foreach_* path on the CPU too. Both optimisers are given the same gradients.
    hyper = dict(weight_decay=weight_decay, nesterov=nesterov, foreach=foreach)
    _lockstep(_run(MomentumSGD, kind, device, **hyper), _run(torch.optim.SGD, kind, device, **hyper), device)


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_dampening_is_torch_sgds(foreach):
    # fits never damp, but a loaded torch.optim.SGD state may: its dampening is honoured
    run, ref = _run(MomentumSGD, "cosine", foreach=foreach), _run(torch.optim.SGD, "cosine", foreach=foreach)
    run[1].param_groups[0]["dampening"] = ref[1].param_groups[0]["dampening"] = 0.25
    _lockstep(run, ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("foreach", [None, False, True], ids=["default", "single", "foreach"])
def test_the_foreach_path_is_taken_where_torch_takes_it(foreach, device, monkeypatch):
    # both paths give equal results on the CPU, so which one ran is read off torch._foreach_add_
    # (by default: on CUDA, not on the CPU)
    calls = []
    foreach_add_ = torch._foreach_add_
    monkeypatch.setattr(torch, "_foreach_add_", lambda *args, **kwargs: calls.append(1) or foreach_add_(*args, **kwargs))
    used = []
    for optimizer in (MomentumSGD, torch.optim.SGD):
        calls.clear()
        run = _run(optimizer, "cosine", device, foreach=foreach)
        _backward(run, *_batches(device)[0])
        run[1].step()
        used.append(bool(calls))
    assert used[0] == used[1] == (foreach or (foreach is None and device == "cuda"))


def test_zero_grad_is_torchs():
    model, opt, _, _ = _run(MomentumSGD, "cosine")
    x, y = _batches()[0]
    _backward((model, opt, None, None), x, y)
    opt.zero_grad(set_to_none=False)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for name, p in model.named_parameters() if name != "unused")
    assert model.unused.grad is None
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("source", [MomentumSGD, torch.optim.SGD], ids=["momentum_sgd", "torch_sgd"])
@pytest.mark.parametrize("kind", SCHEDULES)
def test_a_saved_state_resumes_bit_identical(kind, source):
    # k = 4 steps (mid-epoch), saved as fit saves (torch.save, loaded to the CPU), then continued
    # by a fresh model, MomentumSGD and schedule; a torch.optim.SGD state (old resume files) too
    hyper = dict(weight_decay=5e-3, nesterov=True)
    batches = _batches()
    whole = _run(MomentumSGD, kind, **hyper)
    _train(whole, batches)
    first = _run(source, kind, **hyper)
    _train(first, batches[:4])
    buffer = io.BytesIO()
    torch.save({"model": first[0].state_dict(), "optimizer": first[1].state_dict(), "scheduler": first[2].state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, map_location="cpu", weights_only=False)
    resumed = _run(MomentumSGD, kind, **hyper)
    resumed[0].load_state_dict(saved["model"])
    resumed[1].load_state_dict(saved["optimizer"])
    resumed[2].load_state_dict(saved["scheduler"])
    _train(resumed, batches[4:], start=4)
    _assert_same(resumed, whole)


def test_a_momentum_sgd_state_loads_into_torch_sgd():
    run, ref = _run(MomentumSGD, "onecycle"), _run(torch.optim.SGD, "onecycle")
    _train(run, _batches()[:2])
    ref[0].load_state_dict(run[0].state_dict())
    ref[1].load_state_dict(deepcopy(run[1].state_dict()))
    ref[2].load_state_dict(run[2].state_dict())
    _assert_same(run, ref)


def test_a_state_of_other_parameters_or_settings_is_refused():
    run = _run(MomentumSGD, "cosine")
    _train(run, _batches()[:1])
    state = run[1].state_dict()
    other = MomentumSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False)
    with pytest.raises(ValueError, match=r"optimiser state of \[8\] parameters"):
        other.load_state_dict(state)
    state["param_groups"][0]["maximize"] = True
    with pytest.raises(ValueError, match="maximize"):
        _run(MomentumSGD, "cosine")[1].load_state_dict(state)


_FIT = """
import sys, torch
from robustlens.fitting import Resume, fit
torch.manual_seed(0)
model, x, y = torch.nn.Linear(3, 2), torch.randn(10, 3), torch.randint(0, 2, (10,))
for _ in range(2):  # the second fit loads the first's saved state (and skips the finished fit)
    history = fit([model], model.parameters(), 10, lambda idx: torch.nn.functional.cross_entropy(model(x[idx]), y[idx]),
                  epochs=2, batch_size=4, lr=0.1, weight_decay=1e-3, schedule={"kind": "onecycle"},
                  gen=torch.Generator().manual_seed(0), resume=Resume(sys.argv[1], {}, every_s=0))
print(len(history), "torch._dynamo" in sys.modules)
"""


def test_a_fit_does_not_import_torch_dynamo(tmp_path):
    """torch.optim.SGD's methods import torch._dynamo (about 1 s per job); MomentumSGD's do not."""
    package_root = str(Path(robustlens.__file__).resolve().parents[1])  # the robustlens this test imports
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", _FIT, str(tmp_path / "state.pt")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "continues after epoch 2 of 2" in run.stdout
    assert run.stdout.split()[-2:] == ["2", "False"]
