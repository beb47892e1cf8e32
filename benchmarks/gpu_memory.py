"""Activation memory a training or attack step keeps for backward, per image, by architecture:
the constants behind the GPU rules' ``gpu_mem_mb`` (robustlens.resources.GPU_ACTIVATION_MB_AT_32).

A GPU holds, during a forward and backward pass, the tensors autograd saves for backward (plus
the output and workspace); what it saves does not depend on the device. This script counts them
on the CPU with ``torch.autograd.graph.saved_tensors_hooks`` (each storage once), for a loss
differentiated to the weights and the input (a PGD training step), at batch 4 and 8, and prints
MB per image (the difference of the two batches over 4, so fixed costs cancel), scaled to
32 x 32 px, against the host measurement (robustlens.resources.ACTIVATION_MB_AT_32, peak RSS on
the CPU, which includes allocator caching). Run: .venv/bin/python benchmarks/gpu_memory.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from robustlens import resources as rs  # noqa: E402
from robustlens.sources import build_url  # noqa: E402
from robustlens.zoo import build_architecture  # noqa: E402

NETWORKS = [
    ("smallcnn", 16, lambda: build_architecture({"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [8, 16, 32, 32], "convs_per_block": 2}), 1),
    ("resnet18_cifar", 32, lambda: build_architecture({"name": "resnet18_cifar", "in_channels": 3, "num_classes": 10}), 3),
    ("resnet18", 224, lambda: build_url({"id": "r18", "arch": {"name": "resnet18", "num_classes": 1000}}), 3),
    ("resnet50", 224, lambda: build_url({"id": "r50", "arch": {"name": "resnet50", "num_classes": 1000}}), 3),
    ("wide_resnet50_2", 224, lambda: build_url({"id": "w50", "arch": {"name": "wide_resnet50_2", "num_classes": 1000}}), 3),
]


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves in one forward pass of a loss that is then
    differentiated to the weights and the input."""
    seen: dict[int, int] = {}

    def pack(t):
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    x = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long))
    loss.backward()
    return sum(seen.values())


def main() -> None:
    torch.manual_seed(0)
    print("network          px  saved MB/image  at 32 px  host constant at 32 px")
    for name, size, build, channels in NETWORKS:
        model = build().train()
        small, large = (saved_bytes(model, torch.rand(b, channels, size, size)) for b in (4, 8))
        per_image = (large - small) / 4 / rs.MB
        at_32 = per_image / max(1.0, (size / 32) ** 2)
        print(f"{name:15s} {size:4d}  {per_image:14.2f}  {at_32:8.3f}  {rs.ACTIVATION_MB_AT_32.get(name, float('nan')):8.1f}")


if __name__ == "__main__":
    main()
