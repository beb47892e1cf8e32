"""Training and the shared robustness evaluation, on the real digits data."""

import numpy as np
import pytest
import torch

from robustlens.runtime import configure_torch
from robustlens.train import evaluate_model, train_and_evaluate

TRAINING = {"epochs": 6, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "attack_steps": 5}
EVALUATION = {"eps": [1.0], "norm": "l2", "steps": 20, "restarts": 1, "seed": 0}
ARCH = {"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [8, 16, 32], "convs_per_block": 1}


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


RESUME_SCRIPT = """
import sys
sys.path.insert(0, {workflow!r})
import numpy as np, torch
from robustlens.checkpoints import save_state_dict
from robustlens.runtime import configure_torch
from robustlens.train import train_and_evaluate

configure_torch(1)
rng = np.random.default_rng(0)
x = rng.random((480, 1, 12, 12), dtype=np.float32)
y = (x[:, 0, :6].mean(axis=(1, 2)) > x[:, 0, 6:].mean(axis=(1, 2))).astype(np.int64) + 2 * (x[:, 0, :, :6].mean(axis=(1, 2)) > 0.5)
data = {{"x_train": x[:400], "y_train": y[:400], "x_test": x[400:], "y_test": y[400:]}}
arch = {{"name": "smallcnn", "in_channels": 1, "num_classes": 4, "widths": [8, 8], "convs_per_block": 1}}
training = {{"epochs": 8, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "attack_steps": 3,
            "nesterov": False, "schedule": {{"kind": "step", "step_epochs": 3, "gamma": 0.5}}, "attack_use_best": True,
            "attack_random_start": True, "augment": "crop_flip", "resume_minutes": 1e-9,
            "validation": {{"fraction": 0.2, "select": "best_robust_val", "every": 1, "seed": 0}}}}
evaluation = {{"eps": [0.5], "norm": "l2", "steps": 2, "restarts": 0, "seed": 0}}
spec = {{"id": "k", "arch": arch, "eps": 0.5, "norm": "l2", "seed": 5}}
model, metrics = train_and_evaluate(spec, data, training, evaluation, torch.device("cpu"), progress=False, resume_path=sys.argv[1])
print("SHA", save_state_dict(model.state_dict(), sys.argv[2]), "SELECTED", metrics["selected_epoch"], "HISTORY", metrics["history"])
"""


def test_a_killed_training_job_resumes_to_the_checkpoint_of_an_uninterrupted_run(tmp_path):
    """Kill a training process (SIGKILL) once its resumable state holds epoch 2 or later; the
    rerun continues from that state (not from scratch) and writes a checkpoint whose sha256 is
    that of an uninterrupted run of the same settings, with the same per-epoch history and
    selected epoch (the run uses augmentation, a random-start best-iterate attack, a step schedule and best
    robust-validation selection, so every generator, the schedule and the kept weights must be
    restored)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "train.py"
    import robustlens

    script.write_text(RESUME_SCRIPT.format(workflow=str(Path(robustlens.__file__).parents[1])))

    def run(state, out):
        return subprocess.run([sys.executable, str(script), str(state), str(out)], capture_output=True, text=True, check=True).stdout

    whole = run(tmp_path / "whole.pt", tmp_path / "whole-checkpoint.pt")
    state = tmp_path / "state" / "k.pt"
    proc = subprocess.Popen([sys.executable, str(script), str(state), str(tmp_path / "killed.pt")], stdout=subprocess.PIPE)
    epoch = 0
    while proc.poll() is None and epoch < 2:
        time.sleep(0.02)
        if state.exists():
            try:
                epoch = torch.load(state, weights_only=False)["epoch"]
            except Exception:  # noqa: BLE001  (never torn: written by rename; a read may race the rename)
                pass
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the training finished before it could be killed"
    saved = torch.load(state, weights_only=False)["epoch"]
    assert 2 <= saved < 8
    assert not (tmp_path / "killed.pt").exists()
    resumed = run(state, tmp_path / "resumed-checkpoint.pt")
    assert f"continues after epoch {saved} of 8" in resumed
    assert whole.split("SHA")[1] == resumed.split("SHA")[1]
    assert not list(state.parent.glob("*.tmp"))


def test_the_validation_split_is_a_seeded_disjoint_part_of_the_training_split():
    from robustlens.train import split_validation

    keep, held = split_validation(100, 0.15, seed=3)
    assert len(held) == 15 and len(keep) == 85
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(100))
    again, held_again = split_validation(100, 0.15, seed=3)
    assert np.array_equal(held, held_again) and not np.array_equal(held, split_validation(100, 0.15, seed=4)[1])
    assert len(split_validation(10, 0.01, seed=0)[1]) == 1  # at least one validation sample
    with pytest.raises(ValueError, match="leaves no training sample of 2"):
        split_validation(2, 0.9, seed=0)


def _short_training(**extra):
    return {**TRAINING, "epochs": 4, "attack_steps": 2, **extra}


def test_a_validation_split_removes_its_samples_from_training_and_nothing_else(digits):
    """Training with a validation split (select: last) gives bit for bit the model trained
    without one on the remaining samples: validation never draws from the training's
    generators, and the held samples are really out of the training set."""
    from robustlens.train import split_validation, train_model
    from robustlens.zoo import build_architecture

    configure_torch(1)
    keep, held = split_validation(len(digits["x_train"]), 0.2, seed=1)
    models = []
    for with_validation in (True, False):
        torch.manual_seed(2)
        model = build_architecture(ARCH)
        kwargs = dict(validation={"select": "last"}, x_val=digits["x_train"][held], y_val=digits["y_train"][held]) if with_validation else {}
        history = train_model(model, digits["x_train"][keep], digits["y_train"][keep], eps=0.5, norm="l2", seed=2,
                              device=torch.device("cpu"), progress=False, **_short_training(), **kwargs)
        models.append(model)
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(a, b), name
    assert [row["selected"] for row in history] == [False, False, False, True]


def test_best_robust_val_keeps_the_epoch_with_the_highest_robust_validation_accuracy(digits):
    """Validated every 2 epochs (and at the last of 5): the history's robust validation accuracy
    at the selected epoch is the largest one (earliest of ties), and the returned model, attacked
    again with the same attack, has exactly that accuracy on the validation split."""
    from robustlens.train import robust_accuracy, split_validation, train_model
    from robustlens.zoo import build_architecture

    configure_torch(1)
    keep, held = split_validation(len(digits["x_train"]), 0.2, seed=0)
    xv, yv = digits["x_train"][held], digits["y_train"][held]
    torch.manual_seed(0)
    model = build_architecture(ARCH)
    history = train_model(model, digits["x_train"][keep], digits["y_train"][keep], eps=1.0, norm="l2", seed=0,
                          device=torch.device("cpu"), progress=False, validation={"select": "best_robust_val", "every": 2},
                          x_val=xv, y_val=yv, **_short_training(epochs=5, lr=0.2, attack_use_best=True))
    validated = [row for row in history if "val_robust_accuracy" in row]
    assert [row["epoch"] for row in validated] == [2, 4, 5]
    values = [row["val_robust_accuracy"] for row in validated]
    best = validated[int(np.argmax(values))]
    assert [row["epoch"] for row in history if row["selected"]] == [best["epoch"]]
    again = robust_accuracy(model, torch.as_tensor(xv), torch.as_tensor(yv), eps=1.0, norm="l2", steps=2, restarts=0,
                            seed=0, use_best=True)
    assert again == best["val_robust_accuracy"]
    clean = (model(torch.as_tensor(xv)).argmax(1).numpy() == yv).mean()
    assert clean == pytest.approx(best["val_clean_accuracy"])


def test_bf16_and_channels_last_training_keep_float32_weights_in_the_default_layout(digits):
    """precision bf16 changes the trained weights (the step ran under autocast) but not their
    dtype; channels_last training gives a model in the default layout whose weights equal fp32
    NCHW training up to the rounding of another summation order; the metrics record how the model was trained."""
    configure_torch(1)
    spec = {"id": "p", "arch": ARCH, "eps": 0.5, "norm": "l2", "seed": 1}
    short = {**TRAINING, "epochs": 1, "attack_steps": 2}
    runs = {}
    for name, compute in {"fp32": None, "bf16": {"precision": "bf16"}, "nhwc": {"channels_last": True}}.items():
        runs[name] = train_and_evaluate(spec, digits, short, EVALUATION, torch.device("cpu"), progress=False, compute=compute)
    fp32, bf16, nhwc = (runs[k][0].state_dict() for k in ("fp32", "bf16", "nhwc"))
    assert all(v.dtype == torch.float32 for k, v in bf16.items() if v.is_floating_point())
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32 if fp32[k].is_floating_point())
    assert all(v.is_contiguous() for v in nhwc.values())
    def distance(a, b):  # relative distance of the floating-point weights
        keys = [k for k in fp32 if fp32[k].is_floating_point()]
        return max(float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)) for k in keys)

    # NHWC convolutions sum in another order; over an epoch of 23 attacked steps that grows to
    # ~1 % (measured 0.0085), an order of magnitude below bf16's change (0.12)
    assert distance(nhwc, fp32) < 0.02 and distance(bf16, fp32) > 5 * distance(nhwc, fp32), (distance(nhwc, fp32), distance(bf16, fp32))
    assert runs["bf16"][1]["training_compute"] == {"precision": "bf16", "channels_last": False}
    assert runs["fp32"][1]["training_compute"] == {"precision": "fp32", "channels_last": False}


def test_streamed_training_equals_in_memory_training(digits, tmp_path):
    """training.stream reads each batch's rows from the dataset cache; on 8-bit images it gives
    bit for bit the model, history and metrics of training on the split held in memory (the
    same float32 values, batches, validation split and selection)."""
    from robustlens.data import load_dataset, save_dataset
    from robustlens.npz_rows import NpzRows

    configure_torch(1)
    as_uint8 = {k: (np.round(v * 255).astype(np.uint8) if k.startswith("x_") else v) for k, v in digits.items()}
    path = tmp_path / "digits8.npz"
    save_dataset(as_uint8, path)
    spec = {"id": "s", "arch": ARCH, "eps": 1.0, "norm": "l2", "seed": 3}
    training = _short_training(epochs=3, augment="crop_flip", validation={"fraction": 0.2, "select": "best_robust_val", "every": 1})
    evaluation = {**EVALUATION, "steps": 3, "restarts": 0}
    memory_model, memory_metrics = train_and_evaluate(spec, load_dataset(path), training, evaluation, torch.device("cpu"),
                                                      progress=False, resume_path=str(tmp_path / "a.pt"))
    test_only = load_dataset(path, "test")
    assert "x_train" not in test_only
    stream_model, stream_metrics = train_and_evaluate(spec, test_only, {**training, "stream": True}, evaluation, torch.device("cpu"),
                                                      progress=False, train_rows=NpzRows(path, "x_train"), resume_path=str(tmp_path / "b.pt"))
    for (name, a), b in zip(memory_model.state_dict().items(), stream_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert stream_metrics["history"] == memory_metrics["history"]
    assert stream_metrics["robust_accuracy"] == memory_metrics["robust_accuracy"]


def test_streamed_images_are_the_cache_rows_as_float(tmp_path):
    from robustlens.data import as_float, save_dataset
    from robustlens.npz_rows import NpzRows
    from robustlens.streaming import StreamedImages

    x = np.random.default_rng(0).integers(0, 256, (20, 3, 4, 4), dtype=np.uint8)
    save_dataset({"x_train": x, "y_train": np.zeros(20, np.int64)}, tmp_path / "d.npz")
    index = np.array([7, 3, 11, 0])
    images = StreamedImages(NpzRows(tmp_path / "d.npz", "x_train"), index, torch.device("cpu"))
    assert len(images) == 4
    expected = as_float(x[index])
    assert torch.equal(images[torch.tensor([2, 0])], torch.from_numpy(expected[[2, 0]]))
    assert torch.equal(images[1:3], torch.from_numpy(expected[1:3]))
    assert images[np.array([3])].dtype == torch.float32


def test_training_images_stored_larger_are_cropped_to_the_models_input(digits, tmp_path):
    """dataset.train_image_size: stored training images larger than the model's input. Without
    a random resized crop the model trains and validates on their centre crop: bit for bit the
    model trained on images stored at the input size, in memory and streamed."""
    from robustlens.data import load_dataset, save_dataset
    from robustlens.npz_rows import NpzRows

    configure_torch(1)
    as_uint8 = {k: (np.round(v * 255).astype(np.uint8) if k.startswith("x_") else v) for k, v in digits.items()}
    padded = {**as_uint8, "x_train": np.pad(as_uint8["x_train"], ((0, 0), (0, 0), (3, 3), (3, 3)), constant_values=7)}
    save_dataset(as_uint8, tmp_path / "plain.npz")
    save_dataset(padded, tmp_path / "padded.npz")
    spec = {"id": "c", "arch": ARCH, "eps": 0.5, "norm": "l2", "seed": 1}
    training = _short_training(epochs=2, validation={"fraction": 0.2, "select": "best_robust_val", "every": 1})
    evaluation = {**EVALUATION, "steps": 2, "restarts": 0}
    runs = [
        train_and_evaluate(spec, load_dataset(tmp_path / "plain.npz"), training, evaluation, torch.device("cpu"), progress=False),
        train_and_evaluate(spec, load_dataset(tmp_path / "padded.npz"), training, evaluation, torch.device("cpu"), progress=False,
                           input_size=16),
        train_and_evaluate(spec, load_dataset(tmp_path / "padded.npz", "test"), {**training, "stream": True}, evaluation,
                           torch.device("cpu"), progress=False, input_size=16, train_rows=NpzRows(tmp_path / "padded.npz", "x_train")),
    ]
    for model, metrics in runs[1:]:
        for (name, a), b in zip(runs[0][0].state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), name
        assert metrics["history"] == runs[0][1]["history"]


@pytest.mark.parametrize("augment", ["resized_crop_flip", "imagenet"])
def test_random_resized_crops_are_cut_at_the_models_input_size(augment):
    from robustlens.augment import augment_batch
    from robustlens.runtime import generator
    from robustlens.train import training_view

    x = torch.rand(4, 3, 20, 20, generator=generator(0))
    view = training_view(x, augment, generator(5), 12)
    assert view.shape == (4, 3, 12, 12)
    assert torch.equal(view, augment_batch(x, augment, generator(5), size=12))
    assert torch.equal(training_view(x, "none", generator(5), 12), x[..., 4:16, 4:16])  # the centre crop


def test_imagenet_resnets_trained_here_load_url_checkpoints_of_their_architecture():
    """The torchvision ResNets trained in the workflow have the modules of a url checkpoint of
    the same architecture (robustlens.sources.build_url), so the weights of one load into the
    other; ImageNet's normalisation is inside."""
    from robustlens.resnet import IMAGENET_MEAN, IMAGENET_STD
    from robustlens.sources import build_url
    from robustlens.zoo import build_architecture

    arch = {"name": "resnet18", "in_channels": 3, "num_classes": 10, "widths": [64, 128, 256, 512], "convs_per_block": 2}
    torch.manual_seed(0)
    trained = build_architecture(arch).eval()
    zoo = build_url({"id": "z", "arch": {"name": "resnet18", "num_classes": 10}, "dataset": "imagenet"}).eval()
    zoo.load_state_dict(trained.state_dict())
    x = torch.rand(2, 3, 40, 40)
    assert torch.equal(zoo(x), trained(x))
    assert trained.normalize.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    assert trained.normalize.std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    assert trained.representation_layers() == ["layer1", "layer2", "layer3", "layer4", "penultimate", "logits"]
    with pytest.raises(ValueError, match="stage widths"):
        build_architecture({**arch, "widths": [32, 64, 128, 256]})
