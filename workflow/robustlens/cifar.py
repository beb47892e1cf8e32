"""A reader of the CIFAR-10/100 python pickles (the layout torchvision downloads).

torchvision's ``CIFAR10``/``CIFAR100`` check the md5 of every batch file on each load, even with
``download=False``, so only the published files load through them; this reader reads any file of
that layout. The files are Python 2 pickles: a dict with ``data`` ((n, 3072) uint8, each row the
1024 red, then green, then blue values of a 32x32 image in row-major order) and ``labels``
(CIFAR-10) or ``fine_labels`` (CIFAR-100). Loading uses an unpickler that accepts numpy arrays
and nothing else, so a file that would run code is refused.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

#: Per source: the folder inside ``data/datasets/<source>/``, the training and test files, the label key.
LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's _reconstruct, wherever this numpy keeps it
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # Python 2 numpy, as in the published files
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR file")
        return _ALLOWED[(module, name)]


def read_pickle(path: str | Path) -> dict:
    """One CIFAR pickle as a dict with str keys (Python 2 str keys are decoded as latin-1)."""
    with open(path, "rb") as f:
        try:
            data = _ArrayUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise ValueError(f"{path}: not a CIFAR python pickle ({err})") from err
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


def read_cifar(source: str, train: bool, root: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One split of CIFAR-10 or CIFAR-100 from ``root/<source>/<layout folder>/`` as
    ``(images, labels)``: images (n, 3, 32, 32) uint8, labels int64 (CIFAR-100: the 100 fine
    classes)."""
    folder_name, train_files, test_files, label_key = LAYOUT[source]
    folder = Path(root) / source / folder_name
    images, labels = [], []
    for name in train_files if train else test_files:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: run the workflow's fetch_dataset rule, or place the files of "
                f"{folder_name}/ (from the {source} python tarball) in {folder.parent}"
            )
        batch = read_pickle(path)
        missing = {"data", label_key} - set(batch)
        if missing:
            raise ValueError(f"{path}: keys {sorted(missing)} missing (has {sorted(batch)})")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path}: 'data' has shape {data.shape}, expected (n, 3072)")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
        if len(labels[-1]) != len(data):
            raise ValueError(f"{path}: {len(data)} images but {len(labels[-1])} {label_key}")
    return np.concatenate(images), np.concatenate(labels)
