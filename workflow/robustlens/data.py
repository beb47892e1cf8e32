"""Datasets and probes.

Images are float32 tensors in [0, 1] with shape (n, channels, height, width); normalisation
lives with the model, never with the data. A prepared dataset is one ``.npz`` file with the
arrays ``x_train, y_train, x_test, y_test`` (numpy, no torch needed to read it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Dataset sources this module can prepare (torchvision ones after their download rule ran).
SOURCES = ("sklearn_digits", "cifar10", "cifar100", "fashion_mnist", "imagefolder", "shapes")
#: torchvision dataset classes of the downloadable sources.
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


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/test split, fixed by ``seed`` (sorted within each part)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(n, c, h, w) images in [0, 1] resized bilinearly (antialiased, PIL) to size x size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    from PIL import Image

    out = np.empty((*images.shape[:2], size, size), dtype=np.float32)
    for i, img in enumerate(images):
        for c, channel in enumerate(img):
            out[i, c] = np.asarray(Image.fromarray(channel, mode="F").resize((size, size), Image.BILINEAR))
    return np.clip(out, 0.0, 1.0)


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
    """One split of a downloaded torchvision dataset as (n, c, s, s) float32 in [0, 1]."""
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[source])
    try:
        ds = cls(str(Path(root) / source), train=train, download=False)
    except RuntimeError as err:
        raise FileNotFoundError(f"{source} is not in {Path(root) / source}: run the workflow's fetch_dataset rule ({err})") from err
    data = np.asarray(ds.data)
    images = (data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0
    return _resize(images, image_size), np.asarray(ds.targets, dtype=np.int64)


def load_imagefolder(root: str | Path, split: str, image_size: int, classes_file: str | None, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``limit`` images (stratified, fixed by ``seed``) of ``root/split`` (class folders, e.g.
    ImageNet's train/ and val/), resized to 1.14 x image_size on the short side and centre
    cropped (256 -> 224 for ImageNet). Labels are indices among all class folders (sorted), so a
    class subset (``classes_file``, one folder name a line: ImageNet-100) keeps the 1000-class
    labels of ImageNet models."""
    from PIL import Image

    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist (dataset.root = {root!r} must hold train/ and val/)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    keep = classes
    if classes_file:
        keep = [line.strip() for line in Path(classes_file).read_text().splitlines() if line.strip()]
        unknown = sorted(set(keep) - set(classes))
        if unknown:
            raise ValueError(f"{classes_file}: classes not in {folder}: {unknown[:5]}")
    files, labels = [], []
    for name in keep:
        for f in sorted((folder / name).iterdir()):
            files.append(f)
            labels.append(classes.index(name))
    labels = np.asarray(labels, dtype=np.int64)
    idx = stratified_subset(labels, limit, seed)
    images = np.empty((len(idx), 3, image_size, image_size), dtype=np.float32)
    resize = int(round(image_size * 256 / 224))
    for j, i in enumerate(idx):
        img = Image.open(files[i]).convert("RGB")
        w, h = img.size
        scale = resize / min(w, h)
        img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.BILINEAR)
        left, top = (img.size[0] - image_size) // 2, (img.size[1] - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
        images[j] = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return images, labels[idx]


def stratified_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a stratified subset of ``limit`` items (all when ``limit`` is None or
    not smaller), fixed by ``seed``."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(labels)), train_size=limit, stratify=labels, random_state=seed)
    return np.sort(idx)


def _cap(images: np.ndarray, labels: np.ndarray, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified subset of ``limit`` items (all when ``limit`` is None or not smaller)."""
    idx = stratified_subset(labels, limit, seed)
    return images[idx], labels[idx]


def prepare_dataset(spec: dict, root: str | Path = DATASETS_DIR) -> dict[str, np.ndarray]:
    """Build the train/test arrays a dataset spec describes (see ``dataset`` in the schema):
    sklearn_digits and shapes are split by ``test_fraction``; torchvision datasets and image
    folders keep their own split, capped by ``max_train``/``max_test``."""
    source = spec["source"]
    size, seed = spec["image_size"], spec["split_seed"]
    if source in TORCHVISION or source == "imagefolder":
        parts = {}
        for part, train in (("train", True), ("test", False)):
            limit = spec.get(f"max_{part}")
            if source == "imagefolder":
                x, y = load_imagefolder(spec["root"], "train" if train else "val", size, spec.get("classes_file"), limit, seed)
            else:
                x, y = _cap(*load_torchvision(source, train, size, root), limit, seed)
            parts[f"x_{part}"], parts[f"y_{part}"] = x, y
        return parts
    if source == "sklearn_digits":
        images, labels = load_sklearn_digits(size)
    elif source == "shapes":
        from robustlens.tasks import generate_shapes

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


def load_dataset(path: str | Path) -> dict[str, np.ndarray]:
    """Read a dataset written by :func:`save_dataset`."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def probe_inputs(dataset: dict[str, np.ndarray], split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The natural probe: images and labels of one split."""
    return dataset[f"x_{split}"], dataset[f"y_{split}"]
