"""Classifier-head retraining (robustlens.heads), checked against computations written out here:
a hand replay of the documented fit (standardise with the training split's mean and standard
deviation, U(-1/sqrt(d), 1/sqrt(d)) init and batch order from ``seed``, minibatch SGD with
momentum 0.9, weight decay and a per-epoch cosine schedule, fold the standardisation back into
the weights), accuracies recomputed with numpy, and the documented errors and progress output."""

import math

import numpy as np
import pytest
import torch

import robustlens.head_training as head_training
from robustlens.activations import NonFiniteActivationError
from robustlens.head_training import fit_linear_head, retrain_heads
from robustlens.heads import head_logits

CPU = torch.device("cpu")


def replay_fit(features, labels, n_classes, *, seed, epochs, lr, weight_decay, batch_size):
    """The documented fit written out in float64 with hand-computed softmax gradients (the
    standardised features are rounded to float32 first, as the fit sees them)."""
    f = np.asarray(features, dtype=np.float64)
    mean, std = f.mean(axis=0), f.std(axis=0)
    std = np.where(std > 0, np.maximum(std, 0.01 * std.max()), 1.0)  # the documented floor: 1 % of the largest std
    x = torch.as_tensor((f - mean) / std, dtype=torch.float32).double().numpy()
    y = np.asarray(labels).astype(np.int64)
    n, d = x.shape
    gen = torch.Generator().manual_seed(int(seed))
    bound = 1 / math.sqrt(d)
    w = ((torch.rand((n_classes, d), generator=gen) * 2 - 1) * bound).double().numpy()
    b = ((torch.rand((n_classes,), generator=gen) * 2 - 1) * bound).double().numpy()
    buf_w = buf_b = None
    onehot = np.eye(n_classes)[y]
    for epoch in range(epochs):
        step_lr = lr * (1 + math.cos(math.pi * epoch / epochs)) / 2
        order = torch.randperm(n, generator=gen).numpy()
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            z = x[idx] @ w.T + b
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            r = (p - onehot[idx]) / len(idx)
            g_w = r.T @ x[idx] + weight_decay * w
            g_b = r.sum(axis=0) + weight_decay * b
            buf_w = g_w if buf_w is None else 0.9 * buf_w + g_w
            buf_b = g_b if buf_b is None else 0.9 * buf_b + g_b
            w = w - step_lr * buf_w
            b = b - step_lr * buf_b
    w_raw = w / std
    return w_raw, b - w_raw @ mean


def blobs(n_per_class=20, d=5, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    centres = 1.5 * rng.normal(size=(n_classes, d))
    features = rng.normal(size=(len(labels), d)) + centres[labels]
    return features, labels


@pytest.mark.parametrize("batch_size", [16, 7])
def test_fit_matches_hand_replay_of_sgd_with_momentum_decay_and_cosine_schedule(batch_size):
    """60 samples in batches of 16 (last one short) or 7: same weights as the hand replay, with
    weight decay large enough to matter and features of varied scale and offset (the 0.1-scaled
    one below 1 % of the 20-scaled one's std, so the floor applies)."""
    features, labels = blobs()
    features = features * np.array([0.1, 3.0, 1.0, 20.0, 0.5]) + np.array([5.0, -2.0, 0.0, 40.0, 1.0])
    kw = {"seed": 3, "epochs": 6, "lr": 0.2, "weight_decay": 0.05, "batch_size": batch_size}
    w, b = fit_linear_head(features, labels, 3, **kw)
    w_ref, b_ref = replay_fit(features, labels, 3, **kw)
    assert w.shape == (3, 5) and b.shape == (3,)
    assert w.dtype == np.float64 and b.dtype == np.float64
    np.testing.assert_allclose(w, w_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b, b_ref, rtol=1e-4, atol=1e-4)
    # the logits the fit optimised, in standardised units, are those of the folded-back head on raw features
    scale = np.maximum(features.std(0), 0.01 * features.std(0).max())
    z = (features - features.mean(0)) / scale
    np.testing.assert_allclose(head_logits(features, w, b), z @ (w * scale).T + (b + w @ features.mean(0)),
                               rtol=1e-9, atol=1e-9)


def test_fit_with_zero_epochs_returns_the_seeded_init_folded_back():
    """No SGD step: the standardised-space weights and bias are PyTorch's default Linear init,
    U(-1/sqrt(d), 1/sqrt(d)), drawn from ``seed`` (weight first, then bias)."""
    rng = np.random.default_rng(1)
    d, k = 4, 200
    features = rng.normal(size=(30, d)) * 3 + 2
    labels = np.arange(30) % k
    w, b = fit_linear_head(features, labels, k, seed=5, epochs=0, lr=0.1, weight_decay=0.0, batch_size=8)
    mean, std = features.mean(0), features.std(0)
    w_std, b_std = w * std, b + w @ mean  # back to standardised units
    gen = torch.Generator().manual_seed(5)
    bound = 1 / math.sqrt(d)
    np.testing.assert_allclose(w_std, ((torch.rand((k, d), generator=gen) * 2 - 1) * bound).double().numpy(), atol=1e-6)
    np.testing.assert_allclose(b_std, ((torch.rand((k,), generator=gen) * 2 - 1) * bound).double().numpy(), atol=1e-6)
    for values in (w_std, b_std):
        assert np.abs(values).max() <= bound + 1e-6
        assert values.min() < -0.8 * bound and values.max() > 0.8 * bound  # covers the whole interval


def test_constant_feature_column_is_left_unscaled_and_the_fit_stays_finite():
    """A feature with zero spread: standard deviation taken as 1 (so its weight is the
    standardised-space weight, only shrunk by weight decay), no NaN, and other columns fit as usual."""
    features, labels = blobs(d=4, seed=2)
    features = np.column_stack([features[:, :2], np.full(len(features), 7.0), features[:, 2:]])
    kw = {"seed": 0, "epochs": 5, "lr": 0.1, "weight_decay": 0.1, "batch_size": 16}
    w, b = fit_linear_head(features, labels, 3, **kw)
    assert np.isfinite(w).all() and np.isfinite(b).all()
    w_ref, b_ref = replay_fit(features, labels, 3, **kw)
    np.testing.assert_allclose(w, w_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b, b_ref, rtol=1e-4, atol=1e-4)
    # init weight of the constant column, decayed by the replayed factor only: independent of the data
    gen = torch.Generator().manual_seed(0)
    w0 = ((torch.rand((3, 5), generator=gen) * 2 - 1) / 2).double().numpy()[:, 2]
    assert np.all(np.abs(w[:, 2]) < np.abs(w0)) and np.all(np.sign(w[:, 2]) == np.sign(w0))


def test_float32_features_are_standardised_in_float64():
    """Penultimate features come as float32; mean and spread are taken in float64, so a large
    offset with a small spread (mean 3000, spread 0.05) is standardised as precisely as float64 allows."""
    features, labels = blobs(d=3, seed=4)
    features32 = (3000.0 + 0.05 * features).astype(np.float32)
    kw = {"seed": 2, "epochs": 5, "lr": 0.1, "weight_decay": 0.0, "batch_size": 16}
    w, b = fit_linear_head(features32, labels, 3, **kw)
    w_ref, b_ref = replay_fit(features32.astype(np.float64), labels, 3, **kw)
    f64 = features32.astype(np.float64)
    np.testing.assert_allclose(head_logits(f64, w, b), head_logits(f64, w_ref, b_ref), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w, w_ref, rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int64])
def test_labels_of_any_integer_dtype_are_accepted(dtype):
    """Labels read back from files may be int32 or uint8; the fit is the same as with int64."""
    features, labels = blobs(seed=5)
    kw = {"seed": 1, "epochs": 3, "lr": 0.1, "weight_decay": 0.01, "batch_size": 16}
    w, b = fit_linear_head(features, labels.astype(dtype), 3, **kw)
    w_ref, b_ref = replay_fit(features, labels, 3, **kw)
    np.testing.assert_allclose(w, w_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b, b_ref, rtol=1e-4, atol=1e-4)


def test_separable_problem_is_fitted_perfectly_and_seeds_differ():
    """Well separated classes: every seed's head classifies the training split perfectly; the
    seeds give different heads (different init and batch order)."""
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(4), 25)
    features = rng.normal(size=(100, 6)) * 0.3 + 4.0 * np.eye(4, 6)[labels] + 10.0
    kw = {"epochs": 10, "lr": 0.1, "weight_decay": 1e-4, "batch_size": 20}
    fits = [fit_linear_head(features, labels, 4, seed=s, **kw) for s in (0, 1)]
    for w, b in fits:
        assert np.all((features @ w.T + b).argmax(1) == labels)
    assert not np.allclose(fits[0][0], fits[1][0])


def test_head_logits_are_float64_affine_maps():
    rng = np.random.default_rng(7)
    features, w, b = rng.normal(size=(6, 4)), rng.normal(size=(3, 4)), rng.normal(size=3)
    expected = np.einsum("nd,kd->nk", features, w) + b
    for f_dtype, w_dtype in [(np.float32, np.float64), (np.longdouble, np.float64), (np.float64, np.longdouble),
                             (np.longdouble, np.longdouble)]:
        out = head_logits(features.astype(f_dtype), w.astype(w_dtype), b)
        assert out.dtype == np.float64, (f_dtype, w_dtype)
        np.testing.assert_allclose(out, features.astype(f_dtype).astype(np.float64) @ w.T + b, rtol=1e-12)
    np.testing.assert_allclose(head_logits(features, w, b), expected, rtol=1e-12)


class TinyNet(torch.nn.Module):
    """forward_features: tanh of a linear map; NaN features for inputs whose first value exceeds 1000."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Linear(4, 5)
        self.head = torch.nn.Linear(5, 3)

    def forward_features(self, x):
        x = x.flatten(1)
        out = torch.tanh(self.body(x))
        return torch.where(x[:, :1] > 1000, torch.full_like(out, float("nan")), out)

    def forward(self, x):
        return self.head(self.forward_features(x))

    def representation_modules(self):
        return {}


def tiny_dataset(seed=0):
    rng = np.random.default_rng(seed)
    y_train, y_test = np.repeat(np.arange(3), 20), np.repeat(np.arange(3), 8)
    centres = 2.0 * rng.normal(size=(3, 4))
    return {
        "x_train": (rng.normal(size=(60, 4)) + centres[y_train]).astype(np.float32), "y_train": y_train,
        "x_test": (rng.normal(size=(24, 4)) + centres[y_test]).astype(np.float32), "y_test": y_test,
    }


SETTINGS = {"seeds": [4, 9], "epochs": 4, "lr": 0.1, "weight_decay": 0.01, "batch_size": 16}


def test_retrain_heads_fits_one_head_per_seed_and_reports_their_accuracies():
    model, data = TinyNet(), tiny_dataset()
    out = retrain_heads(model, data, SETTINGS, CPU, progress=False)
    np.testing.assert_array_equal(out["seeds"], [4, 9])
    assert out["weight"].shape == (2, 3, 5) and out["bias"].shape == (2, 3)
    with torch.no_grad():
        f_train = model.forward_features(torch.as_tensor(data["x_train"])).numpy().astype(np.float64)
        f_test = model.forward_features(torch.as_tensor(data["x_test"])).numpy().astype(np.float64)
        original = model(torch.as_tensor(data["x_test"])).numpy().argmax(1)
    for k, seed in enumerate(SETTINGS["seeds"]):
        kw = {key: SETTINGS[key] for key in ("epochs", "lr", "weight_decay", "batch_size")}
        w_ref, b_ref = replay_fit(f_train, data["y_train"], 3, seed=seed, **kw)
        np.testing.assert_allclose(out["weight"][k], w_ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["bias"][k], b_ref, rtol=1e-4, atol=1e-4)
        w, b = out["weight"][k], out["bias"][k]
        assert out["train_accuracy"][k] == pytest.approx(np.mean((f_train @ w.T + b).argmax(1) == data["y_train"]))
        assert out["test_accuracy"][k] == pytest.approx(np.mean((f_test @ w.T + b).argmax(1) == data["y_test"]))
    assert float(out["original_test_accuracy"]) == pytest.approx(np.mean(original == data["y_test"]))


def test_retrain_heads_passes_its_device_to_extraction_and_fitting(monkeypatch):
    """The device argument reaches both feature extractions and every head fit."""
    seen = []
    real_extract, real_fit = head_training.extract_activations, head_training.fit_linear_head

    def extract(*args, **kwargs):
        seen.append(("extract", kwargs.get("device")))
        return real_extract(*args, **kwargs)

    def fit(*args, **kwargs):
        seen.append(("fit", kwargs.get("device")))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(head_training, "extract_activations", extract)
    monkeypatch.setattr(head_training, "fit_linear_head", fit)
    device = torch.device("cpu")
    retrain_heads(TinyNet(), tiny_dataset(), SETTINGS, device, progress=False)
    assert seen == [("extract", device), ("extract", device), ("fit", device), ("fit", device)]


def test_retrain_heads_shows_progress_by_default_and_not_when_disabled(capsys):
    model, data = TinyNet(), tiny_dataset()
    retrain_heads(model, data, SETTINGS, CPU, progress=False)
    assert capsys.readouterr().err == ""
    retrain_heads(model, data, SETTINGS, CPU)
    err = capsys.readouterr().err
    assert "features train:" in err and "features test:" in err


@pytest.mark.parametrize("split", ["x_train", "x_test"])
def test_non_finite_features_raise_naming_the_model_or_the_split(split):
    """NaN penultimate features stop retraining with NonFiniteActivationError naming the model
    id, or, without one, the split's extraction ("features train" / "features test")."""
    data = tiny_dataset()
    data[split][3, 0] = 1e4
    with pytest.raises(NonFiniteActivationError, match="model net-7"):
        retrain_heads(TinyNet(), data, SETTINGS, CPU, progress=False, model_id="net-7")
    name = "features train" if split == "x_train" else "features test"
    with pytest.raises(NonFiniteActivationError, match=f"^{name}: layer penultimate") as info:
        retrain_heads(TinyNet(), data, SETTINGS, CPU, progress=False)
    assert "model" not in str(info.value).split(":")[0]
