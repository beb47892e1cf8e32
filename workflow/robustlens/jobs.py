"""What every workflow script does around its computation: logging and provenance.

No torch import here: table and figure scripts use this module and must start fast.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata

import robustlens


#: The line every job's log ends with: its peak resident memory (the rehearsals compare it
#: with the rule's declared ``mem_mb``).
PEAK_MEMORY_PREFIX = "robustlens: peak memory"


def peak_memory_mb() -> float:
    """Peak resident set size of this process so far, in MB (``getrusage``; Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def redirect_output(log_path: str) -> None:
    """Send this job's stdout and stderr (progress bars included) to its log file, which ends
    with the job's peak memory when the job exits."""
    import atexit

    handle = open(log_path, "w", buffering=1)
    sys.stdout = handle
    sys.stderr = handle
    atexit.register(lambda: print(f"{PEAK_MEMORY_PREFIX} {peak_memory_mb():.0f} MB", file=handle))


def spec_sha256(spec) -> str:
    """sha256 of the canonical JSON of a spec: the identity of what an artifact was made from."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance(spec, rule: str) -> dict:
    """Provenance recorded with every artifact: its spec, the spec's hash, the rule, versions."""
    return {
        "rule": rule,
        "spec": spec,
        "spec_sha256": spec_sha256(spec),
        "robustlens": robustlens.__version__,
        "torch": package_version("torch"),
        "zarr": package_version("zarr"),
    }


def write_json(data: dict, path: str) -> None:
    """Write JSON with sorted keys (byte-stable for equal content), through a temporary file."""
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (e.g. a full disk) leaves nothing behind
        raise


def read_json(path: str) -> dict:
    """A JSON file written by :func:`write_json`; an unreadable one raises ``ValueError`` naming
    the file and the way out (a damaged metrics or index file must not pass silently)."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path}: unreadable JSON ({exc}); the file is damaged. Delete it (and the outputs of "
            f"the job that wrote it) and rerun the workflow."
        ) from exc
