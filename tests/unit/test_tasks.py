"""Downstream tasks: sprite encodings against the shapes' symmetries, corruptions against closed
forms, and task splits that are disjoint and fixed by their seed."""

from __future__ import annotations

import numpy as np
import pytest

from robustlens.splits import random_split
from robustlens.sprites import FACTOR_NAMES, SHAPE_NAMES, SHAPE_SYMMETRY, generate_shapes, orientation_target, render_sprite
from robustlens.tasks import GAUSSIAN_NOISE_SIGMA, center_zoom, corrupt, make_task, parse_task, zoom_blur, zoom_factors

SETTINGS = {"heldout": {"test_fraction": 0.5, "split_seed": 0, "noise_seed": 0}, "shapes": {"n_samples": 80, "test_fraction": 0.25, "seed": 3}}


@pytest.fixture(scope="module")
def fake_dataset():
    """A stand-in for the study's dataset: 10 classes, 12 held-out images each (16x16)."""
    rng = np.random.default_rng(0)
    y_test = np.repeat(np.arange(10), 12)
    return {
        "x_train": rng.uniform(size=(50, 1, 16, 16)).astype(np.float32),
        "y_train": rng.integers(0, 10, 50),
        "x_test": rng.uniform(size=(120, 1, 16, 16)).astype(np.float32),
        "y_test": y_test,
    }


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_orientation_encoding_is_invariant_under_the_symmetry_rotation(shape):
    k = SHAPE_SYMMETRY[shape]
    theta = np.linspace(0, 2 * np.pi, 7, endpoint=False) + 0.1
    np.testing.assert_allclose(orientation_target(theta + 2 * np.pi / k, k), orientation_target(theta, k), atol=1e-12)
    # and the encoding separates orientations the shape can tell apart: theta + pi/k maps to
    # the opposite point of the circle
    np.testing.assert_allclose(orientation_target(theta + np.pi / k, k), -orientation_target(theta, k), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_rendered_sprite_has_exactly_the_symmetry_order_k(shape):
    """Rotating by 2*pi/k leaves the image unchanged (up to boundary samples); rotating by half
    of that does not, so k is the shape's order and the encoding cannot alias two looks."""
    k = SHAPE_SYMMETRY[shape]
    args = dict(scale=1.0, pos_x=0.5, pos_y=0.5, size=32, supersample=4)
    base = render_sprite(shape, theta=0.3, **args)
    same = render_sprite(shape, theta=0.3 + 2 * np.pi / k, **args)
    half = render_sprite(shape, theta=0.3 + np.pi / k, **args)
    assert base.sum() > 20  # a visible sprite
    assert np.abs(same - base).mean() < 2e-3
    assert np.abs(half - base).mean() > 20 * max(np.abs(same - base).mean(), 1e-4)


def test_sprite_is_centred_at_its_position():
    """Image coordinates: x to the right, y down, both in [0, 1] of the image."""
    img = render_sprite("square", scale=0.6, pos_x=0.35, pos_y=0.6, theta=0.0, size=40, supersample=4)
    rows, cols = np.indices(img.shape)
    cy, cx = (img * (rows + 0.5)).sum() / img.sum(), (img * (cols + 0.5)).sum() / img.sum()
    assert cx / 40 == pytest.approx(0.35, abs=0.01)
    assert cy / 40 == pytest.approx(0.6, abs=0.01)


def test_generated_factors_match_their_ranges_and_encoding():
    data = generate_shapes(200, 16, seed=1)
    f = data["factors"]
    assert data["images"].shape == (200, 1, 16, 16) and data["images"].dtype == np.float32
    assert f.shape == (200, len(FACTOR_NAMES))
    assert (f[:, 0] >= 0.5).all() and (f[:, 0] <= 1).all()
    assert (f[:, 1:3] >= 0.3).all() and (f[:, 1:3] <= 0.7).all()
    np.testing.assert_allclose(f[:, 3] ** 2 + f[:, 4] ** 2, 1.0, atol=1e-6)
    k = np.array([SHAPE_SYMMETRY[SHAPE_NAMES[i]] for i in data["labels"]])
    np.testing.assert_allclose(f[:, 3], np.cos(k * data["theta"]), atol=1e-6)
    assert set(data["labels"]) == set(range(len(SHAPE_NAMES)))
    again = generate_shapes(200, 16, seed=1)
    assert np.array_equal(again["images"], data["images"]) and np.array_equal(again["factors"], f)
    assert not np.array_equal(generate_shapes(200, 16, seed=2)["factors"], f)


def test_center_zoom_matches_the_bilinear_closed_form_on_a_ramp():
    """A horizontal ramp f(i, j) = j zoomed by z about the centre is ((j + 0.5 - w/2)/z + w/2 - 0.5)
    wherever no clipping happens."""
    w, z = 16, 1.25
    ramp = np.tile(np.arange(w, dtype=np.float64), (w, 1))
    out = center_zoom(ramp, z)
    expected = (np.arange(w) + 0.5 - w / 2) / z + w / 2 - 0.5
    np.testing.assert_allclose(out[5], expected, atol=1e-12)
    np.testing.assert_allclose(center_zoom(ramp, 1.0), ramp, atol=1e-12)


def test_zoom_blur_factors_and_constant_images():
    # Hendrycks & Dietterich's CIFAR-10-C zooms: arange(1, 1.06 .. 1.26, 0.01)
    assert len(zoom_factors(1)) == 6 and len(zoom_factors(5)) == 26
    np.testing.assert_allclose(zoom_factors(5)[[0, -1]], [1.0, 1.25])
    constant = np.full((3, 1, 16, 16), 0.4, dtype=np.float32)
    np.testing.assert_allclose(zoom_blur(constant, 5), 0.4, atol=1e-6)


def test_gaussian_noise_has_the_severity_sigma_and_is_reproducible():
    gray = np.full((64, 1, 16, 16), 0.5, dtype=np.float32)  # far from the clipping range
    for severity in (1, 5):
        noisy = corrupt(gray, "gaussian_noise", severity, seed=0)
        assert (noisy - 0.5).std() == pytest.approx(GAUSSIAN_NOISE_SIGMA[severity - 1], rel=0.03)
        assert np.array_equal(noisy, corrupt(gray, "gaussian_noise", severity, seed=0))
    assert not np.array_equal(corrupt(gray, "gaussian_noise", 1, seed=0), corrupt(gray, "gaussian_noise", 1, seed=1))


@pytest.mark.parametrize("name", ["heldout", "heldout-gaussian_noise-2", "heldout-zoom_blur-5", "shapes", "shapes-factors"])
def test_task_splits_are_disjoint_complete_and_fixed_by_the_seed(fake_dataset, name):
    task = make_task(name, SETTINGS, 16, fake_dataset)
    train, test = task["index_train"], task["index_test"]
    n = 120 if name.startswith("heldout") else 80
    assert not set(train) & set(test) and len(train) + len(test) == n
    assert len(task["x_train"]) == len(train) and len(task["x_test"]) == len(test)
    again = make_task(name, SETTINGS, 16, fake_dataset)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(task[key], again[key]), key
    other = {**SETTINGS, "heldout": {**SETTINGS["heldout"], "split_seed": 1}, "shapes": {**SETTINGS["shapes"], "seed": 4}}
    assert not np.array_equal(make_task(name, other, 16, fake_dataset)["index_test"], test)
    assert str(task["kind"]) == parse_task(name)["kind"]
    expected_outputs = {"shapes": len(SHAPE_NAMES), "shapes-factors": len(FACTOR_NAMES)}.get(name, 10)
    assert int(task["n_outputs"]) == expected_outputs


def test_heldout_tasks_are_the_held_out_images_with_one_shared_split(fake_dataset):
    clean = make_task("heldout", SETTINGS, 16, fake_dataset)
    blurred = make_task("heldout-zoom_blur-1", SETTINGS, 16, fake_dataset)
    np.testing.assert_array_equal(clean["x_test"], fake_dataset["x_test"][clean["index_test"]])
    np.testing.assert_array_equal(clean["index_test"], blurred["index_test"])  # paired across severities
    assert not np.array_equal(clean["x_test"], blurred["x_test"])
    # stratified: every class keeps half its images in the test part
    assert np.bincount(clean["y_test"], minlength=10).tolist() == [6] * 10


def test_random_split_is_disjoint():
    train, test = random_split(10, 0.3, seed=0)
    assert len(test) == 3 and sorted(np.concatenate([train, test]).tolist()) == list(range(10))


@pytest.mark.parametrize("bad", ["digit", "digits", "heldout-gaussian_noise-6", "heldout-fog-1", "cifar10-zoom_blur-0", "svhn", "shapes-scale", ""])
def test_unknown_task_names_are_rejected(bad):
    with pytest.raises(ValueError, match="unknown task"):
        parse_task(bad)


# --------------------------------------------------------------------------- dataset sources


def _torchvision_cifar(root, source, train, monkeypatch):
    """(images CHW uint8, labels) of a made CIFAR split read by torchvision's own class."""
    import torchvision

    cls = getattr(torchvision.datasets, source.upper())
    monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    data = cls(str(root / source), train=train)
    return data.data.transpose(0, 3, 1, 2), np.asarray(data.targets)


@pytest.mark.parametrize("source,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_tasks_are_the_datasets_own_splits_at_their_own_size(tmp_path, monkeypatch, source, classes):
    """A CIFAR task: torchvision's training split as the task's training part and its test split
    as the test part, 8-bit at 32 px whatever the study's image size, every image paired with
    its own label; capped splits are stratified subsets of them."""
    from rehearsal.make_inputs import make_cifar

    make_cifar(tmp_path, source, n_train=200, n_test=100, seed=5)
    task = make_task(source, {source: {}}, 16, root=tmp_path)
    for part, train in (("train", True), ("test", False)):
        images, labels = _torchvision_cifar(tmp_path, source, train, monkeypatch)
        assert task[f"x_{part}"].dtype == np.uint8 and task[f"x_{part}"].shape == images.shape
        np.testing.assert_array_equal(task[f"x_{part}"], images)
        np.testing.assert_array_equal(task[f"y_{part}"], labels)
    assert int(task["n_outputs"]) == classes and str(task["kind"]) == "classification"

    capped = make_task(source, {source: {"max_train": 100, "max_test": 50, "seed": 1}}, 16, root=tmp_path)
    images, labels = _torchvision_cifar(tmp_path, source, True, monkeypatch)
    by_bytes = {img.tobytes(): lab for img, lab in zip(images, labels)}
    assert len(capped["x_train"]) == 100 and len(capped["x_test"]) == 50
    assert all(by_bytes[img.tobytes()] == lab for img, lab in zip(capped["x_train"], capped["y_train"]))
    if source == "cifar10":  # stratified: 10 of each class
        assert np.bincount(capped["y_train"], minlength=10).tolist() == [10] * 10


def test_corrupted_dataset_tasks_stay_8_bit_with_the_severity_noise(tmp_path):
    from rehearsal.make_inputs import make_cifar

    make_cifar(tmp_path, "cifar10", n_train=100, n_test=50, seed=6)
    clean = make_task("cifar10", {"cifar10": {}}, 16, root=tmp_path)
    noisy = make_task("cifar10-gaussian_noise-5", {"cifar10": {"noise_seed": 2}}, 16, root=tmp_path)
    assert noisy["x_train"].dtype == np.uint8
    np.testing.assert_array_equal(noisy["y_test"], clean["y_test"])
    diff = noisy["x_test"].astype(float) - clean["x_test"].astype(float)
    inside = (clean["x_test"] > 60) & (clean["x_test"] < 195)  # 2.5 sigma from the clipping range
    # N(0, 0.10) on [0, 1] rounded to 1/255: the std of the difference is sqrt(25.5^2 + 1/12) levels
    assert diff[inside].std() == pytest.approx(np.hypot(0.10 * 255, np.sqrt(1 / 12)), rel=0.05)
    assert np.abs(diff[inside].mean()) < 0.3  # rounded, not truncated (-0.5 levels)


def test_the_old_task_name_digits_is_refused_with_its_new_name():
    with pytest.raises(ValueError, match="now called 'heldout': use 'heldout-zoom_blur-2'"):
        parse_task("digits-zoom_blur-2")
    assert parse_task("cifar100-zoom_blur-3") == {"name": "cifar100-zoom_blur-3", "source": "cifar100",
                                                  "corruption": "zoom_blur", "severity": 3, "kind": "classification"}


def test_an_image_folder_task_with_its_own_class_list(tmp_path):
    """An imagefolder task (one of Salman et al.'s other sets, say): its own class list fixes
    labels and head width; images at the task's image_size as the evaluation transform gives."""
    from rehearsal.make_inputs import make_imagefolder

    classes = ["daisy", "rose", "tulip"]
    make_imagefolder(tmp_path / "flowers", classes, n_train_per_class=3, n_val_per_class=2, seed=0)
    (tmp_path / "flowers.txt").write_text("\n".join(classes) + "\n")
    settings = {"imagefolder": {"root": str(tmp_path / "flowers"), "classes": str(tmp_path / "flowers.txt"), "num_classes": 3,
                                "image_size": 20}}
    task = make_task("imagefolder", settings, 16)
    assert task["x_train"].shape == (9, 3, 20, 20) and task["x_test"].shape == (6, 3, 20, 20)
    assert int(task["n_outputs"]) == 3 and sorted(set(task["y_test"].tolist())) == [0, 1, 2]


def test_corrupted_splits_draw_different_noise(tmp_path):
    from rehearsal.make_inputs import make_cifar

    make_cifar(tmp_path, "cifar10", n_train=60, n_test=60, seed=7)
    clean = make_task("cifar10", {"cifar10": {}}, 16, root=tmp_path)
    noisy = make_task("cifar10-gaussian_noise-3", {"cifar10": {}}, 16, root=tmp_path)
    noise_train = noisy["x_train"].astype(float) - clean["x_train"]
    noise_test = noisy["x_test"].astype(float) - clean["x_test"]
    assert abs(np.corrcoef(noise_train.ravel(), noise_test.ravel())[0, 1]) < 0.05
