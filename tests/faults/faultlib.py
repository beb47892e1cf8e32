"""Helpers of the fault tests: Snakemake runs that pause at a chosen point of a job (fault
injection through ``inject/sitecustomize.py``) and are then killed, released or left running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from support import REPO, SNAKEMAKE, TINY

HERE = Path(__file__).resolve().parent
INJECT = HERE / "inject"
#: The config files of every fault-test run: the tiny study made cheaper.
CONFIGS = (TINY, HERE / "faults.yaml")
#: The models the fault tests use: the tiny study's two standard models (a compared pair).
M0, M1 = "smallcnn-l2-eps0-s0", "smallcnn-l2-eps0-s1"
CHECKPOINT = f"results/models/{M0}/checkpoint.pt"
METRICS = f"results/models/{M0}/metrics.json"
NATURAL = f"results/activations/natural/digits/{M0}.zarr"
PROBE = f"results/probes/adversarial/{M0}.zarr"
PROBE_ACTIVATIONS = f"results/activations/adversarial/{M0}"
PAIR_CSV = f"results/comparisons/similarity/{M0}__{M1}.csv"


def command(workdir: Path, *args: str, configfiles=CONFIGS) -> list[str]:
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    if configfiles:
        cmd += ["--configfile", *map(str, configfiles)]
    return cmd


def fault_env(workdir: Path, point: str | None) -> dict:
    """The environment of a run whose jobs pause at ``point`` (or fail there, for ``enospc``)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if point:
        faults = workdir / "faults"
        faults.mkdir(exist_ok=True)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INJECT), env.get("PYTHONPATH")]))
        env["ROBUSTLENS_FAULT"] = point
        env["ROBUSTLENS_FAULT_DIR"] = str(faults)
    return env


def run(workdir: Path, *args: str, point: str | None = None) -> subprocess.CompletedProcess:
    """A Snakemake run to its end (not checked), with the fault ``point`` injected if given."""
    return subprocess.run(
        command(workdir, *args), capture_output=True, text=True, env=fault_env(workdir, point), timeout=300
    )


class PausedRun:
    """A Snakemake run in its own process group whose job waits at a fault point."""

    def __init__(self, workdir: Path, point: str, *args: str, timeout: float = 120):
        self.workdir, self.point = workdir, point
        self.faults = workdir / "faults"
        env = fault_env(workdir, point)
        self.output = open(self.faults / f"{point}.out", "w+")
        self.proc = subprocess.Popen(
            command(workdir, "--cores", "1", *args), env=env, stdout=self.output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        marker = self.faults / f"{point}.paused"
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the run never reached fault point {point!r}:\n{self.text()[-6000:]}")
            time.sleep(0.05)
        time.sleep(0.1)  # the marker is written before the job sleeps
        self.job_pid = int(marker.read_text())

    def text(self) -> str:
        self.output.flush()
        return (self.faults / f"{self.point}.out").read_text()

    def kill(self) -> None:
        """SIGKILL to Snakemake and every job it started (a node lost, an OOM kill, kill -9)."""
        if self.proc.poll() is None:  # never signal a group whose leader was already reaped
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.output.close()

    def release(self, timeout: float = 300) -> int:
        """Let the paused job go on; the run's exit status."""
        (self.faults / f"{self.point}.release").touch()
        try:
            return self.proc.wait(timeout)
        finally:
            self.output.close()


def process_gone(pid: int, timeout: float = 10) -> bool:
    """Whether ``pid`` has exited (a zombie counts as gone) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def copy_run(source: Path, dest: Path, *remove: str) -> Path:
    """A private copy of a working directory with the given outputs (and their manifests) removed."""
    shutil.copytree(source, dest, symlinks=True)
    for rel in remove:
        for path in (dest / rel, dest / f"{rel}.manifest.json", dest / f"{rel}.index.json"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    return dest


def leftovers(directory: Path) -> list[str]:
    """Temporary files or folders (``.<name>.tmp*``) anywhere under ``directory``."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(".*.tmp*"))
