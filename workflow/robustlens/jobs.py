"""What every workflow script does around its computation: logging and provenance.

No torch import here: table and figure scripts use this module and must start fast.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import metadata

import robustlens


def redirect_output(log_path: str) -> None:
    """Send this job's stdout and stderr (progress bars included) to its log file."""
    handle = open(log_path, "w", buffering=1)
    sys.stdout = handle
    sys.stderr = handle


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
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_json(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)
