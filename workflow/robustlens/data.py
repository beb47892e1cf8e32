"""Datasets and probes.

Images are float32 tensors in [0, 1] with shape (n, channels, height, width); normalisation
lives with the model, never with the data. A prepared dataset is one ``.npz`` file with the
arrays ``x_train, y_train, x_test, y_test`` (numpy, no torch needed to read it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Dataset sources this module can prepare offline.
SOURCES = ("sklearn_digits",)


def load_sklearn_digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes).

    Pixel values 0..16 are scaled to [0, 1] and resized bilinearly (antialiased, PIL) to
    ``image_size`` x ``image_size``. Returns ``(images, labels)`` with images of shape
    (n, 1, image_size, image_size), float32.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    if image_size != images.shape[-1]:
        resized = [
            np.asarray(Image.fromarray(img, mode="F").resize((image_size, image_size), Image.BILINEAR))
            for img in images
        ]
        images = np.clip(np.stack(resized), 0.0, 1.0)
    return images[:, None].astype(np.float32), digits.target.astype(np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/test split, fixed by ``seed`` (sorted within each part)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def prepare_dataset(spec: dict) -> dict[str, np.ndarray]:
    """Build the train/test arrays a dataset spec describes (see ``dataset`` in the schema)."""
    source = spec["source"]
    if source == "sklearn_digits":
        images, labels = load_sklearn_digits(spec["image_size"])
    else:  # the schema already rejects unknown sources; this guards direct library use
        raise ValueError(f"dataset source {source!r} is not one of {SOURCES}")
    train, test = stratified_split(labels, spec["test_fraction"], spec["split_seed"])
    return {
        "x_train": images[train],
        "y_train": labels[train],
        "x_test": images[test],
        "y_test": labels[test],
    }


def save_dataset(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Write the arrays to ``path`` (.npz) through a temporary file, so a killed job leaves nothing."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_dataset(path: str | Path) -> dict[str, np.ndarray]:
    """Read a dataset written by :func:`save_dataset`."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def probe_inputs(dataset: dict[str, np.ndarray], split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The natural probe: images and labels of one split."""
    return dataset[f"x_{split}"], dataset[f"y_{split}"]
