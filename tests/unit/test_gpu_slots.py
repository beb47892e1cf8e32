"""Each GPU job computes on a card of its own (robustlens.runtime.resolve_device), with a faked
GPU count: no CUDA is needed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from robustlens import runtime

#: One "job": fakes `n` visible GPUs, takes its device, prints it, holds it until stdin closes.
JOB = """
import sys, torch
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: {n}
from robustlens.runtime import resolve_device
print(resolve_device("auto", 1), flush=True)
sys.stdin.read()
"""


def start_job(workdir, n_gpus: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}  # a workstation
    return subprocess.Popen([sys.executable, "-c", JOB.format(n=n_gpus)], cwd=workdir, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_concurrent_jobs_get_distinct_gpus_and_a_finished_job_frees_its_own(tmp_path):
    jobs = [start_job(tmp_path, 3) for _ in range(3)]
    try:
        devices = [job.stdout.readline().strip() for job in jobs]
        assert sorted(devices) == ["cuda:0", "cuda:1", "cuda:2"]
        fourth = start_job(tmp_path, 3)
        jobs.append(fourth)
        assert "all 3 GPUs are held by other jobs; waiting" in fourth.stderr.readline()
        ending = devices.index("cuda:1")
        jobs[ending].kill()  # a job that dies still releases its GPU (the kernel drops its lock)
        jobs[ending].wait()
        assert fourth.stdout.readline().strip() == "cuda:1"
    finally:
        for job in jobs:
            job.kill()
            job.wait()
            job.stdin.close(), job.stdout.close(), job.stderr.close()


@pytest.fixture
def fake_gpus(monkeypatch, tmp_path):
    """A workstation with two GPUs, working in tmp_path, holding no slot yet."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(runtime, "_held_slot", None)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    if runtime._held_slot is not None:
        os.close(runtime._held_slot[1])


def test_a_job_keeps_its_gpu_and_skips_one_held_by_another(fake_gpus):
    other, fd = runtime.take_gpu_slot(2)  # another job of this working directory
    try:
        mine = runtime.resolve_device("cuda", 1)
        assert other == 0 and mine == torch.device("cuda", 1)
        assert runtime.resolve_device("auto", 1) == mine  # the same slot, not a second one
    finally:
        os.close(fd)
    assert (fake_gpus / ".snakemake/gpu-slots").is_dir()


def test_a_job_given_one_device_by_the_cluster_uses_cuda0_without_slots(fake_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # SLURM's --gpus=1 on a node's fourth card
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert runtime.resolve_device("auto", 1) == torch.device("cuda", 0)
    assert not (fake_gpus / ".snakemake").exists()


def test_a_job_given_no_gpu_computes_on_the_cpu(fake_gpus):
    assert runtime.resolve_device("auto", 0) == torch.device("cpu")  # CUDA is visible, but gpu=0
    assert runtime.resolve_device("cpu", 1) == torch.device("cpu")
    with pytest.raises(ValueError, match="given no GPU"):
        runtime.resolve_device("cuda", 0)
    assert runtime._held_slot is None


def test_without_cuda_auto_is_the_cpu_and_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("auto", 1) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        runtime.resolve_device("cuda", 1)
