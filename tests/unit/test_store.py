"""The activation store: values and coordinates round-trip; damage is detected by checksum."""

import numpy as np
import pytest

from robustlens.activations import activations_dataset
from robustlens.store import StoreError, manifest_path, open_store, write_store


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    acts = {"block1": rng.normal(size=(12, 5)).astype(np.float32), "logits": rng.normal(size=(12, 3)).astype(np.float32)}
    labels = rng.integers(0, 3, size=12)
    path = tmp_path / "m.zarr"
    write_store(activations_dataset(acts, labels), path, {"spec": {"model": "m"}}, ["block1", "logits"])
    return path, acts, labels


def test_round_trip_values_and_coordinates(store):
    path, acts, labels = store
    ds = open_store(path)
    for name, values in acts.items():
        np.testing.assert_array_equal(ds[name].values, values)
        assert ds[name].dims == ("sample", f"{name}_unit")
    np.testing.assert_array_equal(ds["label"].values, labels)
    np.testing.assert_array_equal(ds["sample"].values, np.arange(12))


def test_manifest_records_shape_layers_and_provenance(store):
    import json

    path, _, _ = store
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["variables"]["block1"]["shape"] == [12, 5]
    assert manifest["layers"] == ["block1", "logits"]
    assert manifest["provenance"]["spec"] == {"model": "m"}
    assert not list(path.parent.glob(".*tmp*")), "no temporary store left behind"


def test_flipped_byte_is_detected(store):
    path, _, _ = store
    chunk = next(p for p in sorted(path.rglob("*")) if p.is_file() and "block1" in str(p) and "zarr.json" not in p.name)
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="checksum mismatch.*Delete"):
        open_store(path)


def test_missing_chunk_is_detected(store):
    path, _, _ = store
    chunk = next(p for p in sorted(path.rglob("*")) if p.is_file() and "logits" in str(p) and "zarr.json" not in p.name)
    chunk.unlink()
    with pytest.raises(StoreError, match="checksum mismatch"):
        open_store(path)


def test_store_without_manifest_is_incomplete(store):
    path, _, _ = store
    manifest_path(path).unlink()
    with pytest.raises(StoreError, match="did not finish"):
        open_store(path)


def test_manifest_checksum_is_the_documented_sha256_of_the_store(store):
    """sha256 over (relative path, NUL, bytes, NUL) of every file in sorted path order,
    recomputed here with hashlib from the files on disk, and their number."""
    import hashlib
    import json

    path, _, _ = store
    files = sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(path).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["checksum"] == {"sha256": digest.hexdigest(), "files": len(files)}
    assert len(files) > 4  # metadata and chunks of two variables and the coordinates
