"""Image folders in ImageNet's layout: ``<root>/<split>/<class>/<image>``.

Labels are indices into a fixed class list, never into the folders a split happens to hold:
``imagenet`` is ImageNet's 1000 wnids in the standard order (n01440764 ... n15075141, the
sorted order torchvision's ImageFolder gives the full train/ folder; shipped with robustlens),
or a text file of class folder names, one a line (label = line index). A subset (``classes_file``,
e.g. ImageNet-100) selects classes and keeps their labels in the full list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustlens.splits import stratified_subset

#: ``dataset.classes`` value that names ImageNet's class list.
IMAGENET = "imagenet"
#: ``dataset.classes`` value that names ImageNet-100 (the 100 wnids of Tian et al. 2020, CMC:
#: github.com/HobbitLong/CMC imagenet100.txt at 7b227be, sorted: the label order torchvision's
#: ImageFolder gives a folder of those classes).
IMAGENET100 = "imagenet100"
#: Class lists shipped with robustlens, by name.
NAMED_CLASS_LISTS = {IMAGENET: "imagenet_classes.txt", IMAGENET100: "imagenet100_classes.txt"}


def imagenet_classes(name: str = IMAGENET) -> list[str]:
    """A shipped class list (:data:`NAMED_CLASS_LISTS`): ImageNet-1k's 1000 wnids in the
    standard label order (from timm's ``imagenet_synsets.txt``), or ImageNet-100's."""
    from importlib.resources import files

    return files("robustlens").joinpath(NAMED_CLASS_LISTS[name]).read_text().split()


def read_class_list(path: str | Path, key: str = "dataset.classes") -> list[str]:
    """Class names from a text file, one a line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key} = {str(path)!r}: no such file")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if not names or repeated:
        raise ValueError(f"{key} = {str(path)!r}: " + (f"classes listed twice: {repeated[:5]}" if repeated else "no class names"))
    return names


def class_list(classes: str | None, num_classes: int = 1000) -> list[str]:
    """The classes whose positions are the labels: ``classes`` is ``"imagenet"`` or a class list
    file; None means ImageNet's list, which needs ``num_classes`` 1000."""
    if classes is None:
        if num_classes != 1000:
            raise ValueError(
                f"dataset.classes is not set and dataset.num_classes = {num_classes}: name a file listing the "
                f"class folders in label order (the default, 'imagenet', has 1000 classes)"
            )
        classes = IMAGENET
    names = imagenet_classes(classes) if classes in NAMED_CLASS_LISTS else read_class_list(classes)
    if len(names) > num_classes:
        raise ValueError(f"dataset.classes = {classes!r} lists {len(names)} classes, more than dataset.num_classes = {num_classes}")
    return names


def check_class_folders(root: str | Path, split: str, classes: list[str], subset: list[str] | None = None) -> list[str]:
    """The classes to read from ``root/split`` (``subset``, or all of ``classes``), after
    checking that each has a folder there and that every folder there is a class of the list."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist (dataset.root = {str(root)!r} must hold train/ and val/)")
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    folders = {p.name for p in entries if p.is_dir()}
    if entries and not folders:
        raise ValueError(
            f"{folder} holds {len(entries)} files and no class folders: {split}/ must hold one folder per class "
            f"(ImageNet's original val/ is flat; see the README on arranging it)"
        )
    unknown = sorted(folders - set(classes))
    if unknown:
        raise ValueError(f"{folder}: {len(unknown)} folder(s) not in the class list (dataset.classes): {unknown[:5]}")
    keep = classes if subset is None else subset
    missing = [name for name in keep if name not in folders]
    if missing:
        raise FileNotFoundError(f"{folder}: split {split!r} has no folder for {len(missing)} of its {len(keep)} classes: {missing[:5]}")
    return keep


def list_images(root: str | Path, split: str, classes: list[str], subset: list[str] | None = None) -> tuple[list[Path], np.ndarray]:
    """Image files of ``root/split`` (sorted within each class) and their labels (indices into
    ``classes``), for the classes of ``subset`` (all of ``classes`` when None); see
    :func:`check_class_folders`."""
    folder = Path(root) / split
    keep = check_class_folders(root, split, classes, subset)
    index = {name: i for i, name in enumerate(classes)}
    files, labels = [], []
    for name in keep:
        images = sorted(f for f in (folder / name).iterdir() if f.is_file() and not f.name.startswith("."))
        if not images:
            raise FileNotFoundError(f"{folder / name}: no images in class folder {name!r} of split {split!r}")
        files += images
        labels += [index[name]] * len(images)
    return files, np.asarray(labels, dtype=np.int64)


def resize_centre_crop(img, image_size: int):
    """ImageNet's evaluation transform on a PIL image: short side bilinearly resized to
    round(image_size * 256 / 224) (256 for 224), then a centre crop of image_size x image_size,
    with torchvision's Resize(int) / CenterCrop rounding."""
    return centre_square(img, int(round(image_size * 256 / 224)), image_size)


def centre_square(img, resize: int, crop: int):
    """The short side of a PIL image bilinearly resized to ``resize``, then a centre crop of
    ``crop`` x ``crop`` (torchvision's Resize(int) / CenterCrop rounding). ``crop = resize``
    keeps the whole centre square: the training images that random resized crops are cut from
    (``dataset.train_image_size``)."""
    from PIL import Image

    w, h = img.size
    if w <= h:
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    img = img.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


def load_imagefolder(
    root: str | Path, split: str, image_size: int, classes: list[str], limit: int | None, seed: int,
    subset: list[str] | None = None, square: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``limit`` images (stratified, fixed by ``seed``) of ``root/split``, converted to RGB
    (grayscale and CMYK by PIL), resized and centre cropped (:func:`resize_centre_crop`; with
    ``square``, the whole centre square at ``image_size``: :func:`centre_square`).
    Returns images (n, 3, image_size, image_size) uint8 and labels (indices into ``classes``)."""
    from PIL import Image

    files, labels = list_images(root, split, classes, subset)
    idx = stratified_subset(labels, limit, seed)
    images = np.empty((len(idx), 3, image_size, image_size), dtype=np.uint8)
    for j, i in enumerate(idx):
        with Image.open(files[i]) as img:
            rgb = img.convert("RGB")
            cropped = centre_square(rgb, image_size, image_size) if square else resize_centre_crop(rgb, image_size)
            images[j] = np.asarray(cropped).transpose(2, 0, 1)
    return images, labels[idx]
