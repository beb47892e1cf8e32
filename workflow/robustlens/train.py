"""Standard and adversarial training (Madry et al. 2018) and the shared robustness evaluation.

Adversarial training minimises E[max_{||d|| <= eps} CE(f(x + d), y)] (Madry et al., Eq. 2),
the inner maximum approximated by PGD; eps = 0 is standard training.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robustlens.attacks import pgd_attack
from robustlens.runtime import generator


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf."""


def _batches(n: int, batch_size: int, gen: torch.Generator | None):
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def train_model(
    model: torch.nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    eps: float,
    norm: str,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    attack_steps: int,
    seed: int,
    device: torch.device,
    model_id: str = "",
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place with SGD and a cosine learning-rate schedule; PGD-``attack_steps``
    adversarial examples at radius ``eps`` (eps = 0: clean training). Returns per-epoch history.

    Raises :class:`NonFiniteLossError` naming the model, epoch and step when the loss is NaN/Inf.
    """
    torch.manual_seed(seed)  # parameter init happened before; this seeds dropout-free layers only
    gen = generator(seed)
    attack_gen = generator(seed + 1_000_003, device)
    x = torch.as_tensor(x_train).to(device)
    y = torch.as_tensor(y_train).to(device)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2, anneal_strategy="cos"
    )
    history = []
    bar = tqdm(range(epochs), desc=f"train {model_id} eps={eps}", disable=not progress, mininterval=1.0)
    for epoch in bar:
        total_loss, correct, seen = 0.0, 0, 0
        for step, idx in enumerate(_batches(len(x), batch_size, gen)):
            xb, yb = x[idx], y[idx]
            if eps > 0:
                model.eval()
                xb = pgd_attack(model, xb, yb, eps, norm, steps=attack_steps, gen=attack_gen)
            model.train()
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"model {model_id}: training loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
        history.append({"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": correct / seen})
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    model.eval()
    return history


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches."""
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def robust_accuracy(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    restarts: int,
    seed: int,
    batch_size: int = 512,
) -> float:
    """Fraction of inputs classified correctly under every one of ``1 + restarts`` PGD runs
    (each from a random start in the eps-ball); eps = 0 gives clean accuracy."""
    gen = generator(seed, x.device)
    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for _ in range(1 + restarts):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            x_adv = pgd_attack(model, xb, yb, eps, norm, steps=steps, random_init=True, gen=gen)
            with torch.no_grad():
                robust[i : i + batch_size] &= model(x_adv).argmax(1) == yb
        if eps == 0:
            break
    return robust.double().mean().item()


def evaluate_model(
    model: torch.nn.Module,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    attack_eps: list[float],
    norm: str,
    steps: int,
    restarts: int,
    seed: int,
    device: torch.device,
    progress: bool = True,
    model_id: str = "",
    batch_size: int = 512,
) -> dict:
    """Clean accuracy and robust accuracy at every attack radius of the shared grid."""
    x = torch.as_tensor(x_test).to(device)
    y = torch.as_tensor(y_test).to(device)
    model.to(device).eval()
    clean = (predict(model, x, batch_size).argmax(1) == y).double().mean().item()
    robust = {}
    for eps in tqdm(attack_eps, desc=f"evaluate {model_id}", disable=not progress):
        robust[str(eps)] = robust_accuracy(
            model, x, y, eps=eps, norm=norm, steps=steps, restarts=restarts, seed=seed, batch_size=batch_size
        )
    return {"clean_accuracy": clean, "robust_accuracy": robust, "attack": {"norm": norm, "steps": steps, "restarts": restarts}}


def train_and_evaluate(
    spec: dict,
    dataset: dict[str, np.ndarray],
    training: dict,
    evaluation: dict,
    device: torch.device,
    progress: bool = True,
) -> tuple[torch.nn.Module, dict]:
    """Build the model ``spec`` describes (initialised with its seed), train it at its eps and
    evaluate it on the shared attack grid. Returns (model, metrics)."""
    from robustlens.zoo import build_architecture

    torch.manual_seed(spec["seed"])
    model = build_architecture(spec["arch"])
    history = train_model(
        model,
        dataset["x_train"],
        dataset["y_train"],
        eps=spec["eps"],
        norm=spec["norm"],
        seed=spec["seed"],
        device=device,
        model_id=spec["id"],
        progress=progress,
        **training_kwargs(training),
    )
    metrics = evaluate_with_settings(model, dataset, evaluation, device, progress, spec["id"])
    metrics["history"] = history
    return model, metrics


def evaluate_with_settings(
    model: torch.nn.Module, dataset: dict[str, np.ndarray], evaluation: dict, device: torch.device, progress: bool = True, model_id: str = ""
) -> dict:
    """:func:`evaluate_model` with the config's ``evaluation`` block, plus robust accuracy under
    AutoAttack (``autoattack_accuracy``) when ``evaluation.autoattack`` is set. Trained and zoo
    models are evaluated by this one function."""
    metrics = evaluate_model(
        model,
        dataset["x_test"],
        dataset["y_test"],
        attack_eps=evaluation["eps"],
        norm=evaluation["norm"],
        steps=evaluation["steps"],
        restarts=evaluation["restarts"],
        seed=evaluation["seed"],
        device=device,
        progress=progress,
        model_id=model_id,
        batch_size=evaluation.get("batch_size", 512),
    )
    if evaluation.get("autoattack"):
        from robustlens.autoattack_eval import autoattack_accuracy

        settings = evaluation["autoattack"]
        metrics["autoattack_accuracy"] = autoattack_accuracy(
            model, dataset["x_test"], dataset["y_test"], settings, evaluation["norm"], device, evaluation["seed"]
        )
        metrics["autoattack"] = {"norm": settings.get("norm", evaluation["norm"]), "version": settings["version"], "n_samples": settings["n_samples"]}
    return metrics


def training_kwargs(training: dict) -> dict:
    """The optimisation settings of the ``training`` config block (its ``norm`` is the model's)."""
    keys = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "attack_steps")
    return {key: training[key] for key in keys}
