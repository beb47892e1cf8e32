"""Probes and classifier heads on a small trained model: inversion lowers its loss, adversarial
probes succeed inside their ball, retrained heads match a logistic regression."""

import numpy as np
import pytest
import torch

from robustlens.head_training import fit_linear_head, retrain_heads
from robustlens.heads import head_logits
from robustlens.probes import adversarial_probe, draw_inversion_pairs, inverted_probe, probe_dataset
from robustlens.runtime import configure_torch
from robustlens.train import train_and_evaluate

ARCH = {"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [8, 16, 32], "convs_per_block": 1}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model(digits):
    configure_torch(1)
    training = {"epochs": 4, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "attack_steps": 3}
    evaluation = {"eps": [0.5], "norm": "l2", "steps": 20, "restarts": 1, "seed": 0}
    spec = {"id": "m", "arch": ARCH, "eps": 0.5, "norm": "l2", "seed": 0}
    return train_and_evaluate(spec, digits, training, evaluation, CPU, progress=False)[0]


def test_inversion_lowers_its_loss(model, digits):
    probe = inverted_probe(model, digits["x_test"], digits["y_test"], n_samples=24, iterations=30, step_size=0.1,
                           momentum=0.9, seed=0, device=CPU, progress=False)
    assert probe["final_loss"].mean() < 0.5 * probe["initial_loss"].mean()
    assert probe["images"].min() >= 0 and probe["images"].max() <= 1
    # every start image is of another class than its target
    labels = digits["y_test"]
    assert (labels[probe["start_index"]] != labels[probe["target_index"]]).all()


def test_inversion_pairs_are_fixed_by_seed():
    labels = np.repeat(np.arange(5), 10)
    a, b = draw_inversion_pairs(labels, 12, seed=3), draw_inversion_pairs(labels, 12, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert len(np.unique(a[0])) == 12


def test_adversarial_probe_stays_in_ball_and_lowers_accuracy(model, digits):
    x, y = digits["x_test"][:120], digits["y_test"][:120]
    probe = adversarial_probe(model, x, y, norm="l2", eps=1.0, steps=10, step_size=None, random_start=True, seed=0,
                              device=CPU, progress=False)
    norms = np.linalg.norm((probe["images"] - x).reshape(len(x), -1), axis=1)
    assert norms.max() <= 1.0 + 1e-5
    with torch.no_grad():
        clean = (model(torch.as_tensor(x)).argmax(1).numpy() == y).mean()
    assert probe["robust_accuracy"] < clean and 0 < probe["success_rate"] <= 1
    ds = probe_dataset(probe)
    assert ds.attrs["success_rate"] == pytest.approx(probe["success_rate"])


def test_retrained_heads_match_logistic_regression(model, digits):
    """Heads retrained by SGD reach the test accuracy of scikit-learn's logistic regression on
    the same frozen features within a few points."""
    from sklearn.linear_model import LogisticRegression

    from robustlens.activations import extract_activations

    settings = {"seeds": [0, 1], "epochs": 30, "lr": 0.05, "weight_decay": 5e-4, "batch_size": 128}
    heads = retrain_heads(model, digits, settings, CPU, progress=False)
    train = extract_activations(model, digits["x_train"], ["penultimate"], progress=False)["penultimate"]
    test = extract_activations(model, digits["x_test"], ["penultimate"], progress=False)["penultimate"]
    reference = LogisticRegression(max_iter=2000).fit(train, digits["y_train"]).score(test, digits["y_test"])
    assert np.all(np.abs(heads["test_accuracy"] - reference) < 0.04), (heads["test_accuracy"], reference)
    # the reported accuracies are those the stored weights give, features taken from the model itself
    with torch.no_grad():
        train_features = model.forward_features(torch.as_tensor(digits["x_train"])).double().numpy()
        test_features = model.forward_features(torch.as_tensor(digits["x_test"])).double().numpy()
        original = model(torch.as_tensor(digits["x_test"])).argmax(1).numpy()
    for k in range(2):
        w, b = heads["weight"][k], heads["bias"][k]
        assert heads["test_accuracy"][k] == pytest.approx(np.mean((test_features @ w.T + b).argmax(1) == digits["y_test"]))
        assert heads["train_accuracy"][k] == pytest.approx(np.mean((train_features @ w.T + b).argmax(1) == digits["y_train"]))
    assert heads["original_test_accuracy"] == pytest.approx(np.mean(original == digits["y_test"]))
    np.testing.assert_allclose(head_logits(test_features[:5], w, b), test_features[:5] @ w.T + b, rtol=1e-12)
    assert not np.allclose(heads["weight"][0], heads["weight"][1])  # seeds give different heads


def test_fitted_head_applies_to_raw_features_of_any_scale_and_offset():
    """The head is fitted on standardised features and folded back to raw ones, so features
    scaled and shifted per column (a > 0, the scales within the factor 100 of the standard
    deviation floor) give the same standardised fit, hence the same logits on the
    correspondingly transformed inputs; at a large offset and a small scale (mean 100, spread
    0.1) the classes stay separated, as they are in standardised units."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 40)
    features = rng.normal(size=(120, 4)) + 3.0 * np.eye(3, 4)[labels]
    a, c = np.array([0.1, 2.0, 0.5, 5.0]), np.array([100.0, -3.0, 0.0, 7.0])
    kw = {"seed": 1, "epochs": 20, "lr": 0.1, "weight_decay": 0.0, "batch_size": 32}
    w, b = fit_linear_head(features, labels, 3, **kw)
    w2, b2 = fit_linear_head(features * a + c, labels, 3, **kw)
    np.testing.assert_allclose((features * a + c) @ w2.T + b2, features @ w.T + b, rtol=1e-4, atol=1e-4)
    assert np.mean(((features * a + c) @ w2.T + b2).argmax(1) == labels) > 0.9


def test_adversarial_probe_reports_the_success_and_accuracy_of_its_images(model, digits):
    """robust accuracy: the model's accuracy on the returned images; success rate: the inputs
    classified correctly before and wrongly after, over those classified correctly before."""
    x, y = digits["x_test"][:150], digits["y_test"][:150]
    probe = adversarial_probe(model, x, y, norm="linf", eps=0.1, steps=5, step_size=None, random_start=False, seed=0,
                              device=CPU, progress=False)
    with torch.no_grad():
        before = model(torch.as_tensor(x)).argmax(1).numpy() == y
        after = model(torch.as_tensor(probe["images"])).argmax(1).numpy() == y
    assert probe["robust_accuracy"] == pytest.approx(after.mean())
    assert probe["success_rate"] == pytest.approx((before & ~after).sum() / before.sum())
    assert 0 < probe["success_rate"] < 1 and before.mean() < 1  # the two denominators differ
    np.testing.assert_array_equal(probe["labels"], y)
    assert np.abs(probe["images"] - x).max() == pytest.approx(0.1, abs=1e-6)


def test_inversion_follows_normalised_gradient_steps_with_momentum(model, digits):
    """Two iterations replayed by hand: loss ||g(x) - g(t)|| / ||g(t)|| with g the penultimate
    features, x <- clip(x - s v), v <- m v + grad / ||grad|| (Engstrom et al. 2019); the
    returned losses are that loss at the start image and at the result, the labels the targets'."""
    x, y = digits["x_test"], digits["y_test"]
    step, m = 0.1, 0.9
    probe = inverted_probe(model, x, y, n_samples=6, iterations=2, step_size=step, momentum=m, seed=4,
                           device=CPU, progress=False)

    def loss(images, target):
        g, t = model.forward_features(images).flatten(1), model.forward_features(target).flatten(1)
        return torch.linalg.vector_norm(g - t, dim=1) / torch.linalg.vector_norm(t, dim=1)

    start, target = torch.as_tensor(x[probe["start_index"]]), torch.as_tensor(x[probe["target_index"]])
    images, velocity = start.clone(), torch.zeros_like(start)
    for _ in range(2):
        images.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(images, target).sum(), images)
        norms = torch.linalg.vector_norm(grad.flatten(1), dim=1).view(-1, 1, 1, 1)
        velocity = m * velocity + grad / norms
        images = (images.detach() - step * velocity).clamp(0, 1)
    np.testing.assert_allclose(probe["images"], images.numpy(), atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(probe["initial_loss"], loss(start, target).numpy(), rtol=1e-5)
        np.testing.assert_allclose(probe["final_loss"], loss(images, target).numpy(), rtol=1e-4)
    np.testing.assert_array_equal(probe["labels"], y[probe["target_index"]])


# --------------------------------------------------------------------------- batching and the inversion figure


def test_probes_in_batches_equal_one_batch(model, digits):
    """Attack and inversion are per image (random start seeded per image; per-sample loss,
    normalised gradient and momentum): batches of 7 give the images of one batch."""
    x, y = digits["x_test"][:30], digits["y_test"][:30]
    adv = {"norm": "l2", "eps": 1.0, "steps": 4, "step_size": None, "random_start": True, "seed": 3}
    one = adversarial_probe(model, x, y, **adv, device=CPU, batch_size=30, progress=False)
    parts = adversarial_probe(model, x, y, **adv, device=CPU, batch_size=7, progress=False)
    np.testing.assert_allclose(parts["images"], one["images"], atol=1e-6, rtol=0)
    assert parts["robust_accuracy"] == one["robust_accuracy"]
    assert np.abs(one["images"] - x).max() > 0.05
    inv = {"n_samples": 17, "iterations": 5, "step_size": 0.1, "momentum": 0.9, "seed": 0}
    one = inverted_probe(model, x, y, **inv, device=CPU, batch_size=None, progress=False)
    parts = inverted_probe(model, x, y, **inv, device=CPU, batch_size=5, progress=False)
    for key in ("images", "initial_loss", "final_loss"):
        np.testing.assert_allclose(parts[key], one[key], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(parts["target_index"], one["target_index"])


def test_make_probe_runs_in_the_configured_batches(model, digits, monkeypatch):
    import robustlens.probes as probes

    seen = []
    original = probes.invert_representation
    monkeypatch.setattr(probes, "invert_representation", lambda m, s, t, **kw: seen.append(len(s)) or original(m, s, t, **kw))
    settings = {"split": "test", "n_samples": 11, "iterations": 1, "step_size": 0.1, "momentum": 0.9, "seed": 0, "batch_size": 4}
    probes.make_probe("inverted", model, digits["x_test"], digits["y_test"], settings, CPU, progress=False)
    assert seen == [4, 4, 3]


def _imshow_calls(monkeypatch):
    import matplotlib.axes

    calls = []
    original = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda self, img, **kw: calls.append((np.asarray(img), kw)) or original(self, img, **kw))
    return calls


@pytest.mark.parametrize("channels", [1, 3])
def test_inversion_figure_draws_rgb_in_colour_and_one_channel_in_grey(tmp_path, monkeypatch, channels):
    from robustlens.plots.probes import plot_inversions

    rng = np.random.default_rng(0)
    x = rng.random((10, channels, 5, 5)).astype(np.float32)
    inverted = rng.random((4, channels, 5, 5)).astype(np.float32) * 1.2 - 0.1  # a little outside [0, 1]
    probe = probe_dataset({"images": inverted, "labels": np.arange(4), "target_index": np.array([0, 2, 4, 6]),
                           "start_index": np.array([1, 3, 5, 7]), "initial_loss": np.ones(4), "final_loss": np.full(4, 0.5)})
    calls = _imshow_calls(monkeypatch)
    plot_inversions({"x_test": x}, {"m": probe}, [str(tmp_path / "inv.png")], {"width": 4, "height": 3}, 50, n_examples=4)
    assert len(calls) == 12 and (tmp_path / "inv.png").stat().st_size > 0
    # column j: start, target, inverted image of inversion j, each as (y, x, channels) or (y, x)
    for j in range(4):
        for k, expected in enumerate((x[1 + 2 * j], x[2 * j], np.clip(inverted[j], 0, 1))):
            img, kw = calls[3 * j + k]
            if channels == 3:
                np.testing.assert_array_equal(img, expected.transpose(1, 2, 0))
                assert "cmap" not in kw
            else:
                np.testing.assert_array_equal(img, expected[0])
                assert kw["cmap"] == "gray" and (kw["vmin"], kw["vmax"]) == (0, 1)


def test_make_probe_passes_every_setting_through(model, digits):
    """The adversarial probe of ``make_probe`` is PGD with the config's norm, eps, steps, step
    size, random start and seed (per-image generators), in the config's batches; the inverted
    one inverts the pairs its seed draws. Each setting changed alone changes the probe."""
    from robustlens.attacks import example_generators, pgd_attack
    from robustlens.probes import make_probe

    x, y = digits["x_test"][:20], digits["y_test"][:20]
    adv = {"norm": "linf", "eps": 0.1, "steps": 3, "step_size": 0.04, "random_start": True, "seed": 5, "batch_size": 7}
    probe = make_probe("adversarial", model, x, y, adv, CPU, progress=False)
    expected = pgd_attack(model, torch.as_tensor(x), torch.as_tensor(y), 0.1, "linf", steps=3, step_size=0.04,
                          random_init=True, gen=example_generators(5, 0, 20))
    np.testing.assert_allclose(probe["images"], expected.numpy(), atol=1e-6, rtol=0)
    for key, other in (("norm", "l2"), ("eps", 0.05), ("steps", 2), ("step_size", 0.02), ("random_start", False), ("seed", 6)):
        changed = make_probe("adversarial", model, x, y, {**adv, key: other}, CPU, progress=False)
        assert not np.allclose(changed["images"], probe["images"]), key

    inv = {"n_samples": 5, "iterations": 2, "step_size": 0.1, "momentum": 0.9, "seed": 3, "batch_size": 2}
    probe = make_probe("inverted", model, x, y, inv, CPU, progress=False)
    np.testing.assert_array_equal(probe["target_index"], draw_inversion_pairs(y, 5, 3)[0])
    direct = inverted_probe(model, x, y, n_samples=5, iterations=2, step_size=0.1, momentum=0.9, seed=3, device=CPU, progress=False)
    np.testing.assert_allclose(probe["images"], direct["images"], atol=1e-6)
    for key, other in (("iterations", 3), ("step_size", 0.2), ("momentum", 0.5), ("seed", 4)):
        changed = make_probe("inverted", model, x, y, {**inv, key: other}, CPU, progress=False)
        assert not np.allclose(changed["images"], probe["images"]), key
    with pytest.raises(ValueError, match="unknown probe 'natural'; known: adversarial, inverted"):
        make_probe("natural", model, x, y, inv, CPU, progress=False)


def test_probe_dataset_layout():
    rng = np.random.default_rng(0)
    images = rng.random((4, 1, 3, 3)).astype(np.float32)
    inverted = {"images": images, "labels": np.array([2, 0, 1, 2]), "target_index": np.array([5, 1, 7, 9]),
                "start_index": np.array([0, 3, 2, 4]), "initial_loss": np.array([1.0, 0.9, 0.8, 0.7]),
                "final_loss": np.array([0.2, 0.1, 0.3, 0.4])}
    ds = probe_dataset(inverted)
    assert ds["images"].dims == ("sample", "channel", "y", "x")
    np.testing.assert_array_equal(ds["images"].values, images)
    np.testing.assert_array_equal(ds["sample"].values, np.arange(4))
    np.testing.assert_array_equal(ds["label"].values, [2, 0, 1, 2])
    for key in ("target_index", "start_index", "initial_loss", "final_loss"):
        assert ds[key].dims == ("sample",)
        np.testing.assert_array_equal(ds[key].values, inverted[key])
    assert "success_rate" not in ds.attrs
    adversarial = probe_dataset({"images": images, "labels": np.zeros(4, int), "success_rate": 0.25, "robust_accuracy": 0.5})
    assert adversarial.attrs["success_rate"] == 0.25 and adversarial.attrs["robust_accuracy"] == 0.5
    assert set(adversarial.data_vars) == {"images"}


def test_inversion_pairs_start_from_another_class_and_cover_every_target_once():
    labels = np.repeat(np.arange(4), 6)
    targets, starts = draw_inversion_pairs(labels, 10, seed=0)
    assert len(targets) == 10 and len(set(targets)) == 10 and np.all(np.diff(targets) > 0)
    assert np.all(labels[starts] != labels[targets])
    assert not np.array_equal(draw_inversion_pairs(labels, 10, seed=1)[0], targets)
    assert len(draw_inversion_pairs(labels, 100, seed=0)[0]) == 24  # at most every image once
