"""Declared memory (issue 12, item 7): every rule's mem_mb is computed from what its jobs read,
grows on retry. (That at paper scale it covers the data a job holds, on a dry run of a paper
config: tests/workflow/test_resources_workflow.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from robustlens import resources as rs

MB = 2**20


def test_retries_ask_for_more_memory():
    assert [rs.with_attempt(1000, a) for a in (1, 2, 3)] == [1000, 1500, 2250]


def test_image_memory_is_the_bytes_of_the_images():
    images = np.zeros((7, 3, 224, 224), dtype=np.float32)
    assert rs.images_mb(7, 3, 224) == pytest.approx(images.nbytes / MB)
    assert rs.images_mb(7, 3, 224, bytes_per_value=1) == pytest.approx(images.astype(np.uint8).nbytes / MB)


def test_activation_memory_grows_with_pixels_and_batch():
    arch = {"name": "resnet50"}
    assert rs.activation_mb(arch, 224, 8) == pytest.approx(8 * 49 * rs.activation_mb(arch, 32, 1))


def test_tree_bytes_counts_every_file_of_a_store_and_nothing_for_missing_paths(tmp_path):
    store = tmp_path / "a.zarr"
    (store / "x" / "c").mkdir(parents=True)
    (store / "zarr.json").write_bytes(b"1" * 10)
    (store / "x" / "c" / "0").write_bytes(b"1" * 100)
    (tmp_path / "f.json").write_bytes(b"1" * 7)
    assert rs.tree_bytes([store, tmp_path / "f.json", tmp_path / "missing"]) == 117


def test_npz_image_headers_and_transfer_task_memory(tmp_path):
    """Shapes and value sizes of a task's image arrays from their headers only, against the
    arrays themselves; a task's memory: images as stored and as float32, and LP's features."""
    x_train = np.zeros((50, 3, 32, 32), np.uint8)
    x_test = np.zeros((20, 3, 32, 32), np.uint8)
    np.savez(tmp_path / "task.npz", x_train=x_train, x_test=x_test, y_train=np.zeros(50, np.int64))
    np.savez(tmp_path / "float.npz", x_train=np.zeros((7, 1, 16, 16), np.float32), y_train=np.zeros(7))
    assert rs.npz_image_arrays(tmp_path / "task.npz") == {"x_train": ((50, 3, 32, 32), 1), "x_test": ((20, 3, 32, 32), 1)}
    assert rs.npz_image_arrays(tmp_path / "float.npz") == {"x_train": ((7, 1, 16, 16), 4)}
    assert rs.npz_image_arrays(tmp_path / "missing.npz") == {}
    stored, as_float = (x_train.nbytes + x_test.nbytes), 4 * (x_train.nbytes + x_test.nbytes)
    features = rs.LP_FEATURE_COPIES * 50 * rs.FEATURES_MAX * 4
    assert rs.transfer_task_mb(tmp_path / "task.npz") == pytest.approx((stored + as_float + features) / rs.MB)
    assert rs.transfer_task_device_mb(tmp_path / "task.npz") == pytest.approx((as_float + features) / rs.MB)
    assert rs.transfer_task_mb(tmp_path / "missing.npz") == 0
