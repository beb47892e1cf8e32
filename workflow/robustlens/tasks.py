"""Downstream tasks of the transfer study (Salman et al. 2020; Nern et al.).

Every task is one ``.npz`` file with ``x_train, y_train, x_test, y_test`` (images of shape
(n, channels, size, size): float32 in [0, 1], or uint8 for 8-bit sources, read back as float32
by :func:`robustlens.data.load_dataset`), its ``kind`` (``classification``: integer labels;
``regression``: float targets of shape (n, k)), ``n_outputs`` (classes or targets: the width
of the task's head), ``target_names``, and the indices of the split (``index_train``,
``index_test``, into the task's source images; for dataset sources, positions in the prepared
splits). Images keep the task's own resolution: the transfer job resizes them to the model's
input on the device (:mod:`robustlens.transfer`), never on disk. Tasks are named:

- ``heldout``: the study's held-out split, i.e. the test split of the study's dataset, which no
  model was trained on, split again (stratified, ``heldout.split_seed``) into the task's own
  train and test parts: the in-distribution reference (Nern et al., Table 4: CIFAR-100 to
  CIFAR-100). (Called ``digits`` before 2026-12; the old name is refused with a hint.)
- ``cifar10``, ``cifar100``, ``fashion_mnist``, ``imagefolder``: a dataset the workflow reads
  (:mod:`robustlens.data`) with its own train/test split, as Salman et al. transfer ImageNet
  models to CIFAR-10 and CIFAR-100 (``transfer.task_settings.<source>``: image size, caps,
  seed; ``imagefolder`` also its root and class list).
- ``<base>-gaussian_noise-<s>``, ``<base>-zoom_blur-<s>`` for any of those bases: the same
  images and split, corrupted at severity s in 1..5 (Hendrycks & Dietterich 2019, the
  CIFAR-10-C parameters; the paper's CIFAR-100-C experiment uses severities 1, 2 and 5, its
  Table 11); 8-bit images are stored as 8-bit again after the corruption, as CIFAR-10-C is.
- ``shapes``: procedurally generated dSprites-style sprites (Matthey et al. 2017;
  :mod:`robustlens.sprites`), shape classification (square, ellipse, heart, triangle).
- ``shapes-factors``: the same sprites, regression of scale, position (x, y) and orientation
  encoded as (cos k*theta, sin k*theta), k the shape's rotational symmetry order, so sprites
  that look the same have the same target.

Only numpy at import time: the Snakefile and table jobs may import this module.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from robustlens.data import DATASETS_DIR, prepare_dataset
from robustlens.imagefolder import class_list, read_class_list
from robustlens.splits import random_split, stratified_split
from robustlens.sprites import FACTOR_NAMES, SHAPE_NAMES, generate_shapes

#: Gaussian noise standard deviation per severity 1..5 (CIFAR-10-C; Nern et al. Table 11 uses
#: 0.04, 0.06 and 0.10 for C1, C2 and C5).
GAUSSIAN_NOISE_SIGMA = (0.04, 0.06, 0.08, 0.09, 0.10)
#: Largest zoom factor per severity (CIFAR-10-C: zooms 1, 1.01, ..., up to this; Nern et al.
#: Table 11: [1, 1.06], [1, 1.11], [1, 1.26] for C1, C2, C5).
ZOOM_BLUR_MAX = (1.05, 1.10, 1.15, 1.20, 1.25)
CORRUPTIONS = ("gaussian_noise", "zoom_blur")

#: Dataset sources a task can be made of (robustlens.data), with their own train/test split.
DATASET_TASKS = ("cifar10", "cifar100", "fashion_mnist", "imagefolder")
#: Bases a corruption can be applied to: the study's held-out split and the dataset sources.
CORRUPTIBLE = ("heldout", *DATASET_TASKS)
_BASES = "|".join(CORRUPTIBLE)
TASK_PATTERN = re.compile(rf"^(?:({_BASES})(?:-(gaussian_noise|zoom_blur)-([1-5]))?|shapes(-factors)?)$")
#: Wildcard constraint of the task names (for the Snakemake rules).
TASK_REGEX = rf"(?:{_BASES})(?:-(?:gaussian_noise|zoom_blur)-[1-5])?|shapes(?:-factors)?"
#: Image channels of each task source (``heldout``: the study's dataset's).
TASK_CHANNELS = {"cifar10": 3, "cifar100": 3, "fashion_mnist": 1, "imagefolder": 3, "shapes": 1}
#: Stored image side of each dataset source when its settings give no ``image_size``.
NATIVE_SIZE = {"cifar10": 32, "cifar100": 32, "fashion_mnist": 28}


def parse_task(name: str) -> dict:
    """The parts of a task name: ``source`` (heldout | shapes | one of DATASET_TASKS),
    ``corruption`` and ``severity`` (None when clean), ``kind`` (classification | regression)."""
    match = TASK_PATTERN.match(name)
    if not match:
        hint = ""
        if name == "digits" or name.startswith("digits-"):
            hint = f" (the task 'digits' is now called 'heldout': use {'heldout' + name[len('digits'):]!r})"
        raise ValueError(
            f"unknown task {name!r}: expected <base> or <base>-<gaussian_noise|zoom_blur>-<1..5> with base one of "
            f"{', '.join(CORRUPTIBLE)}, or shapes, shapes-factors{hint}"
        )
    base, corruption, severity, factors = match.groups()
    return {
        "name": name,
        "source": base or "shapes",
        "corruption": corruption,
        "severity": int(severity) if severity else None,
        "kind": "regression" if factors else "classification",
    }


def dataset_task_spec(source: str, settings: dict) -> dict:
    """The ``dataset`` spec (:func:`robustlens.data.prepare_dataset`) of a dataset task from its
    ``transfer.task_settings.<source>`` (image_size: the source's native size by default;
    max_train, max_test: caps, stratified; seed; imagefolder: root, classes_file, num_classes)."""
    size = settings.get("image_size") or NATIVE_SIZE.get(source)
    if size is None:
        raise ValueError(f"task {source!r}: transfer.task_settings.{source}.image_size is required")
    spec = {"source": source, "image_size": int(size), "split_seed": int(settings.get("seed", 0))}
    for key in ("max_train", "max_test", "root", "classes", "classes_file", "num_classes"):
        if settings.get(key) is not None:  # a null cap: every image, as an absent one
            spec[key] = settings[key]
    return spec


def dataset_task_classes(source: str, settings: dict) -> int:
    """Classes of a dataset task: the source's, or an image folder's class-list length."""
    if source == "imagefolder":
        if settings.get("classes_file"):
            return len(read_class_list(settings["classes_file"], f"transfer.task_settings.{source}.classes_file"))
        return len(class_list(settings.get("classes"), int(settings.get("num_classes", 1000))))
    return {"cifar10": 10, "cifar100": 100, "fashion_mnist": 10}[source]


# --------------------------------------------------------------------------- corruptions


def gaussian_noise(images: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """x + N(0, sigma^2) per pixel, clipped to [0, 1] (Hendrycks & Dietterich 2019)."""
    sigma = GAUSSIAN_NOISE_SIGMA[severity - 1]
    noisy = images + rng.normal(0.0, sigma, size=images.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def zoom_factors(severity: int) -> np.ndarray:
    """The zoom factors 1, 1.01, ..., ZOOM_BLUR_MAX[severity - 1] of zoom blur."""
    n = int(round((ZOOM_BLUR_MAX[severity - 1] - 1.0) / 0.01)) + 1
    return 1.0 + 0.01 * np.arange(n)


def center_zoom(images: np.ndarray, factor: float) -> np.ndarray:
    """Images magnified by ``factor`` about their centre, cropped to their size (bilinear;
    scipy's ``zoom(order=1)`` then a centre crop, as in Hendrycks' ``clipped_zoom``).
    ``images``: (..., h, w)."""
    h, w = images.shape[-2:]

    def coords(n):
        src = (np.arange(n) + 0.5 - n / 2) / factor + n / 2 - 0.5
        src = np.clip(src, 0, n - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        return lo, hi, src - lo

    r0, r1, fr = coords(h)
    c0, c1, fc = coords(w)
    rows = images[..., r0, :] * (1 - fr)[:, None] + images[..., r1, :] * fr[:, None]
    return rows[..., c0] * (1 - fc) + rows[..., c1] * fc


def zoom_blur(images: np.ndarray, severity: int) -> np.ndarray:
    """Mean of the image and its zoomed copies (Hendrycks & Dietterich 2019), in [0, 1]."""
    factors = zoom_factors(severity)
    out = images.astype(np.float64).copy()
    for factor in factors:
        out += center_zoom(images.astype(np.float64), factor)
    return np.clip(out / (len(factors) + 1), 0.0, 1.0).astype(np.float32)


def corrupt(images: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """One corruption at one severity; the noise draws come from (seed, corruption, severity).
    uint8 images come back as uint8 (rounded, as CIFAR-10-C is stored), float32 as float32."""
    if images.dtype == np.uint8:
        corrupted = corrupt(images.astype(np.float32) / 255.0, corruption, severity, seed)
        return np.round(corrupted * 255.0).astype(np.uint8)
    if corruption == "gaussian_noise":
        rng = np.random.default_rng([int(seed), CORRUPTIONS.index(corruption), int(severity)])
        return gaussian_noise(images, severity, rng)
    if corruption == "zoom_blur":
        return zoom_blur(images, severity)
    raise ValueError(f"unknown corruption {corruption!r} (known: {', '.join(CORRUPTIONS)})")


# --------------------------------------------------------------------------- tasks


def make_task(name: str, settings: dict, image_size: int, dataset: dict | None = None,
              root: str | Path = DATASETS_DIR) -> dict[str, np.ndarray]:
    """The arrays of one task (see the module docstring). ``settings``: the config's
    ``transfer.task_settings`` (``heldout: {test_fraction, split_seed, noise_seed}``,
    ``shapes: {n_samples, test_fraction, seed}``, ``<dataset source>: {image_size, max_train,
    max_test, seed, noise_seed, ...}``); ``image_size``: the study's image size (held-out and
    sprite tasks are made at it); ``dataset``: the study's prepared dataset (held-out tasks only:
    its test split is the task's data); ``root``: where torchvision datasets were downloaded."""
    task = parse_task(name)
    source = task["source"]
    if source == "heldout":
        if dataset is None:
            raise ValueError(f"task {name!r} needs the study's dataset")
        s = settings["heldout"]
        images, labels = dataset["x_test"], dataset["y_test"]
        if images.shape[-1] != image_size:
            raise ValueError(f"task {name!r}: dataset images are {images.shape[-1]} px, expected {image_size}")
        if task["corruption"]:
            images = corrupt(images, task["corruption"], task["severity"], s["noise_seed"])
        train, test = stratified_split(labels, s["test_fraction"], s["split_seed"])
        n_outputs = int(max(dataset["y_train"].max(), labels.max())) + 1
        targets, target_names = labels, np.array(["label"])
        x_train, y_train, x_test, y_test = images[train], targets[train], images[test], targets[test]
    elif source in DATASET_TASKS:
        s = settings.get(source, {})
        parts = prepare_dataset(dataset_task_spec(source, s), root)
        x_train, y_train, x_test, y_test = parts["x_train"], parts["y_train"], parts["x_test"], parts["y_test"]
        if task["corruption"]:  # the two splits draw their noise from different streams
            x_train, x_test = (corrupt(x, task["corruption"], task["severity"], int(s.get("noise_seed", 0)) + part * 1_000_003)
                               for part, x in enumerate((x_train, x_test)))
        train, test = np.arange(len(x_train)), np.arange(len(x_test))
        n_outputs, target_names = dataset_task_classes(source, s), np.array(["label"])
    else:
        s = settings["shapes"]
        sprites = generate_shapes(s["n_samples"], image_size, s["seed"])
        images = sprites["images"]
        train, test = random_split(len(images), s["test_fraction"], s["seed"])
        if task["kind"] == "regression":
            targets, target_names, n_outputs = sprites["factors"], np.array(FACTOR_NAMES), len(FACTOR_NAMES)
        else:
            targets, target_names, n_outputs = sprites["labels"], np.array(["shape"]), len(SHAPE_NAMES)
        x_train, y_train, x_test, y_test = images[train], targets[train], images[test], targets[test]
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "index_train": train,
        "index_test": test,
        "kind": np.array(task["kind"]),
        "target_names": target_names,
        "n_outputs": np.array(n_outputs),
    }
