"""Measured throughput of the paper configs' networks: the number benchmarks/paper_scale.py
otherwise assumes (9.75 TFLOP/s sustained float32 on one GPU).

For each architecture at its config's image size: images per second of a forward pass, and of
a forward and backward pass to both the weights and the input (a training or PGD step), in the
settings robustlens runs (float32, deterministic algorithms, ``cudnn.benchmark`` off:
robustlens.runtime.configure_torch), and in the plain settings a user's own script would use
(cudnn.benchmark on, TF32 matrix products allowed) as the baseline, with the ratio. Achieved
TFLOP/s = images/s x forward GFLOPs x 3 (paper_scale.FWD_BWD) for the backward step.

Usage: python benchmarks/gpu_throughput.py [--device cuda] [--batch 128] [--seconds 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from robustlens.runtime import configure_torch
from robustlens.zoo import build_model

#: (label, model spec, image size, forward GFLOPs per image: paper_scale.GFLOPS's sources).
NETWORKS = [
    ("resnet18_cifar, 32 px", {"source": "train", "arch": {"name": "resnet18_cifar", "in_channels": 3, "num_classes": 10}}, 32, 0.56),
    ("resnet18, 224 px", {"id": "r18", "source": "url", "arch": {"name": "resnet18", "num_classes": 1000}}, 224, 1.82 * 2),
    ("resnet50, 224 px", {"id": "r50", "source": "url", "arch": {"name": "resnet50", "num_classes": 1000}}, 224, 4.09 * 2),
]


def images_per_second(model, x: torch.Tensor, backward: bool, seconds: float) -> float:
    """Images per second of ``model`` on batch ``x`` (after warm-up), timed with synchronisation."""
    def step():
        if backward:
            xi = x.detach().requires_grad_(True)
            model(xi).logsumexp(1).sum().backward()
        else:
            with torch.no_grad():
                model(x)

    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    sync()
    return n * len(x) / (time.perf_counter() - start)


def plain_settings() -> None:
    """What a plain training script runs with: cudnn autotuning and TF32 products allowed."""
    torch._C._set_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; batch {args.batch}; torch {torch.__version__}\n")
    print("network | pass | robustlens img/s | TFLOP/s | plain img/s | robustlens / plain")
    print("---|---|---|---|---|---")
    for label, spec, size, gflops in NETWORKS:
        model = build_model(spec).to(device).train()
        x = torch.rand(args.batch, 3, size, size, device=device)
        for backward in (False, True):
            configure_torch(torch.get_num_threads())
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            ours = images_per_second(model, x, backward, args.seconds)
            plain_settings()
            plain = images_per_second(model, x, backward, args.seconds)
            tflops = ours * gflops * (3 if backward else 1) / 1e3
            print(f"{label} | {'fwd+bwd' if backward else 'fwd'} | {ours:.0f} | {tflops:.1f} | {plain:.0f} | {ours / plain:.2f}", flush=True)
        del model, x
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
