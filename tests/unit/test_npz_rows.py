"""Rows of a dataset cache read from disk on demand, against numpy's own reader."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from robustlens.data import save_dataset
from robustlens.npz_rows import NpzRows


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (257, 3, 5, 7), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 257),
        "x_test": rng.random((31, 1, 4, 4)).astype(np.float32),
        "y_test": rng.integers(0, 10, 31),
    }
    path = tmp_path_factory.mktemp("rows") / "data.npz"
    save_dataset(arrays, path)
    return path, arrays


@pytest.mark.parametrize("key", ["x_train", "x_test", "y_train"])
def test_rows_equal_numpys_arrays_in_any_order(cache, key):
    path, arrays = cache
    rows = NpzRows(path, key)
    expected = np.load(path)[key]
    assert rows.shape == expected.shape and rows.dtype == expected.dtype and len(rows) == len(expected)
    assert rows.nbytes == expected.nbytes
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(expected), 40)  # unsorted, with repeats
    np.testing.assert_array_equal(rows[idx], expected[idx])
    np.testing.assert_array_equal(rows[np.arange(len(expected))], expected)  # one run: a single read
    np.testing.assert_array_equal(rows[3:20:4], expected[3:20:4])
    np.testing.assert_array_equal(rows[np.array([-1, 0])], expected[[-1, 0]])
    assert rows[np.array([], dtype=np.int64)].shape == (0, *expected.shape[1:])


def test_rows_are_read_at_each_call_not_held(cache, tmp_path):
    """A rewritten file is read afresh: the reader keeps offsets, not images."""
    path, arrays = cache
    copy = tmp_path / "copy.npz"
    save_dataset(arrays, copy)
    rows = NpzRows(copy, "x_train")
    changed = {**arrays, "x_train": 255 - arrays["x_train"]}
    save_dataset(changed, copy)
    np.testing.assert_array_equal(rows[np.array([4, 2])], changed["x_train"][[4, 2]])


def test_bad_inputs_are_named(cache, tmp_path):
    path, arrays = cache
    with pytest.raises(KeyError, match=r"has no array 'x_val' \(arrays: x_train, y_train, x_test, y_test\)"):
        NpzRows(path, "x_val")
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, x_train=arrays["x_train"])
    with pytest.raises(ValueError, match="'x_train' is compressed"):
        NpzRows(compressed, "x_train")
    rows = NpzRows(path, "x_test")
    with pytest.raises(IndexError, match="out of range for 31 rows"):
        rows[np.array([31])]
    with pytest.raises(IndexError, match="one-dimensional"):
        rows[np.zeros((2, 2), dtype=int)]


def test_the_offset_is_the_members_data_in_the_zip(cache):
    """The computed offset points at the .npy payload: the bytes there are the array's."""
    path, arrays = cache
    rows = NpzRows(path, "x_train")
    with open(path, "rb") as f:
        f.seek(rows.offset)
        assert f.read(rows.row_bytes) == arrays["x_train"][0].tobytes()
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("x_train.npy").compress_type == zipfile.ZIP_STORED
