"""Outputs written under a temporary name and renamed into place, so a killed job never leaves
a file or directory that looks complete: the temporary names, and the removal of what killed
writers left behind. Standard library only: checkpoints (:mod:`robustlens.checkpoints`) and
stores (:mod:`robustlens.store`) are written through it.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path


def temporary_path(path: str | Path) -> Path:
    """The temporary name ``path`` is written under before it is renamed into place:
    ``.<name>.tmp<pid>`` beside it (hidden, and never matched by a rule's output pattern)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def remove_path(path: str | Path) -> None:
    """Remove a file, link or directory tree at ``path`` if there is one."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove what killed writers of ``path`` left behind (``.<name>.tmp*`` beside it) and
    return it. Safe because only one job at a time writes a given output (Snakemake's lock)."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{glob.escape(path.name)}.tmp*")) if path.parent.is_dir() else []
    for leftover in stale:
        remove_path(leftover)
    return stale
