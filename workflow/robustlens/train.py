"""Standard and adversarial training (Madry et al. 2018) and the shared robustness evaluation.

Adversarial training minimises E[max_{||d|| <= eps} CE(f(x + d), y)] (Madry et al., Eq. 2),
the inner maximum approximated by PGD; eps = 0 is standard training.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robustlens.attacks import pgd_attack
from robustlens.augment import CROPPING_AUGMENTS, augment_batch, centre_crop
from robustlens.autoattack_eval import autoattack_accuracy
from robustlens.fitting import NonFiniteLossError, Resume, fit
from robustlens.runtime import autocast, generator, memory_format
from robustlens.streaming import StreamedImages
from robustlens.zoo import build_architecture


#: Settings of the ``training`` block with the values the default study was built with; a
#: config that leaves one out gets this value (paper configs set every one, with its source).
TRAINING_DEFAULTS = {
    "nesterov": True,
    "schedule": {"kind": "onecycle", "warmup": 0.2},
    "attack_step_size": None,
    "attack_random_start": True,
    "attack_use_best": False,
    "augment": "none",
    "validation": None,
    "resume_minutes": 10,
    "stream": False,
}


def training_view(x: torch.Tensor, augment: str, gen: torch.Generator, size: int | None) -> torch.Tensor:
    """A training batch as the model sees it: augmented (``augment``), at the model's input
    ``size``: random resized crops are cut at that size; other recipes augment the stored
    images and their centre crop is taken (stored images larger than the input:
    ``dataset.train_image_size``)."""
    if size is None or x.shape[-1] == size:
        return augment_batch(x, augment, gen)
    if augment in CROPPING_AUGMENTS:
        return augment_batch(x, augment, gen, size=size)
    return centre_crop(augment_batch(x, augment, gen), size)


def rows_digest(rows, index: np.ndarray, chunk_rows: int = 4096) -> str:
    """sha256 of the rows ``index`` of a streamed split, read ``chunk_rows`` at a time."""
    digest = hashlib.sha256()
    for start in range(0, len(index), chunk_rows):
        digest.update(np.ascontiguousarray(rows[index[start : start + chunk_rows]]).tobytes())
    return digest.hexdigest()


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices of a training split of ``n`` samples: a validation split of
    round(fraction * n) samples (at least one) drawn by a seeded permutation; both sorted.
    Checkpoints are chosen and recipes tuned on it, never on the test split."""
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise ValueError(f"validation fraction {fraction} leaves no training sample of {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_model(
    model: torch.nn.Module,
    x_train: "np.ndarray | StreamedImages",
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
    nesterov: bool = True,
    schedule: dict | None = None,
    attack_step_size: float | None = None,
    attack_random_start: bool = True,
    attack_use_best: bool = False,
    augment: str = "none",
    validation: dict | None = None,
    x_val: "np.ndarray | StreamedImages | None" = None,
    y_val: np.ndarray | None = None,
    resume: Resume | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    input_size: int | None = None,
    model_id: str = "",
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place with minibatch SGD (:func:`robustlens.fitting.fit`) on
    PGD-``attack_steps`` adversarial examples at radius ``eps`` (eps = 0: clean training), each
    batch augmented by ``augment`` (:mod:`robustlens.augment`) before it is attacked. Returns
    the per-epoch history (loss, learning rate, training accuracy on the attacked batches and,
    with ``x_val``, clean and robust validation accuracy).

    ``validation``: ``{"select": "last" | "best_robust_val", "every": k}``; every k epochs and
    after the last, clean and robust validation accuracy on (``x_val``, ``y_val``), the latter
    under the training attack (same eps, steps, step size, random start, best iterate), as the
    robustness library's ``train.py`` does (L342-349); ``best_robust_val`` leaves ``model`` at
    the validated epoch with the highest one (the earliest of ties), marked ``selected`` in the
    history. ``resume``: where the state is saved for a killed job to continue from.
    ``precision``: ``bf16`` runs the training step (the training attack and the forward pass)
    under bf16 autocast, the weights and the optimiser staying float32; validation is fp32. ``channels_last``: the model and batches in NHWC
    layout while training (the returned model is back in the default layout, so its checkpoint
    does not depend on it). ``input_size``: the model's input side when the stored training
    images are larger (:func:`training_view`; validation takes their centre crop). Raises
    :class:`NonFiniteLossError` naming the model, epoch and step when the loss is NaN/Inf.
    """
    torch.manual_seed(seed)  # parameter init happened before; this seeds dropout-free layers only
    gen = generator(seed)
    attack_gen = generator(seed + 1_000_003, device)
    augment_gen = generator(seed + 2_000_003, device)
    x = x_train if isinstance(x_train, StreamedImages) else torch.as_tensor(x_train).to(device)
    y = torch.as_tensor(y_train).to(device)
    layout = memory_format(channels_last)
    model.to(device, memory_format=layout)
    attack = {"eps": eps, "norm": norm, "steps": attack_steps, "step_size": attack_step_size,
              "random_init": attack_random_start, "use_best": attack_use_best}

    def batch_loss(idx):
        xb, yb = training_view(x[idx], augment, augment_gen, input_size).contiguous(memory_format=layout), y[idx]
        with autocast(device, precision):
            if eps > 0:
                model.eval()
                xb = pgd_attack(model, xb, yb, gen=attack_gen, **attack)
            model.train()
            logits = model(xb).float()
        return F.cross_entropy(logits, yb), (logits.argmax(1) == yb).sum()

    select = (validation or {}).get("select", "last")
    if select == "best_robust_val" and x_val is None:
        raise ValueError("select: best_robust_val needs a validation split (training.validation.fraction)")
    carry: dict = {}
    every = int((validation or {}).get("every", 1))

    def on_epoch_end(epoch: int) -> dict:
        if x_val is None or (epoch % every and epoch != epochs):
            return {}
        model.eval()
        xv = x_val if isinstance(x_val, StreamedImages) else centre_crop(torch.as_tensor(x_val).to(device), input_size)
        yv = torch.as_tensor(y_val).to(device)
        clean = (predict(model, xv).argmax(1) == yv).double().mean().item()
        robust = robust_accuracy(model, xv, yv, eps=eps, norm=norm, steps=attack_steps, restarts=0, seed=seed,
                                 step_size=attack_step_size, random_init=attack_random_start, use_best=attack_use_best)
        if select == "best_robust_val" and robust > carry.get("best", -1.0):
            carry.update(best=robust, epoch=epoch, state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        return {"val_clean_accuracy": clean, "val_robust_accuracy": robust}

    streamed = isinstance(x, StreamedImages)
    try:
        history = fit(
            [model], model.parameters(), len(x), batch_loss, epochs=epochs, batch_size=batch_size, lr=lr,
            momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
            schedule=schedule or TRAINING_DEFAULTS["schedule"], gen=gen, generators=[attack_gen, augment_gen],
            name=f"model {model_id}: training", carry=carry, on_epoch_end=on_epoch_end,
            on_epoch_start=x.read_ahead if streamed else None,  # streamed: the next batches are read while a step runs
            resume=resume, progress=progress,
        )
    finally:
        if streamed:
            x.close()  # no read-ahead thread outlives the fit, nor rows read ahead for a failed one
    if select == "best_robust_val":
        model.load_state_dict(carry["state"])
    model.to(memory_format=torch.contiguous_format)
    chosen = carry.get("epoch", epochs)
    for row in history:
        row["selected"] = row["epoch"] == chosen
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
    step_size: float | None = None,
    random_init: bool = True,
    use_best: bool = False,
) -> float:
    """Fraction of inputs classified correctly under every one of ``1 + restarts`` PGD runs
    (each from a random start in the eps-ball unless ``random_init`` is False); eps = 0 gives
    clean accuracy. ``step_size``, ``use_best``: as in :func:`robustlens.attacks.pgd_maximize`."""
    gen = generator(seed, x.device)
    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for _ in range(1 + restarts):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            x_adv = pgd_attack(model, xb, yb, eps, norm, steps=steps, step_size=step_size, random_init=random_init,
                               use_best=use_best, gen=gen)
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
    resume_path: str | None = None,
    compute: dict | None = None,
    train_rows=None,
    input_size: int | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Build the model ``spec`` describes (initialised with its seed), train it at its eps with
    the ``training`` block (a validation split carved from the training split when it has
    ``validation``) and evaluate it on the shared attack grid. Returns (model, metrics);
    ``metrics["history"]`` holds the training curves. ``resume_path``: where resumable state is
    kept while training (see :class:`robustlens.fitting.Resume`). ``compute``: the config's
    ``precision`` and ``channels_last`` for training (evaluation is fp32); recorded in the
    metrics. ``train_rows``: the training images as :class:`robustlens.npz_rows.NpzRows`
    (``training.stream``), read per batch instead of from ``dataset["x_train"]``. ``input_size``:
    the model's input side (the test split's), when training images are stored larger."""
    settings = {**TRAINING_DEFAULTS, **training}
    compute = {"precision": "fp32", "channels_last": False, **(compute or {})}
    y_train, x_val, y_val = dataset["y_train"], None, None
    keep = np.arange(len(y_train))
    if settings["validation"]:
        val = settings["validation"]
        keep, held = split_validation(len(y_train), val["fraction"], val.get("seed", 0))
        y_train, y_val = y_train[keep], y_train[held]
        x_val = StreamedImages(train_rows, held, device, crop=input_size) if train_rows is not None else dataset["x_train"][held]
    if train_rows is not None:
        x_train = StreamedImages(train_rows, keep, device)
    else:
        x_train = dataset["x_train"][keep] if settings["validation"] else dataset["x_train"]
    resume = None
    if resume_path is not None:
        # hashed from the array's own buffer (no copy of the split)
        images = rows_digest(train_rows, keep) if train_rows is not None else hashlib.sha256(np.ascontiguousarray(x_train).data).hexdigest()
        fingerprint = {"spec": spec, "training": settings, "device": device.type, "compute": compute,
                       "data": hashlib.sha256(images.encode() + np.ascontiguousarray(y_train).tobytes()).hexdigest()}
        resume = Resume(resume_path, fingerprint, 60.0 * settings["resume_minutes"])
    torch.manual_seed(spec["seed"])
    model = build_architecture(spec["arch"])
    history = train_model(
        model, x_train, y_train, eps=spec["eps"], norm=spec["norm"], seed=spec["seed"], device=device,
        x_val=x_val, y_val=y_val, resume=resume, model_id=spec["id"], progress=progress, precision=compute["precision"],
        channels_last=compute["channels_last"], input_size=input_size, **training_kwargs(settings),
    )
    metrics = evaluate_with_settings(model, dataset, evaluation, device, progress, spec["id"])
    metrics["history"] = history
    metrics["training_compute"] = {k: compute[k] for k in ("precision", "channels_last")}
    metrics["selected_epoch"] = next(row["epoch"] for row in history if row["selected"])
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
        settings = evaluation["autoattack"]
        metrics["autoattack_accuracy"] = autoattack_accuracy(
            model, dataset["x_test"], dataset["y_test"], settings, evaluation["norm"], device, evaluation["seed"]
        )
        metrics["autoattack"] = {"norm": settings.get("norm", evaluation["norm"]), "version": settings["version"], "n_samples": settings["n_samples"]}
    return metrics


def training_kwargs(training: dict) -> dict:
    """The optimisation settings of the ``training`` block for :func:`train_model` (defaults
    from :data:`TRAINING_DEFAULTS`; the block's ``norm`` is the model's, ``resume_minutes`` the
    job's)."""
    settings = {**TRAINING_DEFAULTS, **training}
    keys = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "attack_steps", "nesterov", "schedule",
            "attack_step_size", "attack_random_start", "attack_use_best", "augment", "validation")  # not stream: the job's
    return {key: settings[key] for key in keys}

