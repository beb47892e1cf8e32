"""A full disk (ENOSPC, injected into the real writes) while a store or checkpoint is written:
the write fails with an error naming the file, leaves nothing behind (no store, no manifest, no
temporary files), and the same write succeeds once space is free again, byte for byte as one
that never failed."""

from __future__ import annotations

import errno
import os
import pathlib

import numpy as np
import pytest
import torch
import zarr.storage._local as zarr_local

from robustlens.activations import activations_dataset, write_target_stores
from robustlens.checkpoints import save_state_dict, sha256_file
from robustlens.store import StoreError, manifest_path, verify_store, write_store
from robustlens.zoo import build_architecture


def enospc(name=""):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)


def dataset():
    rng = np.random.default_rng(1)
    acts = {"block1": rng.normal(size=(30, 4)).astype(np.float32), "logits": rng.normal(size=(30, 10)).astype(np.float32)}
    return activations_dataset(acts, rng.integers(0, 10, 30))


def fill_disk(monkeypatch, phase):
    """Make the ``phase`` of a store write fail with ENOSPC: the first zarr file written
    (metadata), the third (chunks, after some files are on disk), or the manifest."""
    if phase in ("metadata", "chunks"):
        real_put, calls = zarr_local._put, []
        fail_at = 1 if phase == "metadata" else 3

        def put(path, value, *args, **kwargs):
            calls.append(path)
            if len(calls) >= fail_at:
                raise enospc(str(path))
            return real_put(path, value, *args, **kwargs)

        monkeypatch.setattr(zarr_local, "_put", put)
    else:
        real_write_text = pathlib.Path.write_text

        def write_text(self, *args, **kwargs):
            if ".manifest.json" in self.name:
                real_write_text(self, "{\"partial\": ")  # some bytes made it before the disk filled
                raise enospc(str(self))
            return real_write_text(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "write_text", write_text)


@pytest.mark.parametrize("phase", ["metadata", "chunks", "manifest"])
def test_store_write_on_a_full_disk_leaves_nothing_and_succeeds_later(tmp_path, monkeypatch, phase):
    control = write_store(dataset(), tmp_path / "control" / "m.zarr", {"spec": "m"})
    out = tmp_path / "out"
    out.mkdir()
    path = out / "m.zarr"
    with monkeypatch.context() as patch:
        fill_disk(patch, phase)
        with pytest.raises(StoreError) as err:
            write_store(dataset(), path, {"spec": "m"})
    message = str(err.value)
    assert str(path) in message and "No space left on device" in message and "rerun" in message
    assert list(out.iterdir()) == []  # no store, no manifest, no temporary files

    manifest = write_store(dataset(), path, {"spec": "m"})  # space freed: the rerun
    assert manifest["checksum"] == control["checksum"]
    verify_store(path)
    assert sorted(p.name for p in out.iterdir()) == ["m.zarr", "m.zarr.manifest.json"]


def test_full_disk_while_replacing_a_store_leaves_no_stale_store(tmp_path, monkeypatch):
    """An old store at the path is not left looking valid beside a failed new one."""
    path = tmp_path / "m.zarr"
    write_store(dataset(), path, {"spec": "old"})
    with monkeypatch.context() as patch:
        fill_disk(patch, "chunks")
        with pytest.raises(StoreError):
            write_store(dataset(), path, {"spec": "new"})
    assert list(tmp_path.iterdir()) == []
    assert not manifest_path(path).exists()


def test_probe_stores_on_a_full_disk_leave_no_directory(tmp_path, monkeypatch):
    """make_probe's directory of target stores: a full disk at the second target leaves neither
    the directory nor its temporary (the first target's finished store goes too)."""
    torch.manual_seed(0)
    arch = {"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [4], "convs_per_block": 1}
    targets = {name: (build_architecture(arch).eval(), {"spec": name}) for name in ("a", "b")}
    settings = {"layers": ["block1", "logits"], "spatial": "avgpool", "batch_size": 16}
    images, labels = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32), np.arange(20) % 10
    real_put, calls = zarr_local._put, []

    def put(path, value, *args, **kwargs):
        calls.append(path)
        if "b.zarr" in str(path):
            raise enospc(str(path))
        return real_put(path, value, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(zarr_local, "_put", put)
        with pytest.raises(StoreError, match="No space left on device"):
            write_target_stores(targets, images, labels, str(tmp_path / "dir"), activations=settings, progress=False)
    assert any("a.zarr" in str(c) for c in calls)  # the first store was written before
    assert list(tmp_path.iterdir()) == []

    index = write_target_stores(targets, images, labels, str(tmp_path / "dir"), activations=settings, progress=False)
    assert sorted(index) == ["a", "b"]
    for name in index:
        assert verify_store(tmp_path / "dir" / f"{name}.zarr")["checksum"] == index[name]


def test_checkpoint_write_on_a_full_disk_leaves_nothing_and_succeeds_later(tmp_path, monkeypatch):
    torch.manual_seed(0)
    state = build_architecture({"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [4], "convs_per_block": 1}).state_dict()
    control = save_state_dict(state, tmp_path / "control.pt")
    out = tmp_path / "out"
    out.mkdir()
    real_save = torch.save

    def save_until_full(obj, f, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[:100])
        raise enospc()

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", save_until_full)
        with pytest.raises(OSError) as err:
            save_state_dict(state, out / "checkpoint.pt")
    assert err.value.errno == errno.ENOSPC
    assert str(out / "checkpoint.pt") in str(err.value) and "rerun" in str(err.value)
    assert list(out.iterdir()) == []

    assert save_state_dict(state, out / "checkpoint.pt") == control == sha256_file(tmp_path / "control.pt")
