"""Adversarial attacks: projected gradient descent (Madry et al. 2018) under L2 and Linf.

Images live in [0, 1]; every perturbed input is clamped to that range. Randomness comes from
an explicit ``torch.Generator`` so attacks are reproducible for a seed: either one generator for
the whole batch (its random starts then depend on which examples share the batch), or one
generator per example (:func:`example_generators`), so that an attack run in batches of any
size gives the same images as one run on all inputs at once (up to float rounding).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

NORMS = ("l2", "linf")


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project perturbations onto the ``norm`` ball of radius ``eps`` around zero."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        return delta * (eps / _flat_norm(delta)).clamp(max=1.0)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def example_seed(seed: int, index: int) -> int:
    """The seed of example ``index`` of an attack seeded with ``seed``: a 32-bit hash of the pair
    (numpy's ``SeedSequence``; torch's CPU generator keeps 32 bits of a seed)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def example_generators(seed: int, start: int, n: int) -> list[torch.Generator]:
    """One CPU generator per example for examples ``start, ..., start + n - 1`` of the inputs an
    attack runs over (their index in the whole probe, not in a batch), each seeded with
    :func:`example_seed`. An example's random starts then depend on the seed and its index alone,
    never on the batch it falls in, nor on the device (they are drawn on the CPU)."""
    return [torch.Generator().manual_seed(example_seed(seed, i)) for i in range(start, start + n)]


def random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator | Sequence[torch.Generator]) -> torch.Tensor:
    """A uniform sample from the ``norm`` ball of radius ``eps`` (L2: uniform in volume). ``gen``:
    one generator for the batch, or a sequence of per-example generators (one per row of ``x``,
    from :func:`example_generators`; drawn on the CPU, then moved to ``x``'s device)."""
    if isinstance(gen, (list, tuple)):
        if len(gen) != len(x):
            raise ValueError(f"{len(gen)} per-example generators for {len(x)} inputs")
        one = torch.empty((1, *x.shape[1:]), dtype=x.dtype)
        return torch.cat([random_start(one, eps, norm, g) for g in gen]).to(x.device)
    if norm == "linf":
        return (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    direction = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    direction = direction / _flat_norm(direction)
    d = x[0].numel()
    radius = torch.rand((x.shape[0],), generator=gen, device=x.device, dtype=x.dtype) ** (1.0 / d)
    return direction * (eps * radius).view(-1, *([1] * (x.dim() - 1)))


def ascent_step(grad: torch.Tensor, step_size: float, norm: str) -> torch.Tensor:
    """Steepest-ascent step of length ``step_size`` for the norm: sign (Linf) or unit (L2)."""
    if norm == "linf":
        return step_size * grad.sign()
    return step_size * grad / _flat_norm(grad)


def pgd_maximize(
    objective: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    norm: str = "l2",
    steps: int = 10,
    step_size: float | None = None,
    random_init: bool = True,
    restarts: int = 0,
    gen: torch.Generator | Sequence[torch.Generator] | None = None,
    use_best: bool = False,
) -> torch.Tensor:
    """Inputs in the eps-ball around ``x`` (and in [0, 1]) that maximise a per-sample objective.

    ``objective(x_adv)`` returns one value per sample. Runs ``1 + restarts`` PGD runs (each
    restart from a fresh random start) and keeps, per sample, the run with the highest final
    objective. ``use_best``: a run ends at its iterate with the highest objective (the start
    and every step's iterate compared, per sample, as the robustness library's ``use_best``)
    instead of its last one. ``step_size`` defaults to 2.5 * eps / steps (Madry et al. 2018). ``gen``: see
    :func:`random_start`; with per-example generators (and an objective that treats samples
    independently, as a model in eval mode does) the result for a sample does not depend on the
    other samples of the batch, so batching does not change it.
    """
    if eps == 0 or steps == 0:
        return x.detach().clone()
    step_size = 2.5 * eps / steps if step_size is None else step_size
    best_x, best_val = x.detach().clone(), None
    for run in range(1 + restarts):
        use_random = random_init or run > 0
        delta = random_start(x, eps, norm, gen) if use_random else torch.zeros_like(x)
        x_adv = (x + delta).clamp(0, 1).detach()
        run_x, run_val = None, None
        for _ in range(steps):
            x_adv.requires_grad_(True)
            obj = objective(x_adv)
            (grad,) = torch.autograd.grad(obj.sum(), x_adv)
            if use_best:
                run_x, run_val = _keep_better(run_x, run_val, x_adv.detach(), obj.detach())
            with torch.no_grad():
                x_adv = x_adv + ascent_step(grad, step_size, norm)
                x_adv = (x + project(x_adv - x, eps, norm)).clamp(0, 1)
            x_adv = x_adv.detach()
        with torch.no_grad():
            val = objective(x_adv)
        if use_best:
            x_adv, val = _keep_better(run_x, run_val, x_adv, val)
        best_x, best_val = _keep_better(best_x if best_val is not None else None, best_val, x_adv, val)
    return best_x


def _keep_better(best_x, best_val, x_new, val_new):
    """Per sample, the input with the higher objective (ties keep the earlier one)."""
    if best_val is None:
        return x_new, val_new
    better = val_new > best_val
    return torch.where(better.view(-1, *([1] * (x_new.dim() - 1))), x_new, best_x), torch.maximum(val_new, best_val)


def pgd_attack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *settings, **keyword_settings) -> torch.Tensor:
    """Untargeted PGD on the cross-entropy loss (Madry et al. 2018, Eq. 2's inner maximisation):
    :func:`pgd_maximize` of the per-sample loss of ``model`` on labels ``y``, with its settings
    and defaults after ``x``, by position or name (``eps, norm="l2", steps=10, step_size=None,
    random_init=True, restarts=0, gen=None, use_best=False``), defined once there."""

    def loss(x_adv: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x_adv), y, reduction="none")

    return pgd_maximize(loss, x, *settings, **keyword_settings)


#: Per-sample errors of a regression output (the losses of regression transfer tasks).
REGRESSION_ERRORS = ("squared", "max_abs")


def regression_error(outputs: torch.Tensor, targets: torch.Tensor, error: str = "squared") -> torch.Tensor:
    """Per-sample error of regression outputs (n, k) against targets (n, k) (or (n,)):
    ``squared``: mean over the k outputs of (h - y)^2 (the MSE); ``max_abs``: max_i |h_i - y_i|,
    1-Lipschitz in the max norm of the outputs (|h - y| for a scalar output)."""
    diff = outputs.reshape(len(outputs), -1) - targets.reshape(len(targets), -1)
    if error == "squared":
        return diff.pow(2).mean(dim=1)
    if error == "max_abs":
        return diff.abs().amax(dim=1)
    raise ValueError(f"error must be one of {REGRESSION_ERRORS}, got {error!r}")

