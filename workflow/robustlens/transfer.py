"""Robustness transfer (Salman et al. 2020; Nern et al.): linear probing (LP), full fine-tuning
(FT) and LP-then-FT (LP-FT, Kumar et al. 2022) of a pretrained model on a downstream task, its
clean and robust accuracy, the adversarial sensitivity (AS) of its representation, and the two
bounds of Nern et al. that tie them together.

Notation (Nern et al., Sec. 3): the model is h(x) = W g(x) + b with g the penultimate
representation (``model.forward_features``) and (W, b) the linear head (``model.head``).

- **AS score** (Nern et al., Eq. 2): the mean over inputs of
  max_{||d|| <= eps} ||g(x + d) - g(x)||_2, the max estimated by PGD on that distance (the AS
  attack, :func:`as_attack`); any norm of the ball, L2 in representation space. PGD finds a
  lower bound of each max, never the max itself.
- **Lemma 1** (finite-sample Thm. 1): (mean adversarial loss - mean clean loss) / (L ||W||)
  <= AS score, for a loss L-Lipschitz in the max norm of the outputs: L = 2 for softmax
  cross-entropy (Nern et al., Lemma 3); L = 1 for the absolute error |h(x) - y| of a
  regression head (reverse triangle inequality; for k outputs we use ||h(x) - y||_inf, which is
  1-Lipschitz in the max norm and equals |h(x) - y| for k = 1; the squared error is not
  Lipschitz). ||W|| is then the largest L2 norm of a row of W (||W v||_inf <= max_i ||W_i||_2
  ||v||_2; for a scalar head ||w||_2). The adversarial loss comes from PGD on the loss (the
  loss attack). :func:`lemma1_bound` reports the LHS, ``rhs_as`` (the AS attack alone: the
  paper's RHS and the finding) and ``rhs_best`` (per input the largest representation change
  among every perturbation tried, the AS attack's and the loss attack's: since the LHS is
  attained by the loss attack's perturbations, rhs_best >= lhs holds exactly, a consistency
  check of the implementation, not a finding).
- **Thm 2** (Sec. 4; proof App. A.2): the classifier F(x) = argmax_j h_j(x) is robust in x
  (F(x + d) = F(x) for every ||d|| <= eps) if, with y = F(x),
  min_{j != y} (h_y(x) - h_j(x)) / ||W_y - W_j||_2 > max_{||d|| <= eps} ||g(x + d) - g(x)||_2.
  The proof writes h_y(x + d) - h_j(x + d) = (h_y(x) - h_j(x)) + (W_y - W_j)(g(x + d) - g(x))
  and bounds the second term by Cauchy-Schwarz, so (i) the comparison is strict (equality
  allows a tie h_y = h_j, which is not a robust argmax), (ii) the representation change is the
  L2 norm in representation space (the dual of the L2 norm of W_y - W_j) whatever the input
  norm of the ball, and (iii) the max runs over the same input ball (norm and eps) in which
  robustness is claimed. See :func:`thm2_margin` (true or predicted label) and
  :func:`thm2_criterion`: ``robust_among_fulfilled`` uses AS(x) from the AS attack alone (the
  paper's empirical certificate; a lower bound of the max, so the "certificate" can be wrong:
  a finding), ``robust_among_fulfilled_best`` the largest change of every perturbation tried in
  that ball (the AS attack's and every loss-attack run's), which makes the theorem's
  conclusion checkable exactly on the perturbations tried: it must be 1.

Every function takes explicit devices and seeds; no global random state is used. The transfer
and bounds tables are made from the results by :func:`robustlens.tables.transfer_tables`, which
needs no torch.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robustlens.attacks import ascent_step, example_generators, pgd_maximize, regression_error
from robustlens.fitting import Resume, fit, standardising_scale
from robustlens.modules import TaskInputModel
from robustlens.runtime import generator

#: Lipschitz constant of the Lemma 1 loss in the max norm of the outputs, per task kind.
LIPSCHITZ = {"classification": 2.0, "regression": 1.0}
#: Transfer methods, in table order: linear probing, full fine-tuning, LP then FT.
METHODS = ("lp", "ft", "lp_ft")
#: AS attacks (:func:`as_attack`): robustlens' PGD (the default), the PGD of Nern et al.'s App.
#: B.1 (20 steps of 0.7 eps) and the one FGSM step of the authors' released code.
AS_METHODS = ("pgd", "pgd_20x0.7eps", "fgsm")
#: Thm 2's label: the true label (robustlens' default) or the clean prediction F(x) (the paper's).
THM2_LABELS = ("true_label", "predicted")
#: Exponent of the authors' offset of the clean representation in their FGSM loss (see
#: :func:`as_attack`).
FGSM_OFFSET_POWER = 1.00001


# --------------------------------------------------------------------------- small helpers


def _batched(fn, n: int, batch_size: int):
    return torch.cat([fn(slice(i, i + batch_size)) for i in range(0, n, batch_size)])


def features(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The penultimate representation g(x) of ``x`` (no gradient), in batches."""
    with torch.no_grad():
        return _batched(lambda s: model.forward_features(x[s]), len(x), batch_size)


def outputs(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Model outputs h(x) = W g(x) + b (no gradient), in batches."""
    with torch.no_grad():
        return _batched(lambda s: model(x[s]), len(x), batch_size)


def task_loss(out: torch.Tensor, y: torch.Tensor, kind: str, objective: str = "train") -> torch.Tensor:
    """Per-sample loss of outputs against targets. ``objective="train"``: softmax cross-entropy
    (classification) or squared error averaged over outputs (regression, the MSE);
    ``objective="bound"``: the Lipschitz loss of Lemma 1, cross-entropy (L = 2) or
    ||h(x) - y||_inf (L = 1)."""
    if kind == "classification":
        return F.cross_entropy(out, y, reduction="none")
    return regression_error(out, y, "squared" if objective == "train" else "max_abs")


def head_weight_norm(weight) -> float:
    """||W|| of Lemma 1 for the max norm of the outputs: the largest L2 norm of a row of W
    (||w||_2 for a scalar head)."""
    w = np.asarray(weight.detach().cpu().double() if hasattr(weight, "detach") else weight, dtype=np.float64)
    return float(np.linalg.norm(w.reshape(-1, w.shape[-1]), axis=1).max())


# --------------------------------------------------------------------------- training


def _init_linear(d: int, k: int, gen: torch.Generator) -> torch.nn.Linear:
    """nn.Linear(d, k) initialised as PyTorch does (uniform +-1/sqrt(d)) from ``gen``."""
    head = torch.nn.Linear(d, k)
    bound = 1 / math.sqrt(d)
    with torch.no_grad():
        head.weight.copy_((torch.rand(head.weight.shape, generator=gen) * 2 - 1) * bound)
        head.bias.copy_((torch.rand(head.bias.shape, generator=gen) * 2 - 1) * bound)
    return head


def fit_head(
    feats: torch.Tensor,
    y: torch.Tensor,
    kind: str,
    n_outputs: int,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    momentum: float = 0.9,
    schedule: dict | None = None,
    resume: Resume | None = None,
) -> torch.nn.Linear:
    """A linear head on fixed features: minibatch SGD (momentum 0.9 and a cosine schedule unless
    given) on the cross-entropy or the MSE. Features are standardised with their mean and standard deviation
    (floored: :func:`robustlens.fitting.standardising_scale`) for the fit and the standardisation
    is folded back into the returned head, so it applies to
    raw features. Random init and batch order from ``seed``; returned on the features' device.
    ``resume``: where the fit's state is saved for a killed job to continue from."""
    gen = torch.Generator().manual_seed(int(seed))
    mean, std = feats.mean(0), feats.std(0, unbiased=False)
    std = standardising_scale(std)
    z = (feats - mean) / std
    head = _init_linear(z.shape[1], n_outputs, gen).to(feats.device)
    fit([head], head.parameters(), len(z), lambda idx: task_loss(head(z[idx]), y[idx], kind).mean(), epochs=epochs,
        batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay, schedule=schedule or FIT_DEFAULTS["schedule"],
        gen=gen, name="linear probe", resume=resume)
    folded = torch.nn.Linear(z.shape[1], n_outputs).to(feats.device)
    with torch.no_grad():
        folded.weight.copy_(head.weight / std)
        folded.bias.copy_(head.bias - folded.weight @ mean)
    return folded


def linear_probe(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, kind: str, n_outputs: int, settings: dict, seed: int,
    feature_batch: int = 512, resume: Resume | None = None,
) -> torch.nn.Module:
    """LP: a copy of ``model`` with its extractor frozen (eval mode, no gradients, so batch-norm
    statistics stay too) and a new linear head fitted on g(x) (extracted ``feature_batch``
    images at a time). ``settings``: epochs, lr, weight_decay, batch_size. The extractor's
    weights are those of ``model``, bit for bit. ``resume``: the head fit's resumable state."""
    probe = copy.deepcopy(model).eval()
    for p in probe.parameters():
        p.requires_grad_(False)
    if settings.get("augment", "none") != "none":
        raise ValueError("linear probing fits on fixed features of the un-augmented images: transfer.lp.augment must be none")
    probe.head = fit_head(features(probe, x, feature_batch), y, kind, n_outputs, seed=seed, resume=resume,
                          **_fit_kwargs(settings))
    return probe.eval()


def fine_tune(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    kind: str,
    n_outputs: int,
    settings: dict,
    seed: int,
    head: torch.nn.Linear | None = None,
    resume: Resume | None = None,
) -> torch.nn.Module:
    """FT: a copy of ``model`` with a new head (random from ``seed``, or a copy of ``head``:
    LP-FT) and every weight trained (batch norm in training mode) by minibatch SGD on the task
    loss. ``settings``: epochs, lr, weight_decay, batch_size, and optionally momentum (0.9),
    schedule (cosine over all batches) and augment (``none``; a :mod:`robustlens.augment`
    recipe applied to each batch, drawn from ``seed``: needs a
    :class:`robustlens.modules.TaskInputModel`). ``resume``: the fit's resumable state."""
    gen = torch.Generator().manual_seed(int(seed))
    tuned = copy.deepcopy(model)
    device = next(tuned.parameters()).device
    d = tuned.head.in_features
    tuned.head = copy.deepcopy(head) if head is not None else _init_linear(d, n_outputs, gen)
    tuned.to(device)
    for p in tuned.parameters():
        p.requires_grad_(True)

    augment = settings.get("augment", "none")
    augment_gen = generator(int(seed) + 1_000_003, x.device)

    def batch_loss(idx):
        tuned.train()
        out = tuned(x[idx]) if augment == "none" else tuned.forward_training(x[idx], augment, augment_gen)
        return task_loss(out, y[idx], kind).mean()

    fit([tuned], tuned.parameters(), len(x), batch_loss, gen=gen, generators=[augment_gen], name="fine-tuning",
        resume=resume, **_fit_kwargs(settings))
    return tuned.eval()


#: Optimiser and schedule of LP, FT and LP-FT when their settings do not name them.
FIT_DEFAULTS = {"momentum": 0.9, "schedule": {"kind": "cosine"}}


def _fit_kwargs(settings: dict) -> dict:
    return {**{k: settings[k] for k in ("epochs", "lr", "weight_decay", "batch_size")},
            **{k: settings.get(k, v) for k, v in FIT_DEFAULTS.items()}}


def transfer_models(model, x, y, kind: str, n_outputs: int, settings: dict, seed: int,
                    resume: Callable[[str], Resume] | None = None) -> dict:
    """The three transferred models {lp, ft, lp_ft} of ``model`` on (x, y). ``settings``: the
    config's ``transfer`` block (``lp``, ``ft``, ``lp_ft``: epochs, lr, weight_decay,
    batch_size; ``batch_size``: the batch LP extracts features in); LP-FT fine-tunes the LP
    model (its head included) with ``lp_ft``. ``resume(method)``: the resumable state of that
    method's fit (:func:`resumable_parts`)."""
    part = resume or (lambda method: None)
    lp = linear_probe(model, x, y, kind, n_outputs, settings["lp"], seed, feature_batch=int(settings.get("batch_size", 512)),
                      resume=part("lp"))
    ft = fine_tune(model, x, y, kind, n_outputs, settings["ft"], seed, resume=part("ft"))
    lp_ft = fine_tune(lp, x, y, kind, n_outputs, settings["lp_ft"], seed, head=lp.head, resume=part("lp_ft"))
    return {"lp": lp, "ft": ft, "lp_ft": lp_ft}


def resumable_parts(directory, fingerprint: dict, every_s: float) -> Callable[[str], Resume]:
    """``part -> Resume`` for the parts of one (model, task) transfer: each fit (``lp``, ``ft``,
    ``lp_ft``) and the evaluated methods' rows (``evaluated``), as ``directory/<part>.pt``.
    ``fingerprint``: what they belong to (model and its checksum, task data, settings, device);
    the fits' state is saved at most every ``every_s`` seconds and after their last epoch, the
    rows after each method. A killed transfer job rerun continues from them, bit-identical to
    an uninterrupted run on the same device."""
    return lambda part: Resume(Path(directory) / f"{part}.pt", {**fingerprint, "part": part}, every_s)


# --------------------------------------------------------------------------- attacks


def representation_change(model, x: torch.Tensor, x_adv: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """||g(x_adv) - g(x)||_2 per sample."""
    return (features(model, x_adv, batch_size) - features(model, x, batch_size)).norm(dim=1)


def as_attack(
    model, x: torch.Tensor, *, eps: float, norm: str, steps: int, restarts: int, gen,
    step_size: float | None = None, method: str = "pgd",
) -> torch.Tensor:
    """The AS attack: inputs in the ``norm`` ball of radius ``eps`` around ``x`` (and in [0, 1])
    that maximise ||g(x + d) - g(x)||_2. ``method``:

    - ``"pgd"`` (robustlens' default): PGD from a random start, ``steps`` steps of
      ``step_size`` (default 2.5 eps / steps), ``1 + restarts`` runs, the best kept per sample.
    - ``"pgd_20x0.7eps"``: the AS attack of Nern et al., App. B.1 ("L_inf-PGD attacks
      implemented in the foolbox package ... 20 steps and a relative step size of 0.7"):
      foolbox's ``rel_stepsize`` is relative to epsilon, so 20 steps of 0.7 eps (sign of the
      gradient for Linf, the L2-normalised gradient for L2), from foolbox's random start
      (uniform in the ball), projected onto the ball and [0, 1] after each step, one run, the
      last iterate. ``steps``, ``restarts`` and ``step_size`` are ignored.
    - ``"fgsm"``: the authors' released code (``fgsm_attack`` of their representation
      analysis): one step of length eps from x itself (no random start) along the sign of the
      gradient (Linf; the L2-normalised gradient for L2) of ||g(x') - g(x)^1.00001||_2 at
      x' = x, clipped to the input range. The gradient of ||g(x') - g(x)||_2 vanishes at
      x' = x, so their code offsets the clean representation by the power 1.00001
      (:data:`FGSM_OFFSET_POWER`); g >= 0 after a ReLU, and we apply the power to |g| with
      g's sign so that negative features stay defined. ``steps``, ``restarts``, ``step_size``
      and ``gen`` are ignored.

    ``gen``: a ``torch.Generator`` or per-example generators
    (:func:`robustlens.attacks.example_generators`)."""
    with torch.no_grad():
        g0 = model.forward_features(x)

    def distance(x_adv):
        return (model.forward_features(x_adv) - g0).norm(dim=1)

    if method == "pgd":
        return pgd_maximize(distance, x, eps, norm, steps, step_size, True, restarts, gen)
    if method == "pgd_20x0.7eps":
        return pgd_maximize(distance, x, eps, norm, 20, 0.7 * eps, True, 0, gen)
    if method == "fgsm":
        target = g0.sign() * g0.abs() ** FGSM_OFFSET_POWER
        x_req = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((model.forward_features(x_req) - target).norm(dim=1).sum(), x_req)
        with torch.no_grad():
            return (x + ascent_step(grad, eps, norm)).clamp(0, 1)
    raise ValueError(f"AS attack method must be one of {AS_METHODS}, got {method!r}")


def as_score(
    model, x, *, eps: float, norm: str, steps: int, restarts: int, seed: int, step_size: float | None = None, batch_size: int = 512,
    method: str = "pgd",
) -> tuple[float, np.ndarray]:
    """AS score (Nern et al., Eq. 2): mean over ``x`` of the AS attack's representation change,
    and the per-input changes (a lower bound of each max). ``method``: see :func:`as_attack`.
    Runs in batches of ``batch_size``; input i's random starts come from its own generator
    (seed, i), so the values do not depend on the batch size."""

    def batch(s: slice):
        gens = example_generators(seed, s.start, len(x[s]))
        x_adv = as_attack(model, x[s], eps=eps, norm=norm, steps=steps, restarts=restarts, gen=gens, step_size=step_size,
                          method=method)
        return representation_change(model, x[s], x_adv, batch_size)

    per = _batched(batch, len(x), batch_size).double().cpu().numpy()
    return float(per.mean()), per


def loss_attack_runs(
    model, x, y, kind: str, *, eps: float, norm: str, steps: int, restarts: int, seed: int,
    objective: str = "bound", step_size: float | None = None, batch_size: int = 512,
) -> dict[str, np.ndarray]:
    """The loss attack: ``1 + restarts`` PGD runs from random starts on the per-sample task loss
    (``objective`` as in :func:`task_loss`). Per input: ``loss`` (the largest loss over the
    runs), ``change`` (||g(x + d) - g(x)||_2 of the run with that loss), ``change_max`` (the
    largest over all runs), ``robust`` (classification: correct in every run), ``consistent``
    (classification: the clean prediction F(x) kept in every run). Runs in batches
    of ``batch_size``; input i's random starts come from its own generator (seed, i), so the
    values do not depend on the batch size."""
    best_loss, best_change, change_max, robust, consistent = [], [], [], [], []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        gen = example_generators(seed, i, len(xb))
        with torch.no_grad():
            g0 = model.forward_features(xb)
            pred0 = model.head(g0).argmax(1) if kind == "classification" else None
        bl = bc = cm = None
        rob = torch.ones(len(xb), dtype=torch.bool, device=x.device)
        con = torch.ones(len(xb), dtype=torch.bool, device=x.device)
        for _ in range(1 + restarts):
            x_adv = pgd_maximize(lambda xa: task_loss(model(xa), yb, kind, objective), xb, eps, norm, steps, step_size, True, 0, gen)
            with torch.no_grad():
                g = model.forward_features(x_adv)
                out = model.head(g)
                loss = task_loss(out, yb, kind, objective)
                change = (g - g0).norm(dim=1)
                if kind == "classification":
                    rob &= out.argmax(1) == yb
                    con &= out.argmax(1) == pred0
            if bl is None:
                bl, bc, cm = loss, change, change
            else:
                better = loss > bl
                bl, bc, cm = torch.where(better, loss, bl), torch.where(better, change, bc), torch.maximum(cm, change)
        best_loss.append(bl)
        best_change.append(bc)
        change_max.append(cm)
        robust.append(rob)
        consistent.append(con)

    def cat(parts):
        return torch.cat(parts).cpu().numpy()

    return {
        "loss": cat(best_loss).astype(np.float64),
        "change": cat(best_change).astype(np.float64),
        "change_max": cat(change_max).astype(np.float64),
        "robust": cat(robust),
        "consistent": cat(consistent),
    }


# --------------------------------------------------------------------------- the bounds


def lemma1_bound(clean_loss, adversarial_loss, as_change, loss_change, lipschitz: float, weight_norm: float) -> dict:
    """Lemma 1 of Nern et al. from per-input values: ``lhs`` = (mean adversarial loss - mean
    clean loss) / (L ||W||); ``rhs_as`` = mean AS-attack change (the AS score); ``rhs_best`` =
    mean over inputs of the larger of the AS attack's and the loss attack's change (>= lhs
    whenever ``loss_change`` is the change of the perturbation that gave ``adversarial_loss``);
    ``loss_attack_larger_fraction``: how often the loss attack's change was the larger."""
    clean, adv = np.asarray(clean_loss, dtype=np.float64), np.asarray(adversarial_loss, dtype=np.float64)
    as_change, loss_change = np.asarray(as_change, dtype=np.float64), np.asarray(loss_change, dtype=np.float64)
    return {
        "lhs": float((adv.mean() - clean.mean()) / (lipschitz * weight_norm)),
        "rhs_as": float(as_change.mean()),
        "rhs_best": float(np.maximum(as_change, loss_change).mean()),
        "loss_attack_larger_fraction": float(np.mean(loss_change > as_change)),
    }


def thm2_margin(logits, labels, weight, label: str = "true_label") -> np.ndarray:
    """Thm 2's normalised margin per input: min over j != y of (h_y(x) - h_j(x)) / ||W_y - W_j||_2
    (+inf/-inf where W_y = W_j and the logit gap is positive/not). float64.

    ``label``: ``"true_label"`` (robustlens' default): y is the input's label (``labels``), so a
    misclassified input has a margin <= 0 and never fulfils the criterion, and robust means
    correct under attack; ``"predicted"``: y = F(x) = argmax_j h_j(x), the theorem as stated
    (Nern et al., Thm 2: robust means F(x + d) = F(x), right or wrong; ``labels`` is then
    unused). Both agree on correctly classified inputs."""
    z = np.asarray(logits, dtype=np.float64)
    if label == "predicted":
        y = z.argmax(axis=1)
    elif label == "true_label":
        y = np.asarray(labels, dtype=np.int64)
    else:
        raise ValueError(f"Thm 2 label must be one of {THM2_LABELS}, got {label!r}")
    w = np.asarray(weight, dtype=np.float64)
    gap = z[np.arange(len(z)), y][:, None] - z  # (n, C)
    dist = np.linalg.norm(w[y][:, None, :] - w[None, :, :], axis=2)  # (n, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dist > 0, gap / np.where(dist > 0, dist, 1.0), np.where(gap > 0, np.inf, -np.inf))
    ratio[np.arange(len(z)), y] = np.inf
    return ratio.min(axis=1)


def thm2_criterion(margin, as_change, robust, best_change=None) -> dict:
    """Thm 2 empirically, per input: fulfilled when its margin (:func:`thm2_margin`) strictly
    exceeds its own representation change (the theorem's comparison is strict; the change is
    ||g(x + d) - g(x)||_2 in representation space for d in the same input ball as ``robust``).

    With ``as_change`` (the AS attack's change): ``fulfilled_fraction``, ``n_fulfilled`` and
    ``robust_among_fulfilled`` (the fraction of those inputs that are ``robust``, NaN when none
    fulfils it; the paper's empirical certificate, which can be wrong, since the AS attack only
    finds a lower bound of the max). With ``best_change`` (per input the largest change of
    every perturbation tried in that ball, the AS attack's and every loss-attack run's) also
    ``fulfilled_fraction_best``, ``n_fulfilled_best`` and ``robust_among_fulfilled_best``:
    every perturbation tried then changes g by at most best_change < margin, so by the
    theorem none of them changes the prediction: 1.0 whenever ``robust`` was measured on those
    same perturbations (NaN when no input fulfils it)."""
    robust = np.asarray(robust, dtype=bool)
    margin = np.asarray(margin, dtype=np.float64)
    out = {}
    changes = {"": as_change} if best_change is None else {"": as_change, "_best": best_change}
    for suffix, change in changes.items():
        fulfilled = margin > np.asarray(change, dtype=np.float64)
        out[f"fulfilled_fraction{suffix}"] = float(fulfilled.mean())
        out[f"n_fulfilled{suffix}"] = float(fulfilled.sum())
        out[f"robust_among_fulfilled{suffix}"] = float(robust[fulfilled].mean()) if fulfilled.any() else float("nan")
    return out


# --------------------------------------------------------------------------- one (model, task)


def _attack_key(attack: dict) -> tuple:
    return (attack["norm"], float(attack["eps"]), int(attack["steps"]), int(attack["restarts"]), attack.get("step_size"))


def evaluate_transferred(
    model, x, y, kind: str, settings: dict, seed: int, batch_size: int = 512, thm2_label: str = "true_label",
) -> tuple[list[dict], list[dict]]:
    """Transfer metrics and bounds of one transferred model on a task's test split.

    ``settings``: the config's ``transfer.attacks`` (``robust_accuracy``: norm, eps, steps,
    restarts; ``bounds``: list of {norm, eps, as_attack: {steps, restarts}, loss_attack: {steps,
    restarts}}; each attack may set ``step_size``, default 2.5 eps / steps; ``as_method``: the
    AS attack's method, :data:`AS_METHODS`, default "pgd"). ``thm2_label``: Thm 2's label,
    :data:`THM2_LABELS` (:func:`thm2_margin`); with "predicted" an input counts as robust when
    it keeps its clean prediction in every loss-attack run. Returns (transfer rows, bounds rows),
    each a dict with ``attack_norm``, ``attack_eps``, ``metric``, ``value``; bounds rows also
    carry ``as_method`` and ``thm2_label`` ("none" for regression, which has no Thm 2). A loss
    attack with the robust-accuracy settings is run once and used for both (classification)."""
    if thm2_label not in THM2_LABELS:
        raise ValueError(f"Thm 2 label must be one of {THM2_LABELS}, got {thm2_label!r}")
    as_method = settings.get("as_method", "pgd")
    if as_method not in AS_METHODS:
        raise ValueError(f"AS attack method must be one of {AS_METHODS}, got {as_method!r}")
    model.eval()
    clean_out = outputs(model, x, batch_size)
    transfer_rows, bounds_rows = [], []

    def row(rows, norm, eps, metric, value, **extra):
        rows.append({"attack_norm": norm, "attack_eps": float(eps), **extra, "metric": metric, "value": float(value)})

    runs = {}

    def runs_for(attack: dict, objective: str, offset: int):
        key = (_attack_key(attack), objective)
        if key not in runs:
            runs[key] = loss_attack_runs(
                model, x, y, kind, eps=attack["eps"], norm=attack["norm"], steps=attack["steps"], restarts=attack["restarts"],
                seed=seed + offset, objective=objective, step_size=attack.get("step_size"), batch_size=batch_size,
            )
        return runs[key]

    # robust accuracy (classification) / robust MSE (regression) under the robust-accuracy attack
    ra = settings["robust_accuracy"]
    train_clean = task_loss(clean_out, y, kind, "train").double().cpu().numpy()
    if kind == "classification":
        row(transfer_rows, "none", 0, "clean_accuracy", (clean_out.argmax(1) == y).double().mean().item())
        row(transfer_rows, "none", 0, "clean_cross_entropy", train_clean.mean())
        r = runs_for(ra, "bound", 0)  # cross-entropy is both the training and the bound loss
        row(transfer_rows, ra["norm"], ra["eps"], "robust_accuracy", r["robust"].mean())
        row(transfer_rows, ra["norm"], ra["eps"], "robust_cross_entropy", r["loss"].mean())
    else:
        row(transfer_rows, "none", 0, "clean_mse", train_clean.mean())
        r = runs_for(ra, "train", 0)
        row(transfer_rows, ra["norm"], ra["eps"], "robust_mse", r["loss"].mean())

    weight_norm = head_weight_norm(model.head.weight)
    lipschitz = LIPSCHITZ[kind]
    clean_bound = task_loss(clean_out, y, kind, "bound").double().cpu().numpy()
    for b_index, bound in enumerate(settings["bounds"]):
        norm, eps = bound["norm"], bound["eps"]
        _, as_change = as_score(model, x, eps=eps, norm=norm, seed=seed + 1000 * (b_index + 1) + 1,
                                batch_size=batch_size, method=as_method, **bound["as_attack"])
        loss_attack = {"norm": norm, "eps": eps, **bound["loss_attack"]}
        # the robust-accuracy attack's runs are reused when its settings are the same
        r = runs_for(loss_attack, "bound", 0 if _attack_key(loss_attack) == _attack_key(ra) else 1000 * (b_index + 1) + 2)
        lemma = lemma1_bound(clean_bound, r["loss"], as_change, r["change_max"], lipschitz, weight_norm)
        values = {
            **lemma,
            "clean_loss": clean_bound.mean(),
            "adversarial_loss": r["loss"].mean(),
            "relative_loss_gap": (r["loss"].mean() - clean_bound.mean()) / clean_bound.mean(),
            "lipschitz": lipschitz,
            "weight_norm": weight_norm,
        }
        if kind == "classification":
            margin = thm2_margin(clean_out.double().cpu().numpy(), y.cpu().numpy(), model.head.weight.detach().double().cpu().numpy(),
                                 label=thm2_label)
            # robust in Thm 2's sense on every perturbation tried in this ball: correct (true
            # label) or the clean prediction kept (predicted label) in every loss-attack run
            kept = r["robust"] if thm2_label == "true_label" else r["consistent"]
            values.update(thm2_criterion(margin, as_change, kept, best_change=np.maximum(as_change, r["change_max"])))
            values["robust_accuracy"] = r["robust"].mean()
        label = thm2_label if kind == "classification" else "none"
        for metric, value in values.items():
            row(bounds_rows, norm, eps, metric, value, as_method=as_method, thm2_label=label)
    return transfer_rows, bounds_rows


def transfer_study(model, task: dict, settings: dict, device, progress: bool = True, desc: str = "",
                   input_size: int | None = None, channels: int | None = None,
                   resume: Callable[[str], Resume] | None = None) -> dict:
    """Everything the transfer study computes for one (pretrained model, task): the three
    transferred models (:func:`transfer_models`) and, for each, :func:`evaluate_transferred`
    on the task's test split. ``task``: the arrays of :func:`robustlens.tasks.make_task`.
    The model sees the task through :class:`robustlens.modules.TaskInputModel`: images resized
    on the device to ``input_size`` (the model's resolution; default the task's) by
    ``settings["input"]["resize"]`` and repeated to ``channels`` (default the task's).
    ``resume``: the parts' resumable state (:func:`resumable_parts`): a rerun after a kill
    continues the fit it was in and skips the methods already evaluated.
    Returns {"transfer": rows, "bounds": rows}, each row with a ``method`` key."""
    kind = str(task["kind"])
    n_outputs = int(task["n_outputs"])
    ytype = torch.long if kind == "classification" else torch.float32
    x_train = torch.as_tensor(task["x_train"], dtype=torch.float32, device=device)
    y_train = torch.as_tensor(task["y_train"], dtype=ytype, device=device)
    x_test = torch.as_tensor(task["x_test"], dtype=torch.float32, device=device)
    y_test = torch.as_tensor(task["y_test"], dtype=ytype, device=device)
    size = int(input_size or x_train.shape[-1])
    resize = settings.get("input", {}).get("resize", "resize")
    model = TaskInputModel(model, size, int(channels or x_train.shape[1]), resize).to(device).eval()
    seed = int(settings["seed"])
    evaluated = resume("evaluated") if resume is not None else None
    state = evaluated.load() if evaluated is not None else None
    rows, done = (state["rows"], state["methods"]) if state else ({"transfer": [], "bounds": []}, [])
    if done:
        print(f"resume: {desc or 'transfer'}: {', '.join(done)} already evaluated")
    if len(done) == len(METHODS):
        return rows
    bar = tqdm(total=2 * len(METHODS), desc=desc or "transfer", disable=not progress, mininterval=1.0)
    bar.set_postfix(step="train")
    models = transfer_models(model, x_train, y_train, kind, n_outputs, settings, seed, resume)
    bar.update(len(METHODS) + len(done))
    for method in (m for m in METHODS if m not in done):
        bar.set_postfix(step=f"evaluate {method}")
        transfer_rows, bounds_rows = evaluate_transferred(
            models[method], x_test, y_test, kind, settings["attacks"], int(settings["attacks"]["seed"]),
            batch_size=int(settings["batch_size"]), thm2_label=settings.get("thm2_label", "true_label"),
        )
        rows["transfer"] += [{"method": method, **r} for r in transfer_rows]
        rows["bounds"] += [{"method": method, **r} for r in bounds_rows]
        done.append(method)
        if evaluated is not None:
            evaluated.save({"rows": rows, "methods": done}, force=True)
        bar.update(1)
    bar.close()
    return rows
