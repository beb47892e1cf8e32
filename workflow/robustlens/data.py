"""Datasets and probes.

Images are float32 arrays in [0, 1] with shape (n, channels, height, width); normalisation
lives with the model, never with the data. A prepared dataset is one ``.npz`` file with the
arrays ``x_train, y_train, x_test, y_test`` (numpy, no torch needed to read it). Images of 8-bit
sources (CIFAR, image folders, Fashion-MNIST) are stored as uint8 (a quarter of float32) and
become float32 / 255 when :func:`load_dataset` reads them; digits and shapes are stored as float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustlens.cifar import read_cifar
from robustlens.imagefolder import check_class_folders, class_list, load_imagefolder, read_class_list
from robustlens.splits import stratified_split, stratified_subset
from robustlens.sprites import generate_shapes

#: Dataset sources this module can prepare (torchvision ones after their download rule ran).
SOURCES = ("sklearn_digits", "cifar10", "cifar100", "fashion_mnist", "imagefolder", "shapes")
#: torchvision dataset classes of the downloadable sources (downloaded by torchvision; CIFAR
#: read by robustlens.cifar, since torchvision's classes verify the published md5 on every load).
TORCHVISION = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "fashion_mnist": "FashionMNIST"}
#: Where the download rule puts torchvision datasets (relative to the working directory).
DATASETS_DIR = "data/datasets"


def load_sklearn_digits(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes).

    Pixel values 0..16 are scaled to [0, 1] and resized bilinearly (antialiased, PIL) to
    ``image_size`` x ``image_size``. Returns ``(images, labels)`` with images of shape
    (n, 1, image_size, image_size), float32.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16.0
    return _resize(images, image_size), digits.target.astype(np.int64)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(n, c, h, w) images, float32 in [0, 1] or uint8, resized bilinearly (antialiased, PIL)
    to size x size, in the same dtype."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    from PIL import Image

    is_uint8 = images.dtype == np.uint8
    out = np.empty((*images.shape[:2], size, size), dtype=images.dtype)
    for i, img in enumerate(images):
        for c, channel in enumerate(img):
            channel = Image.fromarray(channel) if is_uint8 else Image.fromarray(channel, mode="F")
            out[i, c] = np.asarray(channel.resize((size, size), Image.BILINEAR))
    return out if is_uint8 else np.clip(out, 0.0, 1.0)


def fetch_torchvision(source: str, root: str | Path = DATASETS_DIR) -> None:
    """Download a torchvision dataset (both splits) into ``root/<source>``."""
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[source])
    folder = Path(root) / source
    try:
        for train in (True, False):
            cls(str(folder), train=train, download=True)
    except OSError as err:  # URLError and socket errors are OSErrors
        raise RuntimeError(
            f"cannot download {source} ({err}). Without network access, place torchvision's files of "
            f"{TORCHVISION[source]} (e.g. cifar-10-batches-py/, FashionMNIST/raw/) in {folder.resolve()}."
        ) from err


def load_torchvision(source: str, train: bool, image_size: int, root: str | Path = DATASETS_DIR) -> tuple[np.ndarray, np.ndarray]:
    """One split of a downloaded dataset as (n, c, s, s) uint8 images and int64 labels: CIFAR
    through :func:`robustlens.cifar.read_cifar`, Fashion-MNIST through torchvision."""
    if source in ("cifar10", "cifar100"):
        images, labels = read_cifar(source, train, root)
        return _resize(images, image_size), labels
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[source])
    try:
        ds = cls(str(Path(root) / source), train=train, download=False)
    except RuntimeError as err:
        raise FileNotFoundError(f"{source} is not in {Path(root) / source}: run the workflow's fetch_dataset rule ({err})") from err
    data = np.asarray(ds.data, dtype=np.uint8)
    images = np.ascontiguousarray(data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2))
    return _resize(images, image_size), np.asarray(ds.targets, dtype=np.int64)


def _cap(images: np.ndarray, labels: np.ndarray, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified subset of ``limit`` items (all when ``limit`` is None or not smaller)."""
    idx = stratified_subset(labels, limit, seed)
    return images[idx], labels[idx]


def prepare_dataset(spec: dict, root: str | Path = DATASETS_DIR) -> dict[str, np.ndarray]:
    """Build the train/test arrays a dataset spec describes (see ``dataset`` in the schema):
    sklearn_digits and shapes are split by ``test_fraction`` (float32 images); torchvision
    datasets and image folders keep their own split, capped by ``max_train``/``max_test``
    (uint8 images). Image folders: train/ is the training split, val/ the test split; labels
    index ``classes`` (default ImageNet's list), ``classes_file`` selects a subset;
    ``train_image_size`` stores the training split as whole centre squares of that side (what
    random resized crops are cut from), the test split at ``image_size`` as evaluated."""
    source = spec["source"]
    size, seed = spec["image_size"], spec["split_seed"]
    if source in TORCHVISION or source == "imagefolder":
        if source == "imagefolder":
            classes = class_list(spec.get("classes"), spec.get("num_classes", 1000))
            subset = read_class_list(spec["classes_file"], "dataset.classes_file") if spec.get("classes_file") else None
            outside = [name for name in subset or [] if name not in classes]
            if outside:
                raise ValueError(f"dataset.classes_file = {spec['classes_file']!r}: {len(outside)} classes not in dataset.classes: {outside[:5]}")
            for split in ("train", "val"):  # both checked before any image is read
                check_class_folders(spec["root"], split, classes, subset)
        parts = {}
        for part, train in (("train", True), ("test", False)):
            limit = spec.get(f"max_{part}")
            if source == "imagefolder":
                square = train and bool(spec.get("train_image_size"))  # the centre square random crops are cut from
                x, y = load_imagefolder(spec["root"], "train" if train else "val", spec["train_image_size"] if square else size,
                                        classes, limit, seed, subset, square=square)
            else:
                x, y = _cap(*load_torchvision(source, train, size, root), limit, seed)
            parts[f"x_{part}"], parts[f"y_{part}"] = x, y
        return parts
    if source == "sklearn_digits":
        images, labels = load_sklearn_digits(size)
    elif source == "shapes":
        sprites = generate_shapes(spec.get("n_samples", 2000), size, seed)
        images, labels = sprites["images"], sprites["labels"]
    else:  # the schema already rejects unknown sources; this guards direct library use
        raise ValueError(f"dataset source {source!r} is not one of {SOURCES}")
    train, test = stratified_split(labels, spec["test_fraction"], seed)
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


def as_float(images: np.ndarray) -> np.ndarray:
    """Stored images as float32 in [0, 1]: uint8 divided by 255, float32 unchanged."""
    if images.dtype != np.uint8:
        return images
    out = images.astype(np.float32)
    out /= 255.0
    return out


def load_dataset(path: str | Path, split: str | None = None) -> dict[str, np.ndarray]:
    """Read a dataset written by :func:`save_dataset`, images (``x_*``) as float32 in [0, 1].
    ``split`` ("train" or "test") reads only that split's images, ``x_<split>``, and the labels
    (``y_*``) of every split (they are small; a class count needs them all); None reads every
    array. An .npz is read lazily, so the other images are never loaded."""
    with np.load(path) as data:
        keys = data.files
        if split is not None:
            if f"x_{split}" not in keys:
                raise ValueError(f"{path} has no split {split!r} (arrays: {', '.join(keys)})")
            keys = [f"x_{split}"] + [key for key in keys if key.startswith("y_")]
        return {key: as_float(data[key]) if key.startswith("x_") else data[key] for key in keys}


def probe_inputs(dataset: dict[str, np.ndarray], split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The natural probe: images and labels of one split."""
    return dataset[f"x_{split}"], dataset[f"y_{split}"]
