"""Dataset sources besides the embedded digits: procedural shapes, image folders (ImageNet
layout, labels from a fixed class list, ImageNet-100-style subsets), CIFAR pickles read without
torchvision, and the dataset cache (uint8 storage, one split read at a time)."""

import math
import pickle
import re
import urllib.error

import numpy as np
import pytest
import torchvision
from PIL import Image

from rehearsal.make_inputs import MODES, make_cifar, make_imagefolder, write_classes_file
from robustlens.cifar import read_cifar
from robustlens.config import n_test_images as predicted_test_size
from robustlens import data as data_module
from robustlens.data import fetch_torchvision, load_dataset, prepare_dataset, save_dataset
from robustlens.imagefolder import imagenet_classes, load_imagefolder


def test_shapes_source_splits_sprites_by_test_fraction():
    spec = {"source": "shapes", "image_size": 16, "test_fraction": 0.25, "split_seed": 0, "n_samples": 80}
    data = prepare_dataset(spec)
    assert data["x_test"].shape == (20, 1, 16, 16) and len(data["x_train"]) == 60
    assert len(data["x_test"]) == predicted_test_size(spec) == math.ceil(80 * 0.25)
    assert 0.0 <= data["x_train"].min() and data["x_train"].max() <= 1.0
    assert set(np.unique(data["y_train"])) <= {0, 1, 2, 3}


# ---- ImageNet's class list ----------------------------------------------------------------


def test_imagenet_class_list_is_the_standard_label_order():
    wnids = imagenet_classes()
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert (wnids[0], wnids[-1]) == ("n01440764", "n15075141")
    # well-known ImageNet labels: 1 goldfish, 207 golden retriever, 281 tabby cat
    assert (wnids.index("n01443537"), wnids.index("n02099601"), wnids.index("n02123045")) == (1, 207, 281)


# ---- image folders ------------------------------------------------------------------------


def colour_folder(root, splits, size=(40, 30)):
    """``splits``: {split: {class: n}}; each image a constant colour per class (PNG)."""
    colours = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255), "n01443537": (255, 0, 0), "n02099601": (0, 0, 255)}
    for split, counts in splits.items():
        for name, n in counts.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", size, colours[name]).save(root / split / name / f"{i}.png")
    return root


def folder_spec(root, **extra):
    return {"source": "imagefolder", "root": str(root), "image_size": 8, "test_fraction": 0.2, "split_seed": 0,
            "max_train": 4, "max_test": 6, **extra}


def test_imagefolder_subset_keeps_full_label_indices(tmp_path):
    folder = colour_folder(tmp_path / "images", {s: {"a": n, "b": n, "c": n} for s, n in (("train", 6), ("val", 4))})
    classes = write_classes_file(tmp_path / "classes.txt", ["a", "b", "c"])
    subset = write_classes_file(tmp_path / "subset.txt", ["b", "c"])
    spec = folder_spec(folder, classes=str(classes), classes_file=str(subset), num_classes=3)
    path = tmp_path / "data.npz"
    save_dataset(prepare_dataset(spec), path)
    data = load_dataset(path)
    assert data["x_train"].shape == (4, 3, 8, 8) and data["x_test"].shape == (6, 3, 8, 8)
    assert len(data["x_test"]) == predicted_test_size(spec)
    # labels are positions in the class list (a=0, b=1, c=2): the subset keeps 1 and 2
    assert sorted(np.unique(data["y_test"])) == [1, 2] and np.bincount(data["y_test"]).tolist() == [0, 3, 3]
    # a class's colour survives resize and crop exactly, in [0, 1], channel-first
    green = data["x_test"][data["y_test"] == 1]
    assert data["x_test"].dtype == np.float32 and np.all(green[:, 1] == 1.0) and np.all(green[:, [0, 2]] == 0.0)


def test_imagenet_subset_folder_keeps_imagenet_labels(tmp_path):
    """A copy of ImageNet holding only some class folders: labels stay ImageNet's (1 and 207),
    not the positions among the folders present (0 and 1)."""
    wnids = ["n01443537", "n02099601"]
    folder = colour_folder(tmp_path / "imagenet", {"train": dict.fromkeys(wnids, 3), "val": dict.fromkeys(wnids, 2)})
    subset = write_classes_file(tmp_path / "imagenet100.txt", wnids)
    data = prepare_dataset(folder_spec(folder, classes_file=str(subset)))
    assert sorted(set(data["y_test"].tolist())) == [1, 207]
    red = data["x_test"][data["y_test"] == 1]  # goldfish folder is red
    assert red.dtype == np.uint8 and np.all(red[:, 0] == 255) and np.all(red[:, 1:] == 0)
    with pytest.raises(FileNotFoundError, match=r"'train' has no folder for 998 of its 1000 classes.*n01440764"):
        prepare_dataset(folder_spec(folder))  # without the subset, every ImageNet class must be there


def test_imagefolder_split_missing_a_class_folder_is_an_error(tmp_path):
    folder = colour_folder(tmp_path / "images", {"train": {"a": 2, "b": 2, "c": 2}, "val": {"a": 2, "c": 2}})
    classes = write_classes_file(tmp_path / "classes.txt", ["a", "b", "c"])
    with pytest.raises(FileNotFoundError, match=r"val.*'val' has no folder for 1 of its 3 classes: \['b'\]"):
        prepare_dataset(folder_spec(folder, classes=str(classes), num_classes=3))  # checked before train/ is read
    # excluded by a subset, the missing folder is fine
    subset = write_classes_file(tmp_path / "subset.txt", ["a", "c"])
    data = prepare_dataset(folder_spec(folder, classes=str(classes), classes_file=str(subset), num_classes=3, max_train=None, max_test=None))
    assert sorted(set(data["y_test"].tolist())) == [0, 2] and len(data["y_train"]) == 4


def test_imagefolder_folders_outside_the_class_list_are_errors(tmp_path):
    folder = colour_folder(tmp_path / "images", {"train": {"a": 2, "b": 2}, "val": {"a": 2, "b": 2}})
    with pytest.raises(ValueError, match=r"2 folder\(s\) not in the class list \(dataset.classes\): \['a', 'b'\]"):
        prepare_dataset(folder_spec(folder))  # default: ImageNet's wnids
    with pytest.raises(ValueError, match="dataset.classes is not set and dataset.num_classes = 2"):
        prepare_dataset(folder_spec(folder, num_classes=2))
    classes = write_classes_file(tmp_path / "classes.txt", ["a"])
    with pytest.raises(ValueError, match=r"not in the class list.*\['b'\]"):
        prepare_dataset(folder_spec(folder, classes=str(classes), num_classes=2))


def test_class_list_path_may_not_leave_the_working_directory():
    from pathlib import Path

    from robustlens.config import ConfigError, load_config, validate_config

    folder = {"source": "imagefolder", "root": "data/imagenet", "max_train": 10, "max_test": 10}
    config = load_config(Path(__file__).parents[2] / "config.yaml", {"dataset": {**folder, "classes": "../classes.txt"}})
    with pytest.raises(ConfigError, match=r"key 'dataset.classes' = '../classes.txt': a relative path that leads outside"):
        validate_config(config)


def test_flat_val_folder_says_to_arrange_class_folders(tmp_path):
    folder = colour_folder(tmp_path / "images", {"train": {"a": 2}})
    (folder / "val").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "val" / "ILSVRC2012_val_00000001.JPEG")
    classes = write_classes_file(tmp_path / "classes.txt", ["a"])
    with pytest.raises(ValueError, match=r"val holds 1 files and no class folders"):
        prepare_dataset(folder_spec(folder, classes=str(classes), num_classes=1))


def test_imagefolder_missing_root_names_the_folder(tmp_path):
    spec = {"source": "imagefolder", "root": str(tmp_path / "nope"), "image_size": 8, "test_fraction": 0.2,
            "split_seed": 0, "max_train": 4, "max_test": 4}
    with pytest.raises(FileNotFoundError, match="nope"):
        prepare_dataset(spec)


def test_resize_and_centre_crop_geometry(tmp_path):
    """A 100x50 image: a 20 px white border left and right, four coloured quadrants inside.
    Short side 50 -> round(16 * 256 / 224) = 18 (x0.36), so 36x18, centre crop 16x16 from
    x = 10, y = 1: original x 27.8..72.2, which leaves out the border; away from the quadrant
    seams (support of the bilinear filter: 1/0.36 = 2.8 px) each corner is its quadrant's colour."""
    quads = np.zeros((50, 100, 3), np.uint8)
    quads[:25, :50], quads[:25, 50:], quads[25:, :50], quads[25:, 50:] = (200, 0, 0), (0, 200, 0), (0, 0, 200), (100, 100, 0)
    quads[:, :20] = quads[:, 80:] = 255
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(quads).save(tmp_path / "train" / "a" / "q.png")
    images, labels = load_imagefolder(tmp_path, "train", 16, ["a"], None, 0)
    img = images[0].transpose(1, 2, 0)
    assert images.shape == (1, 3, 16, 16) and labels.tolist() == [0]
    assert np.all(img[:6, :6] == (200, 0, 0)) and np.all(img[:6, 10:] == (0, 200, 0))
    assert np.all(img[10:, :6] == (0, 0, 200)) and np.all(img[10:, 10:] == (100, 100, 0))
    assert not np.any(np.all(img == 255, axis=-1))  # the border is cropped away

    # the same as torchvision's evaluation transform
    from torchvision import transforms

    reference = transforms.Compose([transforms.Resize(18), transforms.CenterCrop(16), transforms.PILToTensor()])
    np.testing.assert_array_equal(images[0], reference(Image.fromarray(quads)).numpy())


def test_made_imagefolder_loads_like_torchvision_imagefolder(tmp_path):
    """make_imagefolder's JPEGs (mixed sizes, RGB / grayscale / CMYK) read by load_imagefolder
    equal torchvision's ImageFolder (RGB conversion by PIL) with Resize + CenterCrop."""
    from torchvision import datasets, transforms

    classes = ["n01440764", "n01443537", "n01484850"]
    make_imagefolder(tmp_path, classes, n_train_per_class=2, n_val_per_class=5, seed=0)
    files = sorted((tmp_path / "val").rglob("*.JPEG"))
    modes = [Image.open(f).mode for f in files]
    sizes = {Image.open(f).size for f in files}
    assert (modes.count("L"), modes.count("CMYK"), modes.count("RGB")) == (1, 2, 12)  # val images are k = 6..20: L at 13, CMYK at 7 and 17
    assert len(sizes) > 5 and all(40 <= s <= 90 for size in sizes for s in size) and any(w != h for w, h in sizes)

    images, labels = load_imagefolder(tmp_path, "val", 24, imagenet_classes(), None, 0, subset=classes)
    reference = datasets.ImageFolder(
        tmp_path / "val", transform=transforms.Compose([transforms.Resize(27), transforms.CenterCrop(24), transforms.PILToTensor()])
    )
    assert labels.tolist() == [t for _, t in reference.samples]  # folders are ImageNet's first three: labels 0, 1, 2
    np.testing.assert_array_equal(images, np.stack([x.numpy() for x, _ in reference]))
    grey = [i for i, m in enumerate(modes) if m == "L"]
    assert np.all(images[grey, 0] == images[grey, 1]) and np.all(images[grey, 1] == images[grey, 2])
    # the class content tells the classes apart: mean colour nearest its own class's mean
    means = images.reshape(len(images), 3, -1).mean(-1)
    centroids = np.stack([means[labels == c].mean(0) for c in range(3)])
    assert np.mean(np.argmin(((means[:, None] - centroids[None]) ** 2).sum(-1), 1) == labels) >= 0.8


# ---- CIFAR ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["cifar10", "cifar100"])
def test_cifar_reader_equals_torchvision(tmp_path, monkeypatch, source):
    """Made pickles read by robustlens.cifar and by torchvision's class (integrity check patched
    out: the md5 sums are the published files'): the same images (HWC -> CHW) and labels; the
    dataset cache stores them as uint8 and hands them out as torchvision's ToTensor does."""
    import torch
    import torchvision

    cls = getattr(torchvision.datasets, source.upper())
    monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    make_cifar(tmp_path, source, n_train=230, n_test=120, seed=3)
    torchvision_data = {}
    for train in (True, False):
        ours, labels = read_cifar(source, train, tmp_path)
        theirs = torchvision_data[train] = cls(str(tmp_path / source), train=train)
        assert ours.dtype == np.uint8 and ours.shape == (230 if train else 120, 3, 32, 32)
        np.testing.assert_array_equal(ours, theirs.data.transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(labels, theirs.targets)
    assert len(np.unique(labels)) == (10 if source == "cifar10" else 100)

    monkeypatch.undo()  # the workflow reads the pickles with robustlens' reader, not torchvision's checked class
    spec = {"source": source, "image_size": 32, "test_fraction": 0.2, "split_seed": 0}
    path = tmp_path / "data.npz"
    save_dataset(prepare_dataset(spec, root=tmp_path), path)
    with np.load(path) as stored:
        assert stored["x_train"].dtype == stored["x_test"].dtype == np.uint8
    train_data = torchvision_data[True].data
    np.testing.assert_array_equal(np.load(path)["x_train"], train_data.transpose(0, 3, 1, 2))  # the train split: train batches
    test = load_dataset(path, "test")  # theirs: torchvision's test split
    assert set(test) == {"x_test", "y_train", "y_test"} and np.array_equal(test["y_test"], theirs.targets)
    expected = torch.stack([torchvision.transforms.ToTensor()(image) for image in theirs.data]).numpy()
    np.testing.assert_array_equal(test["x_test"], expected)  # bit-identical to ToTensor's float32


def test_cifar_reader_refuses_code_in_a_pickle(tmp_path, capsys):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR python pickle \(__builtin__.print is not allowed"):
        read_cifar("cifar10", False, tmp_path)
    assert "pwned" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="data_batch_1 does not exist: run the workflow's fetch_dataset rule"):
        read_cifar("cifar10", True, tmp_path)


def test_stratified_subset_keeps_class_proportions_and_copes_with_too_few():
    from robustlens.splits import stratified_subset

    labels = np.repeat([0, 1, 2], [10, 20, 30])
    idx = stratified_subset(labels, 30, seed=1)
    assert np.bincount(labels[idx]).tolist() == [5, 10, 15] and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, stratified_subset(labels, 30, seed=1)) and not np.array_equal(idx, stratified_subset(labels, 30, seed=2))
    for limit in (2, 58):  # fewer kept / left out than the 3 classes: no stratified subset exists
        idx = stratified_subset(labels, limit, seed=0)
        assert len(np.unique(idx)) == limit and np.all(np.diff(idx) > 0) and idx.max() < 60
        assert np.array_equal(idx, stratified_subset(labels, limit, seed=0))  # the uniform fallback is seeded too


# ---- the dataset cache ---------------------------------------------------------------------


def test_load_dataset_reads_one_split_as_float(tmp_path):
    arrays = {"x_train": np.full((3, 1, 2, 2), 255, np.uint8), "y_train": np.array([0, 1, 2]),
              "x_test": np.array([0, 51, 102, 255], np.uint8).reshape(1, 1, 2, 2), "y_test": np.array([4])}
    save_dataset(arrays, tmp_path / "d.npz")
    test = load_dataset(tmp_path / "d.npz", "test")
    assert set(test) == {"x_test", "y_test", "y_train"}  # no training images read
    assert test["x_test"].dtype == np.float32
    np.testing.assert_array_equal(test["x_test"].ravel(), np.float32([0.0, 0.2, 0.4, 1.0]))
    assert np.all(load_dataset(tmp_path / "d.npz")["x_train"] == 1.0)
    assert test["y_test"].dtype == test["y_train"].dtype == np.int64  # labels stay integers
    np.testing.assert_array_equal(test["y_train"], [0, 1, 2])
    with pytest.raises(ValueError, match=r"d.npz has no split 'val' \(arrays: x_train, y_train, x_test, y_test\)$"):
        load_dataset(tmp_path / "d.npz", "val")


def test_digits_stay_float32_and_round_trip_bit_identical(tmp_path):
    """The default study's dataset: stored as float32 (not uint8: digits are 0..16 resized), so
    its cache file and every result downstream are unchanged."""
    data = prepare_dataset({"source": "sklearn_digits", "image_size": 16, "test_fraction": 0.2, "split_seed": 0})
    save_dataset(data, tmp_path / "digits.npz")
    for split in ("train", "test"):
        read = load_dataset(tmp_path / "digits.npz", split)
        assert read[f"x_{split}"].dtype == np.float32
        assert read[f"x_{split}"].tobytes() == data[f"x_{split}"].tobytes()


def test_digits_pixels_are_sixteenths_split_by_sklearn_and_resized_by_pil():
    """At 8 px the images are scikit-learn's 0..16 pixels over 16; the test split is
    scikit-learn's stratified train_test_split of the indices; at 16 px each channel is PIL's
    bilinear resize of the 8 px float image, clipped to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    data = prepare_dataset({"source": "sklearn_digits", "image_size": 8, "test_fraction": 0.25, "split_seed": 3})
    train, test = train_test_split(np.arange(len(digits.target)), test_size=0.25, stratify=digits.target, random_state=3)
    np.testing.assert_array_equal(data["x_test"][:, 0], (digits.images[np.sort(test)] / 16).astype(np.float32))
    np.testing.assert_array_equal(data["y_test"], digits.target[np.sort(test)])
    np.testing.assert_array_equal(data["y_train"], digits.target[np.sort(train)])
    big = prepare_dataset({"source": "sklearn_digits", "image_size": 16, "test_fraction": 0.25, "split_seed": 3})
    i = np.sort(test)[5]
    pil = Image.fromarray((digits.images[i] / 16).astype(np.float32), mode="F").resize((16, 16), Image.BILINEAR)
    np.testing.assert_array_equal(big["x_test"][5, 0], np.clip(np.asarray(pil), 0, 1))
    assert big["x_test"].shape == (len(test), 1, 16, 16) and big["x_train"].shape == (len(train), 1, 16, 16)


def write_idx(path, array: np.ndarray) -> None:
    """The MNIST idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian sizes, bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_its_raw_idx_files(tmp_path):
    """Fashion-MNIST as torchvision stores it (FashionMNIST/raw/*-idx?-ubyte): one grey
    channel, each image PIL's bilinear resize of the 28 px original, labels as written; without
    the files, an error that names the folder and the rule that fetches them."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "fashion_mnist" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = {"train": rng.integers(0, 256, (30, 28, 28)), "t10k": rng.integers(0, 256, (12, 28, 28))}
    labels = {"train": np.arange(30) % 10, "t10k": (np.arange(12) * 3) % 10}
    for part in ("train", "t10k"):
        write_idx(raw / f"{part}-images-idx3-ubyte", images[part])
        write_idx(raw / f"{part}-labels-idx1-ubyte", labels[part])
    data = prepare_dataset({"source": "fashion_mnist", "image_size": 32, "split_seed": 0}, root=tmp_path)
    for part, split in (("train", "train"), ("t10k", "test")):
        x = data[f"x_{split}"]
        assert x.dtype == np.uint8 and x.shape == (len(labels[part]), 1, 32, 32)
        expected = [np.asarray(Image.fromarray(img.astype(np.uint8)).resize((32, 32), Image.BILINEAR)) for img in images[part]]
        np.testing.assert_array_equal(x[:, 0], np.stack(expected))
        np.testing.assert_array_equal(data[f"y_{split}"], labels[part])
        assert data[f"y_{split}"].dtype == np.int64
    native = prepare_dataset({"source": "fashion_mnist", "image_size": 28, "split_seed": 0}, root=tmp_path)
    np.testing.assert_array_equal(native["x_test"][:, 0], images["t10k"])
    with pytest.raises(FileNotFoundError, match=r"fashion_mnist is not in .*elsewhere.*fashion_mnist: run the workflow's "
                                                r"fetch_dataset rule \(Dataset not found"):  # torchvision's reason: no download tried
        prepare_dataset({"source": "fashion_mnist", "image_size": 28, "split_seed": 0}, root=tmp_path / "elsewhere")


def test_torchvision_splits_are_capped_by_stratified_subsets(tmp_path):
    """max_train / max_test keep a stratified subset of each split (2 per class of 10 here),
    rows kept whole with their labels, fixed by split_seed."""
    rng = np.random.default_rng(1)
    raw = tmp_path / "fashion_mnist" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = {"train": rng.integers(0, 256, (40, 28, 28)), "t10k": rng.integers(0, 256, (30, 28, 28))}
    labels = {"train": np.arange(40) % 10, "t10k": np.arange(30) % 10}
    for part in ("train", "t10k"):
        write_idx(raw / f"{part}-images-idx3-ubyte", images[part])
        write_idx(raw / f"{part}-labels-idx1-ubyte", labels[part])
    spec = {"source": "fashion_mnist", "image_size": 28, "split_seed": 0, "max_train": 20, "max_test": 10}
    data = prepare_dataset(spec, root=tmp_path)
    for part, split, n in (("train", "train", 20), ("t10k", "test", 10)):
        x, y = data[f"x_{split}"][:, 0], data[f"y_{split}"]
        assert len(x) == n and np.all(np.bincount(y, minlength=10) == n // 10)
        rows = [int(np.flatnonzero((images[part] == img).all(axis=(1, 2)))[0]) for img in x]
        assert rows == sorted(rows) and np.array_equal(labels[part][rows], y)  # whole rows, in file order
    other = prepare_dataset({**spec, "split_seed": 1}, root=tmp_path)
    assert not np.array_equal(other["x_train"], data["x_train"])
    again = prepare_dataset(spec, root=tmp_path)
    assert all(np.array_equal(again[key], data[key]) for key in data)  # fixed by the seed


def test_fetch_torchvision_downloads_both_splits_into_the_source_folder(tmp_path, monkeypatch):
    """fetch_torchvision asks torchvision's own class for both splits with download=True in
    root/<source>; an offline failure (an OSError such as URLError) names the source, the
    folder and the files to place by hand."""
    calls = []

    class Recorder:
        def __init__(self, root, train, download):
            calls.append((root, train, download))

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Recorder)
    fetch_torchvision("fashion_mnist", root=tmp_path)
    assert calls == [(str(tmp_path / "fashion_mnist"), True, True), (str(tmp_path / "fashion_mnist"), False, True)]

    class Offline:
        def __init__(self, root, train, download):
            raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Offline)
    folder = (tmp_path / "cifar100").resolve()
    with pytest.raises(RuntimeError, match=rf"^cannot download cifar100 \(<urlopen error no route to host>\)\. Without network "
                                           rf"access, place torchvision's files of CIFAR100 .* in {re.escape(str(folder))}\.$"):
        fetch_torchvision("cifar100", root=tmp_path)


class FakeRGB:
    """A torchvision-style dataset of HWC uint8 images (as torchvision's CIFAR and SVHN-like
    classes hold them) with a list of int targets."""

    def __init__(self, root, train, download):
        rng = np.random.default_rng(0 if train else 1)
        self.data = rng.integers(0, 256, (5 if train else 3, 6, 6, 3), dtype=np.uint8)
        self.targets = [0, 1, 0, 1, 1][: len(self.data)]


def test_torchvision_hwc_images_become_chw(monkeypatch):
    """Torchvision's HWC arrays are transposed to (n, c, h, w), pixel for pixel, per split."""
    monkeypatch.setitem(data_module.TORCHVISION, "fake_rgb", "FakeRGB")
    monkeypatch.setattr(torchvision.datasets, "FakeRGB", FakeRGB, raising=False)
    data = prepare_dataset({"source": "fake_rgb", "image_size": 6, "split_seed": 0})
    for split, train in (("train", True), ("test", False)):
        hwc = FakeRGB(None, train, False).data
        assert data[f"x_{split}"].shape == (len(hwc), 3, 6, 6) and data[f"x_{split}"].flags.c_contiguous
        for i, c, h, w in [(0, 0, 0, 0), (1, 2, 3, 4), (len(hwc) - 1, 1, 5, 2)]:
            assert data[f"x_{split}"][i, c, h, w] == hwc[i, h, w, c]
        np.testing.assert_array_equal(data[f"y_{split}"], FakeRGB(None, train, False).targets)


@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (2, 3, 6, 4), (1, 6, 5, 5)])
def test_resize_of_non_square_images_is_pils_bilinear_per_channel(shape):
    """Every (h, w) that is not size x size is resized to it (a side already equal to ``size``
    does not stop the resize), channel by channel, as PIL's bilinear resize does."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    out = data_module._resize(images, 6)
    expected = [[np.asarray(Image.fromarray(ch).resize((6, 6), Image.BILINEAR)) for ch in img] for img in images]
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.uint8))
    assert data_module._resize(out, 6) is out  # already size x size: unchanged, no copy


def test_shapes_default_size_and_unknown_sources():
    """Without n_samples the shapes source makes 2,000 sprites; a source the library does not
    know is named in the error."""
    data = prepare_dataset({"source": "shapes", "image_size": 8, "test_fraction": 0.25, "split_seed": 0})
    assert len(data["y_train"]) + len(data["y_test"]) == 2000 and len(data["y_test"]) == 500
    with pytest.raises(ValueError, match=r"^dataset source 'mnist' is not one of "):
        prepare_dataset({"source": "mnist", "image_size": 8, "test_fraction": 0.25, "split_seed": 0})


def test_imagefolder_classes_file_errors_name_the_key(tmp_path):
    """A classes_file that is missing, empty, or lists classes outside dataset.classes is
    rejected with the key and the offending names, before any image is read."""
    folder = colour_folder(tmp_path / "images", {s: {"a": 2, "b": 2} for s in ("train", "val")})
    classes = write_classes_file(tmp_path / "classes.txt", ["a", "b"])
    spec = folder_spec(folder, classes=str(classes), num_classes=2)
    with pytest.raises(FileNotFoundError, match=r"^dataset.classes_file = '.*nothing.txt': no such file$"):
        prepare_dataset({**spec, "classes_file": str(tmp_path / "nothing.txt")})
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"^dataset.classes_file = '.*empty.txt': no class names$"):
        prepare_dataset({**spec, "classes_file": str(tmp_path / "empty.txt")})
    outside = write_classes_file(tmp_path / "outside.txt", ["a", "x", "y"])
    with pytest.raises(ValueError, match=rf"^dataset.classes_file = {re.escape(repr(str(outside)))}: 2 classes not in "
                                         r"dataset.classes: \['x', 'y'\]$"):
        prepare_dataset({**spec, "classes_file": str(outside)})
    many = write_classes_file(tmp_path / "many.txt", ["a", *"stuvwxyz"])  # 8 outside: the first 5 are named
    with pytest.raises(ValueError, match=r": 8 classes not in dataset.classes: \['s', 't', 'u', 'v', 'w'\]$"):
        prepare_dataset({**spec, "classes_file": str(many)})


def test_imagefolder_train_and_test_come_from_their_folders_fixed_by_the_seed(tmp_path):
    """x_train is read from train/, x_test from val/ (different colours here), and the capped
    subsets are the same for the same split_seed."""
    folder = tmp_path / "images"
    for split, shade in (("train", 40), ("val", 200)):
        for name in ("a", "b"):
            (folder / split / name).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (8, 8), (shade, i * 10, 0 if name == "a" else 255)).save(folder / split / name / f"{i}.png")
    classes = write_classes_file(tmp_path / "classes.txt", ["a", "b"])
    spec = folder_spec(folder, classes=str(classes), num_classes=2, max_train=4, max_test=4)
    data = prepare_dataset(spec)
    assert np.all(data["x_train"][:, 0] == 40) and np.all(data["x_test"][:, 0] == 200)
    again = prepare_dataset(spec)
    assert all(np.array_equal(again[key], data[key]) for key in data)


def test_train_image_size_stores_whole_centre_squares_and_the_test_split_as_evaluated(tmp_path):
    """dataset.train_image_size: training images are torchvision's Resize(S) + CenterCrop(S)
    (the whole centre square, what random resized crops are cut from), test images the
    evaluation transform at image_size; ImageNet-100's shipped list names its labels."""
    from torchvision import datasets, transforms

    from robustlens.data import prepare_dataset
    from robustlens.imagefolder import IMAGENET100, class_list

    hundred = class_list(IMAGENET100, 100)
    assert len(hundred) == 100 == len(set(hundred)) and hundred == sorted(hundred) and set(hundred) <= set(imagenet_classes())
    classes = [hundred[0], hundred[57]]
    make_imagefolder(tmp_path, classes, n_train_per_class=4, n_val_per_class=3, seed=1)
    (tmp_path / "subset.txt").write_text("\n".join(classes) + "\n")
    spec = {"source": "imagefolder", "root": str(tmp_path), "classes": IMAGENET100, "num_classes": 100,
            "classes_file": str(tmp_path / "subset.txt"), "image_size": 24, "train_image_size": 30, "split_seed": 0}
    parts = prepare_dataset(spec)
    assert parts["x_train"].shape == (8, 3, 30, 30) and parts["x_test"].shape == (6, 3, 24, 24)
    assert sorted(set(parts["y_train"].tolist())) == [0, 57]  # positions in ImageNet-100's list
    square = datasets.ImageFolder(tmp_path / "train", transform=transforms.Compose(
        [transforms.Resize(30), transforms.CenterCrop(30), transforms.PILToTensor()]))
    np.testing.assert_array_equal(parts["x_train"], np.stack([x.numpy() for x, _ in square]))
    evaluated = datasets.ImageFolder(tmp_path / "val", transform=transforms.Compose(
        [transforms.Resize(27), transforms.CenterCrop(24), transforms.PILToTensor()]))
    np.testing.assert_array_equal(parts["x_test"], np.stack([x.numpy() for x, _ in evaluated]))
