"""Devices, threads and determinism: everything a job sets before it computes."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; any other name is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure_torch(threads: int, deterministic: bool = True) -> None:
    """Use exactly ``threads`` intra-op threads (the rule's ``threads:``), so parallel jobs do
    not oversubscribe the cores and float reductions happen in the same order in every run."""
    torch.set_num_threads(max(1, int(threads)))
    if deterministic:
        # What torch.use_deterministic_algorithms(True, warn_only=True) sets for eager execution.
        # The public function also sets torch.compile's (inductor's) flag, which imports inductor
        # and dynamo: 2.7 s in every job, for a compiler robustlens never uses.
        torch._C._set_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch random generator on ``device`` seeded with ``seed`` (no global state)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
