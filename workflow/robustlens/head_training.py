"""Classifier-head retraining (Klabunde, Caspari, Lemmerich, Sec. 5): freeze the feature
extractor, fit new linear heads on the penultimate features of the training split with several
seeds, and evaluate them on held-out inputs only. The heads are stored and applied by
:mod:`robustlens.heads`, which needs no torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from robustlens.activations import extract_activations
from robustlens.fitting import fit, standardising_scale
from robustlens.heads import head_logits


def fit_linear_head(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    seed: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """A softmax-regression head fitted by minibatch SGD with momentum and a cosine schedule
    (random init and batch order from ``seed``). Features are standardised with the training
    split's mean and standard deviation (floored: :func:`robustlens.fitting.standardising_scale`)
    for the fit, and the standardisation is folded back
    into the returned weights, so the head applies to raw features. Returns (W (classes, d), b)."""
    gen = torch.Generator().manual_seed(int(seed))
    features = np.asarray(features, dtype=np.float64)
    mean, std = features.mean(axis=0), features.std(axis=0)
    std = standardising_scale(std)
    x = torch.as_tensor((features - mean) / std, dtype=torch.float32, device=device)
    y = torch.as_tensor(labels, dtype=torch.long, device=device)
    head = torch.nn.Linear(x.shape[1], n_classes).to(device)
    with torch.no_grad():
        bound = 1 / np.sqrt(x.shape[1])
        head.weight.copy_((torch.rand(head.weight.shape, generator=gen) * 2 - 1) * bound)
        head.bias.copy_((torch.rand(head.bias.shape, generator=gen) * 2 - 1) * bound)
    fit([head], head.parameters(), len(x), lambda idx: F.cross_entropy(head(x[idx]), y[idx]), epochs=epochs,
        batch_size=batch_size, lr=lr, momentum=0.9, weight_decay=weight_decay, schedule={"kind": "cosine_epoch"},
        gen=gen, name="head")
    w = head.weight.detach().cpu().double().numpy() / std
    b = head.bias.detach().cpu().double().numpy() - w @ mean
    return w, b


def retrain_heads(model: torch.nn.Module, dataset: dict, settings: dict, device: torch.device, progress: bool = True, model_id: str = "") -> dict:
    """Fit one linear head per seed in ``settings["seeds"]`` on the penultimate features of the
    training split; report train and test accuracy of each, and of the original head."""
    layers = ["penultimate", "logits"]
    train = extract_activations(model, dataset["x_train"], layers, device=device, progress=progress, desc="features train", model_id=model_id)
    test = extract_activations(model, dataset["x_test"], layers, device=device, progress=progress, desc="features test", model_id=model_id)
    n_classes = train["logits"].shape[1]
    weights, biases = [], []
    for seed in settings["seeds"]:
        w, b = fit_linear_head(
            train["penultimate"], dataset["y_train"], n_classes, seed=seed, epochs=settings["epochs"],
            lr=settings["lr"], weight_decay=settings["weight_decay"], batch_size=settings["batch_size"], device=device,
        )
        weights.append(w)
        biases.append(b)
    weights, biases = np.stack(weights), np.stack(biases)

    def accuracy(features, labels, w, b):
        return float(np.mean(head_logits(features, w, b).argmax(1) == labels))

    return {
        "seeds": np.asarray(settings["seeds"]),
        "weight": weights,
        "bias": biases,
        "train_accuracy": np.array([accuracy(train["penultimate"], dataset["y_train"], w, b) for w, b in zip(weights, biases)]),
        "test_accuracy": np.array([accuracy(test["penultimate"], dataset["y_test"], w, b) for w, b in zip(weights, biases)]),
        "original_test_accuracy": np.array(float(np.mean(test["logits"].argmax(1) == dataset["y_test"]))),
    }
