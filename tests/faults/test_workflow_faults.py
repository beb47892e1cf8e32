"""Jobs killed with SIGKILL halfway: nothing the killed job wrote is ever taken as complete, and
the rerun rebuilds exactly what a clean run makes. Killed are Snakemake and its job together
(a lost node: the rerun needs ``--unlock``, then ``--rerun-incomplete``) or the job alone (the
out-of-memory killer: a plain rerun). A second Snakemake on a working directory in use refuses
to start. A store or checkpoint damaged after it was written stops the next job that reads it,
with the file and the way out named, and following that way out rebuilds byte-identical results.

The jobs are paused at a chosen point by tests/faults/inject/sitecustomize.py, so "halfway" is
the same point on every run: a checkpoint half written, a store written but not yet renamed, a
probe job with one of its stores in place and the next one not yet written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
from faultlib import (
    CHECKPOINT,
    METRICS,
    NATURAL,
    PAIR_CSV,
    PROBE,
    PROBE_ACTIVATIONS,
    PausedRun,
    copy_run,
    leftovers,
    process_gone,
    run,
)

from robustlens.store import manifest_path, open_store, verify_store


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """A clean run of what the fault tests kill: both standard models, their natural stores,
    the adversarial probe of the first, and the similarity of the pair on every probe."""
    workdir = tmp_path_factory.mktemp("fault_reference")
    proc = run(workdir, "--cores", "2", NATURAL, PROBE_ACTIVATIONS, PAIR_CSV)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return workdir


@pytest.fixture
def pause():
    """Start a run that pauses at a fault point; any still running at the end is killed, so a
    failing test leaves no Snakemake behind."""
    runs = []

    def start(*args, **kwargs):
        runs.append(PausedRun(*args, **kwargs))
        return runs[-1]

    yield start
    for paused in runs:
        paused.kill()


def rerun_after_kill(workdir, *targets, check_refusal=True):
    """What the README says to do after Snakemake itself was killed: the lock it left refuses
    the next run until ``--unlock``; then ``--rerun-incomplete`` redoes the killed job."""
    if check_refusal:
        refused = run(workdir, "--cores", "2", "--rerun-incomplete", *targets)
        assert refused.returncode != 0
        assert "cannot be locked" in refused.stderr and "--unlock" in refused.stderr
    assert run(workdir, "--unlock").returncode == 0
    proc = run(workdir, "--cores", "2", "--rerun-incomplete", *targets)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


def test_training_killed_while_writing_its_checkpoint(reference, tmp_path, pause):
    work = copy_run(reference, tmp_path / "w", CHECKPOINT, METRICS)
    paused = pause(work, "checkpoint", CHECKPOINT)
    partial = list(work.glob(f"{CHECKPOINT}".replace("checkpoint.pt", ".checkpoint.pt.tmp*")))
    full_size = (reference / CHECKPOINT).stat().st_size
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < full_size  # halfway, really
    paused.kill()
    assert process_gone(paused.job_pid), "the training job survived the kill"

    # nothing at the final names: no checkpoint, no metrics (whose sha256 would vouch for it)
    assert not (work / CHECKPOINT).exists() and not (work / METRICS).exists()
    proc = rerun_after_kill(work, CHECKPOINT)
    assert "train_model" in proc.stderr

    assert (work / CHECKPOINT).read_bytes() == (reference / CHECKPOINT).read_bytes()
    assert json.loads((work / METRICS).read_text())["sha256"] == json.loads((reference / METRICS).read_text())["sha256"]
    assert leftovers(work / "results") == [], "the killed job's half checkpoint was not removed"


def test_extraction_job_killed_before_its_store_is_renamed_while_a_second_snakemake_is_refused(
    reference, tmp_path, pause
):
    """Only the job is killed here (the out-of-memory killer, a cluster's time limit): Snakemake
    sees it fail, removes its outputs and releases its lock, so a plain rerun is enough."""
    work = copy_run(reference, tmp_path / "w", NATURAL)
    paused = pause(work, "store", NATURAL)
    temporary = leftovers(work / "results")
    assert len(temporary) == 1, "the store should be under its temporary name now"
    before = sorted((p.relative_to(work), p.stat().st_size) for p in (work / "results").rglob("*") if p.is_file())

    # a second Snakemake on the same directory, same target, while the first one works: refused
    second = run(work, "--cores", "1", NATURAL)
    assert second.returncode != 0 and "cannot be locked" in second.stderr
    after = sorted((p.relative_to(work), p.stat().st_size) for p in (work / "results").rglob("*") if p.is_file())
    assert after == before, "the refused run changed files"

    os.kill(paused.job_pid, signal.SIGKILL)
    assert paused.proc.wait(120) != 0
    assert "Error in rule extract_natural" in paused.text()
    assert not (work / NATURAL).exists() and not manifest_path(work / NATURAL).exists()
    assert not list((work / ".snakemake").glob("locks/*")), "Snakemake kept its lock"

    proc = run(work, "--cores", "2", NATURAL)  # no --unlock, no --rerun-incomplete needed
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = verify_store(reference / NATURAL)["checksum"]
    assert verify_store(work / NATURAL)["checksum"] == expected
    assert leftovers(work / "results") == [], "the killed job's temporary store was not removed"


def test_probe_job_killed_between_its_stores(reference, tmp_path, pause):
    work = copy_run(reference, tmp_path / "w", PROBE, PROBE_ACTIVATIONS)
    paused = pause(work, "target_store", PROBE_ACTIVATIONS)
    paused.kill()
    assert process_gone(paused.job_pid)

    # The probe store was renamed into place with a valid manifest before the kill, but the job
    # did not finish: Snakemake's incomplete tracking must refuse it (and its partial activation
    # directory never got its final name).
    verify_store(work / PROBE)
    assert not (work / PROBE_ACTIVATIONS).exists()
    assert not (work / f"{PROBE_ACTIVATIONS}.index.json").exists()
    dry = run(work, "-n", PROBE_ACTIVATIONS)
    out = dry.stdout + dry.stderr
    assert dry.returncode != 0 and "IncompleteFilesException" in out
    assert PROBE in out and "--rerun-incomplete" in out

    rerun_after_kill(work, PROBE_ACTIVATIONS, check_refusal=False)
    index = f"{PROBE_ACTIVATIONS}.index.json"
    assert (work / index).read_bytes() == (reference / index).read_bytes()  # every store's checksum
    assert verify_store(work / PROBE)["checksum"] == verify_store(reference / PROBE)["checksum"]
    for store in sorted((work / PROBE_ACTIVATIONS).glob("*.zarr")):
        open_store(store)
    assert leftovers(work / "results") == []


def test_damaged_store_stops_its_reader_and_the_way_out_rebuilds_it(reference, tmp_path):
    work = copy_run(reference, tmp_path / "w", PAIR_CSV)
    chunk = next(p for p in sorted((work / NATURAL / "block1").rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # truncated after it was written

    failed = run(work, "--cores", "1", "--show-failed-logs", PAIR_CSV)
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "StoreError" in out and f"{NATURAL}: checksum mismatch" in out
    assert f"Delete {NATURAL} and rerun" in out
    assert not (work / PAIR_CSV).exists(), "a table was computed from a damaged store"

    shutil.rmtree(work / NATURAL)  # the way out the message names
    proc = run(work, "--cores", "2", PAIR_CSV)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (work / PAIR_CSV).read_bytes() == (reference / PAIR_CSV).read_bytes()


def test_damaged_checkpoint_stops_the_job_that_loads_it(reference, tmp_path):
    work = copy_run(reference, tmp_path / "w", NATURAL)
    data = bytearray((work / CHECKPOINT).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (work / CHECKPOINT).write_bytes(bytes(data))

    failed = run(work, "--cores", "1", "--show-failed-logs", NATURAL)
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "ChecksumError" in out and f"{CHECKPOINT}: sha256" in out
    assert "Delete it and rerun" in out
    assert not (work / NATURAL).exists() and not manifest_path(work / NATURAL).exists()
    assert leftovers(work / "results") == []
