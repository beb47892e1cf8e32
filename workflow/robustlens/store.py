"""Zarr stores written atomically, with a manifest that lets every reader verify them.

A store is written through xarray to a temporary directory beside its final path, checksummed
(sha256 over every file's relative path and bytes), renamed into place, and described by a
manifest (``<store>.manifest.json``: shape of each variable, layers, checksum, provenance). A
killed job therefore leaves either nothing at the final path or a store with no manifest, which
every reader rejects; a store changed after it was written fails its checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import xarray as xr

from robustlens.atomic import remove_path, remove_stale_temporaries, temporary_path
from robustlens.jobs import write_json

MANIFEST_SUFFIX = ".manifest.json"
#: Files that are not part of a store's content: Snakemake marks directory() outputs with one.
IGNORED_FILES = {".snakemake_timestamp"}
FORMAT = "robustlens-store/1"


class StoreError(RuntimeError):
    """A store is missing, incomplete or corrupt."""


def manifest_path(store: str | Path) -> Path:
    """Where the manifest of ``store`` lives: beside it, ``<store>.manifest.json``."""
    store = Path(store)
    return store.with_name(store.name + MANIFEST_SUFFIX)


def directory_checksum(root: str | Path) -> tuple[str, int]:
    """sha256 over (relative path, bytes) of every file under ``root`` in sorted order, and the
    number of files; any added, missing, renamed or changed file changes it (Snakemake's
    ``.snakemake_timestamp`` marker excepted)."""
    root = Path(root)
    digest = hashlib.sha256()
    # os.walk(followlinks=True), not rglob: a store taken from Snakemake's between-workflow cache
    # is a directory of symlinks to the cached store's entries, and rglob does not enter those
    files = sorted(
        Path(dirpath, name)
        for dirpath, _, names in os.walk(root, followlinks=True)
        for name in names
        if name not in IGNORED_FILES
    )
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest(), len(files)


def write_store(ds: xr.Dataset, path: str | Path, provenance: dict, layers: list[str] | None = None) -> dict:
    """Write ``ds`` to the zarr store ``path`` atomically and its manifest beside it.

    Returns the manifest. Any previous store or manifest at ``path`` is replaced, and what a
    killed earlier writer left behind is removed first. When writing fails (a full disk, an
    interrupt), nothing is left: no temporary files, no store, no manifest. Operating-system
    errors (ENOSPC, EIO, ...) are raised as :class:`StoreError` naming the store and the way out.
    """
    path = Path(path)
    mpath = manifest_path(path)
    mpath.unlink(missing_ok=True)  # an old manifest must never describe a new, partial store
    remove_stale_temporaries(path)
    remove_stale_temporaries(mpath)
    tmp = temporary_path(path)
    ds.attrs["provenance"] = json.dumps(provenance, sort_keys=True)
    try:
        ds.to_zarr(tmp, mode="w", consolidated=False)
        checksum, n_files = directory_checksum(tmp)
        remove_path(path)
        tmp.rename(path)
        manifest = {
            "format": FORMAT,
            "store": path.name,
            "variables": {name: {"dims": list(var.dims), "shape": list(var.shape)} for name, var in ds.data_vars.items()},
            "layers": list(layers or ds.data_vars),
            "checksum": {"sha256": checksum, "files": n_files},
            "provenance": provenance,
        }
        write_json(manifest, mpath)
    except BaseException as exc:
        for leftover in (tmp, path, mpath):
            remove_path(leftover)
        if isinstance(exc, OSError):
            raise StoreError(
                f"{path}: writing the store failed ({exc}); nothing was kept (no store, no manifest, "
                f"no temporary files). Fix the cause (e.g. free disk space) and rerun the workflow."
            ) from exc
        raise
    return manifest


def read_manifest(path: str | Path) -> dict:
    """The manifest of the store at ``path``; :class:`StoreError` when it is missing or unreadable."""
    mpath = manifest_path(path)
    if not mpath.exists():
        raise StoreError(
            f"{path}: no manifest ({mpath.name}); the job that wrote this store did not finish. "
            f"Delete {path} and rerun the workflow."
        )
    try:
        return json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{mpath}: unreadable manifest ({exc}). Delete {path} and its manifest and rerun.") from exc


def verify_store(path: str | Path) -> dict:
    """Check the store at ``path`` against its manifest checksum; return the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    if not path.is_dir():
        raise StoreError(
            f"{path}: store missing although its manifest exists. Delete {manifest_path(path)} and rerun."
        )
    try:
        expected = {"sha256": str(manifest["checksum"]["sha256"]), "files": int(manifest["checksum"]["files"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(
            f"{manifest_path(path)}: malformed manifest (no checksum: {exc!r}). "
            f"Delete {path} and its manifest and rerun the workflow."
        ) from exc
    checksum, n_files = directory_checksum(path)
    if checksum != expected["sha256"] or n_files != expected["files"]:
        raise StoreError(
            f"{path}: checksum mismatch ({n_files} files, sha256 {checksum[:12]}…; manifest says "
            f"{expected['files']} files, sha256 {expected['sha256'][:12]}…). The store was changed or "
            f"damaged after it was written. Delete {path} and rerun the workflow to rebuild it."
        )
    return manifest


def open_store(path: str | Path, verify: bool = True, load: bool = True) -> xr.Dataset:
    """Open a store written by :func:`write_store`, verified against its manifest first.

    ``load=False`` returns a lazy (chunked) dataset for streaming computations.
    """
    if verify:
        verify_store(path)
    try:
        ds = xr.open_zarr(path, consolidated=False)
        return ds.load() if load else ds
    except Exception as exc:
        raise StoreError(f"{path}: cannot be read ({type(exc).__name__}: {exc}). Delete it and rerun.") from exc
