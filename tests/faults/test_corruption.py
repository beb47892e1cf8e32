"""A store or checkpoint damaged after it was written: the reader refuses it with an error that
names the file and the way out (delete it, rerun), for every kind of damage in the table.
(tests/unit/test_store.py and tests/unit/test_checkpoints.py hold the first cases; the
workflow-level versions are in test_workflow_faults.py.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from robustlens.activations import activations_dataset
from robustlens.checkpoints import ChecksumError, load_state_dict, save_state_dict
from robustlens.store import StoreError, manifest_path, open_store, verify_store, write_store
from robustlens.zoo import build_architecture


def chunk_of(store, layer):
    return next(p for p in sorted((store / layer).rglob("*")) if p.is_file() and p.name != "zarr.json")


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


STORE_DAMAGE = {
    "truncated chunk": (lambda s: truncate(chunk_of(s, "block1")), "checksum mismatch"),
    "emptied chunk": (lambda s: chunk_of(s, "logits").write_bytes(b""), "checksum mismatch"),
    "flipped byte in a chunk": (lambda s: flip(chunk_of(s, "logits")), "checksum mismatch"),
    "flipped byte in array metadata": (lambda s: flip(s / "block1" / "zarr.json"), "checksum mismatch"),
    "missing chunk": (lambda s: chunk_of(s, "block1").unlink(), "checksum mismatch"),
    "missing layer": (lambda s: shutil.rmtree(s / "logits"), "checksum mismatch"),
    "stray file added": (lambda s: (s / "block1" / "extra").write_bytes(b"x"), "checksum mismatch"),
    "manifest missing": (lambda s: manifest_path(s).unlink(), "did not finish"),
    "manifest truncated": (lambda s: truncate(manifest_path(s)), "unreadable manifest"),
    "manifest binary garbage": (lambda s: manifest_path(s).write_bytes(b"\xff\xfe\x00garbage"), "unreadable manifest"),
    "manifest without checksum": (
        lambda s: manifest_path(s).write_text(json.dumps({"format": "robustlens-store/1"})), "malformed manifest"
    ),
    "store gone, manifest left": (lambda s: shutil.rmtree(s), "store missing"),
}


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    acts = {"block1": rng.normal(size=(20, 6)).astype(np.float32), "logits": rng.normal(size=(20, 3)).astype(np.float32)}
    path = tmp_path / "model.zarr"
    write_store(activations_dataset(acts, rng.integers(0, 3, 20)), path, {"spec": "m"}, list(acts))
    verify_store(path)
    return path


@pytest.mark.parametrize("damage", list(STORE_DAMAGE))
def test_damaged_store_is_refused_naming_file_and_way_out(store, damage):
    hurt, expected = STORE_DAMAGE[damage]
    hurt(store)
    with pytest.raises(StoreError) as err:
        open_store(store)
    message = str(err.value)
    assert expected in message
    assert str(store) in message  # the store (the manifest's name contains it)
    assert "Delete" in message and "rerun" in message


ARCH = {"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [4, 8], "convs_per_block": 1}

CHECKPOINT_DAMAGE = {
    "truncated, sha256 known": (truncate, True, "does not match the recorded"),
    "truncated, no sha256": (truncate, False, "cannot be read as a checkpoint"),
    "flipped byte, sha256 known": (flip, True, "does not match the recorded"),
    "emptied, no sha256": (lambda p: p.write_bytes(b""), False, "cannot be read as a checkpoint"),
    "replaced by text, no sha256": (lambda p: p.write_text("not a checkpoint"), False, "cannot be read as a checkpoint"),
}


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
def test_damaged_checkpoint_is_refused_naming_file_and_way_out(tmp_path, damage):
    hurt, with_sha, expected = CHECKPOINT_DAMAGE[damage]
    path = tmp_path / "checkpoint.pt"
    sha = save_state_dict(build_architecture(ARCH).state_dict(), path)
    hurt(path)
    with pytest.raises(ChecksumError) as err:
        load_state_dict(path, sha256=sha if with_sha else None)
    message = str(err.value)
    assert expected in message and str(path) in message and "Delete it and rerun" in message


def test_undamaged_checkpoint_round_trips(tmp_path):
    """Control for the table above: the same file, undamaged, loads to the same tensors."""
    state = build_architecture(ARCH).state_dict()
    sha = save_state_dict(state, tmp_path / "c.pt")
    loaded = load_state_dict(tmp_path / "c.pt", sha256=sha)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("damage", ["truncated", "binary"])
def test_damaged_json_record_is_refused_naming_file_and_way_out(tmp_path, damage):
    """metrics.json (which holds a checkpoint's sha256) and probe index files."""
    from robustlens.jobs import read_json, write_json

    path = tmp_path / "metrics.json"
    write_json({"sha256": "ab" * 32, "clean_accuracy": 0.9}, str(path))
    assert read_json(str(path))["clean_accuracy"] == 0.9
    if damage == "truncated":
        truncate(path)
    else:
        path.write_bytes(b"\xff\x00\x13")
    with pytest.raises(ValueError) as err:
        read_json(str(path))
    assert str(path) in str(err.value) and "Delete it" in str(err.value) and "rerun" in str(err.value)
