"""Checkpoint files: atomic writes, sha256 verification, safe loading.

A checkpoint is read with ``torch.load(weights_only=True)`` so a pickle cannot execute code,
and, where its sha256 is known, verified before it is unpickled at all.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from robustlens.atomic import remove_stale_temporaries, temporary_path


class ChecksumError(RuntimeError):
    """A file's content does not match the sha256 it was recorded with."""


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise :class:`ChecksumError` naming the file and the way out if its sha256 differs."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"{path}: sha256 {actual} does not match the recorded {expected}; the file is corrupt "
            f"or was changed after it was written. Delete it and rerun the workflow to rebuild it."
        )


def save_state_dict(state_dict: dict, path: str | Path) -> str:
    """Write a state dict atomically (temporary name, fsync, rename); return its sha256.

    A killed writer leaves only a hidden temporary file (removed by the next write), never a
    file at ``path``; a failed write (e.g. ENOSPC) leaves nothing."""
    import torch

    path = Path(path)
    remove_stale_temporaries(path)  # half-written files of a killed earlier job
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as handle:
            torch.save(state_dict, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(
                exc.errno, f"{path}: writing the checkpoint failed ({exc.strerror or exc}); nothing was kept. "
                f"Fix the cause (e.g. free disk space) and rerun the workflow."
            ) from exc
        raise
    return sha256_file(path)


def load_state_dict(path: str | Path, sha256: str | None = None) -> dict:
    """Load a state dict with ``weights_only=True`` after checking ``sha256`` (when given)."""
    import torch

    if sha256 is not None:
        verify_sha256(path, sha256)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, unpickling refused, ...
        raise ChecksumError(
            f"{path}: cannot be read as a checkpoint ({type(exc).__name__}: {exc}). "
            f"Delete it and rerun the workflow to rebuild it."
        ) from exc
