"""Inputs for the config rehearsals, written in their real on-disk formats with random but
class-dependent content (so a model can learn something):

- :func:`make_cifar`: the CIFAR-10 / CIFAR-100 python pickles (Python 2 pickles, as published),
  under ``<root>/<source>/`` where the workflow's prepare_dataset looks (``root`` =
  ``<workdir>/data/datasets``);
- :func:`make_imagefolder`: ImageNet-style ``train/`` and ``val/`` class folders of JPEGs of
  mixed sizes and modes (mostly RGB, some grayscale, some CMYK, as ImageNet has);
- :func:`write_classes_file`: a class list or subset file (``dataset.classes``, ``dataset.classes_file``).
"""

from __future__ import annotations

import colorsys
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class Py2Str(bytes):
    """A Python 2 ``str``: unpickles as str with ``encoding="latin1"`` (torchvision) and as bytes
    with ``encoding="bytes"``, like the keys and strings of the published CIFAR files."""


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 pickles as Python 2's cPickle wrote them: Py2Str as BINSTRING, numpy arrays
    through ``numpy.core.multiarray._reconstruct`` with their raw data as a Python 2 str."""

    dispatch = pickle._Pickler.dispatch.copy()
    _reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]

    def save_py2str(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[Py2Str] = save_py2str

    def save_global(self, obj, name=None):
        if obj is self._reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            state = (1, obj.shape, obj.dtype, False, Py2Str(np.ascontiguousarray(obj).tobytes()))
            return self._reconstruct, (np.ndarray, (0,), Py2Str(b"b")), state
        return NotImplemented


def _py2(obj):
    """str -> Py2Str, recursively through dicts and lists."""
    if isinstance(obj, str):
        return Py2Str(obj.encode("latin1"))
    if isinstance(obj, dict):
        return {_py2(k): _py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_py2(v) for v in obj]
    return obj


def write_py2_pickle(obj, path: Path) -> None:
    """``obj`` (str keys and values become Python 2 strs) as a Python 2 style protocol 2 pickle."""
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(_py2(obj))


def _class_colours(n_classes: int) -> np.ndarray:
    """(n_classes, 3) distinct saturated colours, 0..255."""
    return np.array([colorsys.hsv_to_rgb(c / n_classes, 0.8, 0.9) for c in range(n_classes)]) * 255


def class_images(labels: np.ndarray, n_classes: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(n, height, width, 3) uint8 images: noise around a class colour, with a bright blob at a
    class-dependent place (jittered), so both colour and position tell the class."""
    n = len(labels)
    colours = _class_colours(n_classes)[labels]
    angle = 2 * np.pi * labels / n_classes
    cy = height * (0.5 + 0.25 * np.sin(angle)) + rng.uniform(-2, 2, n)
    cx = width * (0.5 + 0.25 * np.cos(angle)) + rng.uniform(-2, 2, n)
    yy, xx = np.mgrid[:height, :width]
    blob = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / (2 * (min(height, width) / 8) ** 2))
    images = 0.6 * colours[:, None, None, :] + 100 * blob[..., None] + rng.normal(0, 20, (n, height, width, 3))
    return np.clip(images, 0, 255).astype(np.uint8)


def _balanced_labels(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % n_classes)


def make_cifar(root: str | Path, source: str = "cifar10", n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """CIFAR-10 (``cifar-10-batches-py/``: batches.meta, data_batch_1..5, test_batch) or CIFAR-100
    (``cifar-100-python/``: meta, train, test) with ``n_train`` / ``n_test`` class-balanced images,
    in ``root/<source>/``. Returns that folder. Each batch is a dict with ``data`` ((n, 3072)
    uint8, channel planes of 32x32 row-major images), ``labels`` or ``fine_labels`` and
    ``coarse_labels``, ``filenames``, ``batch_label``."""
    if source not in ("cifar10", "cifar100"):
        raise ValueError(f"source must be cifar10 or cifar100, not {source!r}")
    rng = np.random.default_rng(seed)
    n_classes = 10 if source == "cifar10" else 100
    folder = Path(root) / source / ("cifar-10-batches-py" if source == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)

    def batch(labels: np.ndarray, batch_label: str) -> dict:
        images = class_images(labels, n_classes, 32, 32, rng)
        data = images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)
        entry = {"batch_label": batch_label, "data": np.ascontiguousarray(data)}
        if source == "cifar10":
            entry["labels"] = [int(y) for y in labels]
        else:
            entry["fine_labels"] = [int(y) for y in labels]
            entry["coarse_labels"] = [int(y) // 5 for y in labels]
        entry["filenames"] = [f"image_{i:05d}.png" for i in range(len(labels))]
        return entry

    train_labels, test_labels = _balanced_labels(n_train, n_classes, rng), _balanced_labels(n_test, n_classes, rng)
    if source == "cifar10":
        for i, part in enumerate(np.array_split(train_labels, 5), start=1):
            write_py2_pickle(batch(part, f"training batch {i} of 5"), folder / f"data_batch_{i}")
        write_py2_pickle(batch(test_labels, "testing batch 1 of 1"), folder / "test_batch")
        write_py2_pickle({"num_cases_per_batch": int(np.ceil(n_train / 5)), "label_names": CIFAR10_NAMES, "num_vis": 3072},
                         folder / "batches.meta")
    else:
        write_py2_pickle(batch(train_labels, "training batch 1 of 1"), folder / "train")
        write_py2_pickle(batch(test_labels, "testing batch 1 of 1"), folder / "test")
        write_py2_pickle({"fine_label_names": [f"fine_{c:02d}" for c in range(100)],
                          "coarse_label_names": [f"coarse_{c:02d}" for c in range(20)]}, folder / "meta")
    return folder.parent


#: Every 10th image from the 4th on is saved grayscale, every 10th from the 8th on CMYK.
MODES = {3: "L", 7: "CMYK"}


def make_imagefolder(root: str | Path, classes: list[str], n_train_per_class: int, n_val_per_class: int, seed: int = 0) -> Path:
    """``root/train/<class>/`` and ``root/val/<class>/`` holding JPEGs of 40-90 px sides
    (width and height drawn independently), mostly RGB, image k (counted over the whole folder)
    grayscale ("L") when k % 10 == 3 and CMYK when k % 10 == 7. Content: :func:`class_images`
    for the class's position in ``classes``. Returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    k = 0
    for split, n in (("train", n_train_per_class), ("val", n_val_per_class)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                width, height = (int(v) for v in rng.integers(40, 91, 2))
                pixels = class_images(np.array([c]), len(classes), height, width, rng)[0]
                img = Image.fromarray(pixels, "RGB")
                if k % 10 in MODES:
                    img = img.convert(MODES[k % 10])
                stem = f"{name}_{i}" if split == "train" else f"ILSVRC2012_val_{k:08d}"
                img.save(root / split / name / f"{stem}.JPEG", "JPEG", quality=90)
                k += 1
    return root


def write_classes_file(path: str | Path, classes: list[str]) -> Path:
    """A class list (``dataset.classes``) or subset (``dataset.classes_file``): one name a line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in classes))
    return path
