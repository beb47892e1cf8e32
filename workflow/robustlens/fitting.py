"""The one minibatch SGD loop of robustlens: adversarial training (:mod:`robustlens.train`),
classifier-head retraining (:mod:`robustlens.heads`) and transfer's LP, FT and LP-FT
(:mod:`robustlens.transfer`) all fit through :func:`fit`.

Each caller says what one step computes (``batch_loss(idx)``: the loss of the samples ``idx``,
after whatever attack or augmentation it applies); the loop owns the batch order (a seeded
permutation per epoch), the optimiser and schedule, the non-finite check, per-epoch history and
resumable state (:class:`Resume`: model, optimiser, schedule, generators and history saved every
few minutes and after the last epoch, so a killed job continues from its last saved epoch, or
skips a finished fit, and ends bit-identical to an uninterrupted run on the same device).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from robustlens.momentum_sgd import MomentumSGD

#: Learning-rate schedules. ``onecycle``: OneCycleLR with cosine annealing (warm-up fraction
#: ``warmup``), stepped every batch; like torch's default it also cycles the momentum between
#: 0.95 and 0.85, overriding the optimiser's (the default study's recipe since it was built); ``cosine``: cosine annealing to 0 over all batches;
#: ``cosine_epoch``: cosine annealing stepped once per epoch; ``step``: the learning rate times
#: ``gamma`` every ``step_epochs`` epochs (the robustness library's ``step_lr``).
SCHEDULES = ("onecycle", "cosine", "cosine_epoch", "step")


#: When features are standardised for fitting a head, a unit whose standard deviation is below
#: this fraction of the largest unit's is divided by that fraction instead. A nearly constant
#: unit would otherwise be amplified without bound and its weight, folded back to raw features,
#: explode: a default-study LP head reached |w| = 765 on a unit of std 5e-5, and LP-FT from it
#: diverged to NaN. A unit constant over the split is divided by 1 (its standardised value is 0
#: whatever the divisor, so its weight is only the initial one, decayed).
STD_FLOOR = 0.01


def standardising_scale(std):
    """The divisor of each feature when standardising (a numpy array or a torch tensor of
    standard deviations): its standard deviation, at least STD_FLOOR times the largest one;
    1 for a feature that is constant (std 0)."""
    floor = STD_FLOOR * std.max()
    return (std > 0) * std.clip(min=floor) + (std <= 0) * 1.0


class NonFiniteLossError(FloatingPointError):
    """The loss of a fit became NaN or Inf."""


def batch_order(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """The index batches of one epoch: a permutation of ``range(n)`` drawn from ``gen`` (on the
    CPU), cut into consecutive batches of ``batch_size`` (the last one shorter)."""
    order = torch.randperm(n, generator=gen)
    return [order[start : start + batch_size] for start in range(0, n, batch_size)]


def sgd(params, *, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False) -> MomentumSGD:
    """SGD with momentum and (L2, coupled) weight decay, as every fit here uses: torch.optim.SGD's
    update bit for bit, without the ~1 s import of torch._dynamo that torch's optimiser methods
    trigger (:class:`robustlens.momentum_sgd.MomentumSGD`; its state dict has torch's format)."""
    return MomentumSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def lr_schedule(opt: torch.optim.Optimizer, schedule: dict, *, epochs: int, steps_per_epoch: int):
    """The scheduler for ``schedule`` (``{"kind": one of SCHEDULES, ...}``) and whether it is
    stepped after every batch (True) or every epoch (False)."""
    kind = schedule["kind"]
    if kind == "onecycle":
        lr = opt.param_groups[0]["lr"]
        total = epochs * steps_per_epoch
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=total, pct_start=schedule.get("warmup", 0.2), anneal_strategy="cos"
        ), True
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch)), True
    if kind == "cosine_epoch":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs), False
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=int(schedule["step_epochs"]), gamma=schedule["gamma"]), False
    raise ValueError(f"schedule kind must be one of {SCHEDULES}, got {kind!r}")


class Resume:
    """Resumable state of one fit in ``path`` (a file outside the job's declared outputs).

    ``fingerprint``: what the state belongs to (settings, data); a state written for another
    fingerprint is ignored, never loaded. The state is written through a temporary file and a
    rename, so a job killed while saving leaves the previous state, and at most every
    ``every_s`` seconds (0: after every epoch). :meth:`clear` removes it once the job's outputs
    are written."""

    def __init__(self, path: str | os.PathLike, fingerprint: dict, every_s: float = 600.0):
        self.path = Path(path)
        self.key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
        self.every_s = float(every_s)
        self._last = time.monotonic()

    def load(self) -> dict | None:
        """The saved state, or None when there is none for this fingerprint."""
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != self.key:
            print(f"resume: {self.path} belongs to other settings; starting afresh")
            return None
        return state

    def save(self, state: dict, force: bool = False) -> bool:
        """Write ``state`` if ``every_s`` has passed since the last write (or ``force``)."""
        if not force and time.monotonic() - self._last < self.every_s:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save({**state, "fingerprint": self.key}, tmp)
        os.replace(tmp, self.path)
        self._last = time.monotonic()
        return True

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def fit(
    modules: Sequence[torch.nn.Module],
    params,
    n: int,
    batch_loss: Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, int]"],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    schedule: dict,
    gen: torch.Generator,
    generators: Sequence[torch.Generator] = (),
    name: str = "fit",
    carry: dict | None = None,
    on_epoch_end: Callable[[int], dict] | None = None,
    on_epoch_start: Callable[[list[torch.Tensor]], None] | None = None,
    resume: Resume | None = None,
    progress: bool = False,
) -> list[dict]:
    """Minimise the mean of ``batch_loss`` over ``n`` samples by minibatch SGD.

    Each epoch draws a batch order from ``gen`` (:func:`batch_order`); each step calls
    ``batch_loss(idx)`` (a CPU index tensor; the loss, or (loss, number of correct predictions)),
    back-propagates and steps the optimiser (and a per-batch schedule; a per-epoch schedule steps
    after the epoch). ``on_epoch_end(epoch)`` (1-based) may add entries (validation accuracy, ...)
    to the epoch's history row, which also has the mean loss, the learning rate the epoch started
    with and, when counts are returned, the training accuracy. ``on_epoch_start(order)`` is
    given the epoch's batch order before its first step (a streamed split reads ahead by it).

    ``modules``: what is saved for resuming (their state dicts) besides the optimiser, the
    schedule, ``gen``, the ``generators`` the loss draws from and ``carry`` (a dict the caller
    keeps across epochs, e.g. the best checkpoint so far; restored in place on resuming).
    Raises :class:`NonFiniteLossError` ("``name`` loss is nan at epoch e, step s") when a loss
    is NaN or Inf.
    """
    steps_per_epoch = math.ceil(n / batch_size)
    opt = sgd(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    sched, per_step = lr_schedule(opt, schedule, epochs=epochs, steps_per_epoch=steps_per_epoch)
    gens = [gen, *generators]
    history: list[dict] = []
    start = 0
    state = resume.load() if resume is not None else None
    if state is not None:
        for module, saved in zip(modules, state["modules"]):
            module.load_state_dict(saved)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        for g, saved in zip(gens, state["generators"]):
            g.set_state(saved)
        history, start = state["history"], state["epoch"]
        if carry is not None:
            carry.clear()
            carry.update(state["carry"])
        print(f"resume: {name} continues after epoch {start} of {epochs} from {resume.path}")
    bar = tqdm(range(start, epochs), desc=name, disable=not progress, mininterval=1.0, initial=start, total=epochs)
    for epoch in bar:
        epoch_lr = opt.param_groups[0]["lr"]
        total_loss, correct, counted, seen = 0.0, 0, False, 0
        order = batch_order(n, batch_size, gen)
        if on_epoch_start is not None:
            on_epoch_start(order)
        for step, idx in enumerate(order):
            out = batch_loss(idx)
            loss, n_correct = out if isinstance(out, tuple) else (out, None)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"{name} loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_step:
                sched.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
            if n_correct is not None:
                correct, counted = correct + int(n_correct), True
        if not per_step:
            sched.step()
        row = {"epoch": epoch + 1, "lr": epoch_lr, "loss": total_loss / seen}
        if counted:
            row["train_accuracy"] = correct / seen
        if on_epoch_end is not None:
            row.update(on_epoch_end(epoch + 1))
        history.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k not in ("epoch", "lr")})
        if resume is not None:  # the last epoch's state always: a job killed after the fit skips it
            resume.save({
                "modules": [m.state_dict() for m in modules],
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "generators": [g.get_state() for g in gens],
                "history": history,
                "carry": carry,
                "epoch": epoch + 1,
            }, force=epoch + 1 == epochs)
    return history
