"""Fault injection for tests/faults, loaded by every Python process started with this folder on
PYTHONPATH (Snakemake's job scripts included). Inert unless ROBUSTLENS_FAULT is set.

``ROBUSTLENS_FAULT=<point>`` makes the job script that reaches <point> write
``$ROBUSTLENS_FAULT_DIR/<point>.paused`` (its pid inside) and wait there until
``<point>.release`` appears (or 120 s pass): the test then kills it, or lets it go on. Points:

- ``checkpoint``: halfway through writing a checkpoint (half its bytes in the temporary file);
- ``store``: a store fully written under its temporary name, before its checksum and rename;
- ``target_store``: in make_probe, before the second target's store (the probe store and the
  first target's store are written, the activation directory still has its temporary name).
"""

import os
import sys

POINT = os.environ.get("ROBUSTLENS_FAULT")
SCRIPT = os.path.basename(sys.argv[0]) if sys.argv else ""


def _pause(point: str) -> None:
    import time
    from pathlib import Path

    folder = Path(os.environ["ROBUSTLENS_FAULT_DIR"])
    marker = folder / f"{point}.paused"
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not (folder / f"{point}.release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _install(point: str) -> None:
    if point == "checkpoint":
        import io

        import torch

        real_save = torch.save

        def half_then_pause(obj, f, *args, **kwargs):
            if not hasattr(f, "write"):
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            _pause(point)
            f.write(data[len(data) // 2 :])

        torch.save = half_then_pause
    elif point == "store":
        import robustlens.store as store

        real_checksum = store.directory_checksum

        def pause_then_checksum(root):
            _pause(point)
            return real_checksum(root)

        store.directory_checksum = pause_then_checksum
    elif point == "target_store":
        import robustlens.store as store

        real_write = store.write_store
        calls = []

        def pause_before_second_target(ds, path, *args, **kwargs):
            calls.append(path)
            if len(calls) == 3:  # the probe store, the first target's, now the second target's
                _pause(point)
            return real_write(ds, path, *args, **kwargs)

        store.write_store = pause_before_second_target
    else:
        raise ValueError(f"unknown fault point {point!r}")


# Snakemake's job scripts run as .snakemake/scripts/tmpXXXX.<script>.py; the Snakemake
# process itself is left alone.
if POINT and SCRIPT.startswith("tmp") and SCRIPT.endswith(".py"):
    _install(POINT)
