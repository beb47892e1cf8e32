"""Dataset sources besides the embedded digits: procedural shapes and image folders (ImageNet
layout, ImageNet-100-style class subsets), with the split sizes the config predicts."""

import math

import numpy as np
import pytest
from PIL import Image

from robustlens.config import n_test_images as predicted_test_size
from robustlens.data import prepare_dataset


def test_shapes_source_splits_sprites_by_test_fraction():
    spec = {"source": "shapes", "image_size": 16, "test_fraction": 0.25, "split_seed": 0, "n_samples": 80}
    data = prepare_dataset(spec)
    assert data["x_test"].shape == (20, 1, 16, 16) and len(data["x_train"]) == 60
    assert len(data["x_test"]) == predicted_test_size(spec) == math.ceil(80 * 0.25)
    assert 0.0 <= data["x_train"].min() and data["x_train"].max() <= 1.0
    assert set(np.unique(data["y_train"])) <= {0, 1, 2, 3}


@pytest.fixture
def folder(tmp_path):
    """train/ and val/ with classes a, b, c; each image a constant colour per class, 40x30 px."""
    colours = {"a": (255, 0, 0), "b": (0, 255, 0), "c": (0, 0, 255)}
    for split, n in (("train", 6), ("val", 4)):
        for name, colour in colours.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), colour).save(tmp_path / split / name / f"{i}.png")
    return tmp_path


def test_imagefolder_subset_keeps_full_label_indices(folder, tmp_path):
    (tmp_path / "classes.txt").write_text("b\nc\n")
    spec = {"source": "imagefolder", "root": str(folder), "classes_file": str(tmp_path / "classes.txt"),
            "image_size": 8, "test_fraction": 0.2, "split_seed": 0, "max_train": 4, "max_test": 6}
    data = prepare_dataset(spec)
    assert data["x_train"].shape == (4, 3, 8, 8) and data["x_test"].shape == (6, 3, 8, 8)
    assert len(data["x_test"]) == predicted_test_size(spec)
    # labels are indices among all class folders (a=0, b=1, c=2): the subset keeps 1 and 2
    assert sorted(np.unique(data["y_test"])) == [1, 2] and np.bincount(data["y_test"]).tolist() == [0, 3, 3]
    # a class's colour survives resize and crop exactly, in [0, 1], channel-first
    green = data["x_test"][data["y_test"] == 1]
    assert np.allclose(green[:, 1], 1.0) and np.allclose(green[:, [0, 2]], 0.0)


def test_imagefolder_missing_root_names_the_folder(tmp_path):
    spec = {"source": "imagefolder", "root": str(tmp_path / "nope"), "image_size": 8, "test_fraction": 0.2,
            "split_seed": 0, "max_train": 4, "max_test": 4}
    with pytest.raises(FileNotFoundError, match="nope"):
        prepare_dataset(spec)
