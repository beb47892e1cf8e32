"""Training and the shared robustness evaluation, on the real digits data."""

import numpy as np
import pytest
import torch

from robustlens.data import prepare_dataset
from robustlens.runtime import configure_torch
from robustlens.train import evaluate_model, train_and_evaluate

TRAINING = {"epochs": 6, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "attack_steps": 5}
EVALUATION = {"eps": [1.0], "norm": "l2", "steps": 20, "restarts": 1, "seed": 0}
ARCH = {"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [8, 16, 32], "convs_per_block": 1}


@pytest.fixture(scope="module")
def digits():
    return prepare_dataset({"source": "sklearn_digits", "image_size": 16, "test_fraction": 0.2, "split_seed": 0})


@pytest.fixture(scope="module")
def trained(digits):
    configure_torch(1)
    out = {}
    for eps in (0.0, 1.0):
        spec = {"id": f"m{eps}", "arch": ARCH, "eps": eps, "norm": "l2", "seed": 0}
        out[eps] = train_and_evaluate(spec, digits, TRAINING, EVALUATION, torch.device("cpu"), progress=False)
    return out


def test_digits_split_is_stratified_and_fixed(digits):
    assert digits["x_train"].shape == (1437, 1, 16, 16) and digits["x_test"].shape == (360, 1, 16, 16)
    assert 0.0 <= digits["x_train"].min() and digits["x_train"].max() <= 1.0
    counts = np.bincount(digits["y_test"], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of ~180 per class


def test_standard_model_beats_chance(trained):
    assert trained[0.0][1]["clean_accuracy"] > 0.8  # chance is 0.1


def test_adversarial_training_keeps_more_robust_accuracy(trained):
    """Same seed, same attack (L2 PGD-20 with a restart at eps 1): the eps = 1 model keeps
    more accuracy than the standard one (Madry et al. 2018)."""
    robust_std = trained[0.0][1]["robust_accuracy"]["1.0"]
    robust_adv = trained[1.0][1]["robust_accuracy"]["1.0"]
    assert robust_adv > robust_std + 0.2, (robust_std, robust_adv)


def test_evaluation_counts_an_input_robust_only_if_every_run_misses_it(trained, digits):
    """Clean accuracy from the model's own outputs; robust accuracy at eps > 0 with one restart:
    the inputs classified correctly after both PGD runs, each replayed here from the same
    generator (runs drawn one after another); at eps = 0 it is the clean accuracy."""
    from robustlens.attacks import pgd_attack
    from robustlens.runtime import generator

    model = trained[0.0][0]
    x, y = torch.as_tensor(digits["x_test"]), torch.as_tensor(digits["y_test"])
    metrics = evaluate_model(model, digits["x_test"], digits["y_test"], attack_eps=[0.0, 0.7], norm="l2", steps=2,
                             restarts=1, seed=4, device=torch.device("cpu"), progress=False)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).numpy()
    gen = generator(4)
    runs = []
    for _ in range(2):
        x_adv = pgd_attack(model, x, y, 0.7, "l2", steps=2, random_init=True, gen=gen)
        with torch.no_grad():
            runs.append((model(x_adv).argmax(1) == y).numpy())
    assert metrics["clean_accuracy"] == pytest.approx(clean.mean())
    assert metrics["robust_accuracy"]["0.0"] == pytest.approx(clean.mean())
    assert metrics["robust_accuracy"]["0.7"] == pytest.approx((runs[0] & runs[1]).mean())
    assert (runs[0] != runs[1]).any()  # the runs differ, so "every run" is not "the last run"


def test_training_is_deterministic(digits):
    configure_torch(1)
    spec = {"id": "d", "arch": ARCH, "eps": 0.5, "norm": "l2", "seed": 3}
    short = {**TRAINING, "epochs": 1}
    a, _ = train_and_evaluate(spec, digits, short, EVALUATION, torch.device("cpu"), progress=False)
    b, _ = train_and_evaluate(spec, digits, short, EVALUATION, torch.device("cpu"), progress=False)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
