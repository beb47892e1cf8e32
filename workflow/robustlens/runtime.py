"""Devices, threads and determinism: everything a job sets before it computes."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from pathlib import Path

import torch

#: Where GPU jobs of one working directory take their slots (one lock file per GPU and machine).
SLOTS_DIR = Path(".snakemake") / "gpu-slots"

#: The slot this process holds: (device index, open lock file descriptor); kept until it exits.
_held_slot: tuple[int, int] | None = None


def resolve_device(name: str = "auto", gpus: int | None = None) -> torch.device:
    """The torch device a job computes on.

    ``name`` is the config's ``device``: ``auto`` (CUDA when torch sees it, else the CPU),
    ``cpu``, ``cuda`` or an explicit ``cuda:<i>`` (any other name is passed to torch).
    ``gpus`` is the job's ``gpu`` resource: a job given none (``gpu=0``, e.g. on a CPU
    partition) runs on the CPU under ``auto``, and asking it for ``cuda`` is an error.

    ``auto`` and ``cuda`` give each job its own GPU: where the cluster gave the job one device
    (``CUDA_VISIBLE_DEVICES`` names exactly one), it is ``cuda:0``; on a workstation, the job
    takes one of the GPUs' slots (:func:`take_gpu_slot`), waiting while every GPU is held by
    another job, so concurrent jobs never share a card."""
    if gpus is not None and int(gpus) <= 0:
        if name == "auto":
            return torch.device("cpu")
        if torch.device(name).type == "cuda":
            raise ValueError(f"device {name!r}, but this job was given no GPU (its resource gpu=0): "
                             "give its rule gpu=1 (e.g. profiles/slurm-gpu), or use device auto or cpu")
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        name = "cuda"
    if name != "cuda":
        return torch.device(name)
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda', but torch sees no CUDA device here: use device auto or cpu")
    return torch.device("cuda", _gpu_index())


def _gpu_index() -> int:
    """This process's GPU: 0 where CUDA_VISIBLE_DEVICES names one device, else a held slot."""
    global _held_slot
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if len([d for d in visible.split(",") if d.strip()]) == 1:
        return 0
    if _held_slot is None:
        _held_slot = take_gpu_slot(torch.cuda.device_count())
    return _held_slot[0]


def take_gpu_slot(n_gpus: int, directory: Path | str | None = None, poll_s: float = 1.0) -> tuple[int, int]:
    """Lock the first free one of ``n_gpus`` slot files ``<directory>/<host>/<i>.lock`` (default
    ``.snakemake/gpu-slots`` in the working directory) and return ``(i, fd)``; wait while all
    are locked. The lock (``flock``) lasts until ``fd`` is closed, i.e. until the job's process
    ends, however it ends; the host name keeps machines sharing a file system apart."""
    if n_gpus < 1:
        raise ValueError(f"no GPU slot to take among {n_gpus} GPUs")
    folder = Path(directory if directory is not None else SLOTS_DIR) / socket.gethostname()
    folder.mkdir(parents=True, exist_ok=True)
    waiting = False
    while True:
        for i in range(n_gpus):
            fd = os.open(folder / f"{i}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return i, fd
        if not waiting:
            print(f"robustlens: all {n_gpus} GPUs are held by other jobs; waiting for one", file=sys.stderr, flush=True)
            waiting = True
        time.sleep(poll_s)


def configure_torch(threads: int, deterministic: bool = True) -> None:
    """Use exactly ``threads`` intra-op threads (the rule's ``threads:``), so parallel jobs do
    not oversubscribe the cores and float reductions happen in the same order in every run.
    ``deterministic`` (the config's ``deterministic``): deterministic algorithms and
    ``cudnn.benchmark`` off (bit-reproducible runs); false: cuDNN picks the fastest algorithm
    for each shape, and GPU results may differ in the last bits between runs."""
    torch.set_num_threads(max(1, int(threads)))
    # What torch.use_deterministic_algorithms(..., warn_only=True) sets for eager execution.
    # The public function also sets torch.compile's (inductor's) flag, which imports inductor
    # and dynamo: 2.7 s in every job, for a compiler robustlens never uses.
    torch._C._set_deterministic_algorithms(bool(deterministic), warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


#: The config's ``precision``: fp32 everywhere, or bf16 autocast in training and extraction
#: forward passes (weights, optimiser state and stored activations stay float32).
PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (a no-op context for fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def memory_format(channels_last: bool) -> torch.memory_format:
    """The memory layout of models and image batches: channels-last (NHWC, faster convolutions
    on tensor-core GPUs) or the default contiguous NCHW."""
    return torch.channels_last if channels_last else torch.contiguous_format


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch random generator on ``device`` seeded with ``seed`` (no global state)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
