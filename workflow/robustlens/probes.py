"""Probe images made per model: adversarial examples and inverted representations.

Both models of a compared pair must see the same inputs, so a probe made by a *source* model is
evaluated on every *target* model it is compared with (stores keyed by probe, source, target).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from robustlens.attacks import example_generators, pgd_attack
from robustlens.train import predict


def adversarial_probe(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    norm: str,
    eps: float,
    steps: int,
    step_size: float | None,
    random_start: bool,
    seed: int,
    device: torch.device,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "attack",
) -> dict:
    """PGD adversarial examples of ``model`` on (x, y) (Madry et al. 2018) and the attack's
    success: the fraction of inputs the model classified correctly before and wrongly after.

    Runs in batches of ``batch_size``; the random start of input i comes from its own generator
    (seed, i) (:func:`robustlens.attacks.example_generators`), so the images do not depend on
    the batch size."""
    model = model.to(device).eval()
    xt, yt = torch.as_tensor(x).to(device), torch.as_tensor(y).to(device)
    x_adv = torch.empty_like(xt)  # filled batch by batch: two copies of the images at the peak, not three
    for i in tqdm(range(0, len(xt), batch_size), desc=desc, disable=not progress):
        xb, yb = xt[i : i + batch_size], yt[i : i + batch_size]
        gens = example_generators(seed, i, len(xb))
        x_adv[i : i + len(xb)] = pgd_attack(model, xb, yb, eps, norm, steps=steps, step_size=step_size, random_init=random_start, gen=gens)
    with torch.no_grad():
        correct_before = predict(model, xt, batch_size).argmax(1) == yt
        correct_after = predict(model, x_adv, batch_size).argmax(1) == yt
    flipped = (correct_before & ~correct_after).sum().item()
    return {
        "images": x_adv.cpu().numpy(),
        "labels": np.asarray(y),
        "success_rate": flipped / max(1, correct_before.sum().item()),
        "robust_accuracy": correct_after.double().mean().item(),
    }


def draw_inversion_pairs(labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``n`` target images and, for each, a seed image of another class, drawn with
    ``seed`` (Engstrom et al. 2019 start inversions from images of a different class)."""
    rng = np.random.default_rng(seed)
    targets = np.sort(rng.choice(len(labels), size=min(n, len(labels)), replace=False))
    starts = np.empty_like(targets)
    for i, t in enumerate(targets):
        others = np.flatnonzero(labels != labels[t])
        starts[i] = rng.choice(others)
    return targets, starts


def relative_representation_loss(rep: torch.Tensor, rep_target: torch.Tensor) -> torch.Tensor:
    """||rep(x) - rep(t)|| / ||rep(t)|| per sample (Engstrom et al. 2019, Sec. 4)."""
    return (rep - rep_target).flatten(1).norm(dim=1) / rep_target.flatten(1).norm(dim=1).clamp_min(1e-12)


def invert_representation(
    model: torch.nn.Module,
    x_start: torch.Tensor,
    x_target: torch.Tensor,
    *,
    iterations: int,
    step_size: float,
    momentum: float,
    progress: bool = False,
    desc: str = "invert",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Representation inversion (Engstrom et al. 2019): starting from ``x_start``, minimise
    ||g(x) - g(t)|| / ||g(t)|| over images x in [0, 1], with g the penultimate representation,
    by normalised-gradient steps with momentum. Returns (images, initial loss, final loss)."""
    with torch.no_grad():
        rep_target = model.forward_features(x_target)
    x = x_start.clone()
    velocity = torch.zeros_like(x)
    with torch.no_grad():
        initial = relative_representation_loss(model.forward_features(x), rep_target)
    for _ in tqdm(range(iterations), desc=desc, disable=not progress, mininterval=1.0):
        x.requires_grad_(True)
        loss = relative_representation_loss(model.forward_features(x), rep_target)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        with torch.no_grad():
            grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
            velocity = momentum * velocity + grad
            x = (x - step_size * velocity).clamp(0, 1)
        x = x.detach()
    with torch.no_grad():
        final = relative_representation_loss(model.forward_features(x), rep_target)
    return x, initial, final


def inverted_probe(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_samples: int,
    iterations: int,
    step_size: float,
    momentum: float,
    seed: int,
    device: torch.device,
    batch_size: int | None = None,
    progress: bool = True,
    desc: str = "invert",
) -> dict:
    """Inverted images of ``model``: for ``n_samples`` targets, the image its representation
    cannot tell from the target's, started from an image of another class.

    Inverts ``batch_size`` pairs at a time (``None``: all at once). The inversion treats each
    pair on its own (per-sample loss, gradient normalised per sample, per-sample momentum, the
    model in eval mode), so the images do not depend on the batch size."""
    model = model.to(device).eval()
    targets, starts = draw_inversion_pairs(y, n_samples, seed)
    batch_size = batch_size or len(targets)
    xt = torch.as_tensor(x)
    parts = []
    for i in range(0, len(targets), batch_size):
        s, t = starts[i : i + batch_size], targets[i : i + batch_size]
        parts.append(invert_representation(
            model, xt[s].to(device), xt[t].to(device), iterations=iterations, step_size=step_size, momentum=momentum,
            progress=progress, desc=f"{desc} {i // batch_size + 1}/{-(-len(targets) // batch_size)}",
        ))
    images, initial, final = (torch.cat([part[k] for part in parts]) for k in range(3))
    return {
        "images": images.cpu().numpy(),
        "labels": np.asarray(y)[targets],
        "target_index": targets,
        "start_index": starts,
        "initial_loss": initial.cpu().numpy(),
        "final_loss": final.cpu().numpy(),
    }


def probe_dataset(probe: dict) -> xr.Dataset:
    """The xarray layout of a probe store: images (sample, channel, y, x), labels and the
    per-sample extras (inversion losses and indices) as variables along ``sample``."""
    images = probe["images"]
    data_vars = {"images": (("sample", "channel", "y", "x"), images)}
    for key in ("target_index", "start_index", "initial_loss", "final_loss"):
        if key in probe:
            data_vars[key] = (("sample",), np.asarray(probe[key]))
    ds = xr.Dataset(data_vars, coords={"sample": np.arange(len(images)), "label": ("sample", probe["labels"])})
    for key in ("success_rate", "robust_accuracy"):
        if key in probe:
            ds.attrs[key] = float(probe[key])
    return ds


def make_probe(kind: str, model: torch.nn.Module, x: np.ndarray, y: np.ndarray, settings: dict,
               device: torch.device, progress: bool = True) -> dict:
    """The probe ``kind`` (adversarial | inverted) of ``model`` with the config's settings."""
    if kind == "adversarial":
        return adversarial_probe(
            model, x, y, norm=settings["norm"], eps=settings["eps"], steps=settings["steps"],
            step_size=settings["step_size"], random_start=settings["random_start"], seed=settings["seed"],
            device=device, batch_size=settings["batch_size"], progress=progress,
        )
    if kind == "inverted":
        return inverted_probe(
            model, x, y, n_samples=settings["n_samples"], iterations=settings["iterations"],
            step_size=settings["step_size"], momentum=settings["momentum"], seed=settings["seed"],
            device=device, batch_size=settings["batch_size"], progress=progress,
        )
    raise ValueError(f"unknown probe {kind!r}; known: adversarial, inverted")
