"""Downloads of checkpoints and datasets: resumable, atomic, verified.

A file is downloaded to ``<dest>.part`` (continued with an HTTP Range request when a partial
file is there), verified against its sha256 when one is known, and renamed into place, so a
killed job never leaves a file that looks complete. A file already at ``dest`` with the right
sha256 is accepted without any network access (this is how checkpoints are placed offline).
Offline, a download fails at once with a message naming the file to place and where.

No torch import here.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from robustlens.checkpoints import ChecksumError, sha256_file

#: Seconds to wait for a connection before the download is reported as offline.
CONNECT_TIMEOUT = 30


class DownloadError(RuntimeError):
    """A file could not be downloaded; the message says which file to place where instead."""


def _offline_message(url: str, dest: Path, sha256: str | None, reason) -> str:
    check = f" with sha256 {sha256}" if sha256 else ""
    return (
        f"cannot download {url} ({reason}). Without network access, download it elsewhere and "
        f"place the file at {dest.resolve()}{check}; the workflow then uses it as it is."
    )


def sha256_sidecar(dest: str | Path) -> Path:
    """Where :func:`record_sha256` writes a file's sha256 (``<file>.sha256``, sha256sum's format)."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".sha256")


def record_sha256(path: str | Path, digest: str | None = None) -> str:
    """Write ``path``'s sha256 beside it (``<file>.sha256``, readable by ``sha256sum -c``) and
    print it, so a user who configured no sha256 can pin the file they got. Returns it."""
    path = Path(path)
    digest = digest or sha256_file(path)
    sha256_sidecar(path).write_text(f"{digest}  {path.name}\n")
    print(f"{path}: sha256 {digest} (no sha256 configured: add `sha256: {digest}` to this model's entry to pin it)")
    return digest


def fetch(url: str, dest: str | Path, sha256: str | None = None, *, timeout: float = CONNECT_TIMEOUT, chunk_size: int = 1 << 20) -> Path:
    """Make ``dest`` hold the file at ``url`` (verified against ``sha256`` when given).

    A pre-placed ``dest`` is accepted when its sha256 matches (or when none is known); a
    mismatching one raises :class:`ChecksumError`. Raises :class:`DownloadError` when the
    server cannot be reached. Without a configured ``sha256`` the file's own sha256 is printed
    and recorded beside it (:func:`record_sha256`).
    """
    dest = Path(dest)
    if dest.exists():
        if sha256 is None:
            record_sha256(dest)
        elif (actual := sha256_file(dest)) != sha256.lower():
            raise ChecksumError(
                f"{dest}: sha256 {actual} does not match the configured {sha256}; "
                f"the file is corrupt or is another checkpoint. Delete it (or place the right file there)."
            )
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the partial file is already complete
            response = None
        else:
            raise DownloadError(_offline_message(url, dest, sha256, f"HTTP {err.code}")) from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(_offline_message(url, dest, sha256, getattr(err, "reason", err))) from err
    if response is not None:
        with response:
            resumed = offset and response.status == 206
            with open(part, "ab" if resumed else "wb") as handle:
                shutil.copyfileobj(response, handle, chunk_size)
                handle.flush()
                os.fsync(handle.fileno())
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256.lower():
            part.unlink()
            raise ChecksumError(f"{url}: downloaded sha256 {actual} does not match the configured {sha256}; the partial file was removed")
    part.replace(dest)
    if sha256 is None:
        record_sha256(dest)
    return dest
