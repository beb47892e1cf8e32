"""Memory each rule declares (``mem_mb``, and ``gpu_mem_mb`` for the rules on the device), computed from what its job reads: image counts and
sizes, the model's parameters, the configured batch, the layers it stores or compares, and the
attempt (a retry after running out of memory asks for more).

A job's host memory is modelled as

    base (Python, torch, numpy, zarr imported) + data it holds + model copies
    + batch x activation memory per image (forward and backward, as on a CPU device)

The activation term is counted on the host because ``device: auto`` runs on the CPU where there
is no GPU; on a GPU the same term lives in GPU memory and the declaration is conservative. The
constants were measured on this machine (``benchmarks/paper-scale.md`` shows the arithmetic);
the rehearsals (tests/rehearsal/rehearse.py) fail when a job's measured peak exceeds its
declaration, and check the data term's growth at n and 4n images.

No torch here: the Snakefile imports this module at parse time.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from robustlens.npz_rows import NpzRows

MB = 1 << 20
#: Resident memory of a job once Python, torch, torchvision, numpy and zarr are imported
#: (measured: 960 MB; robustbench's imports add 200 MB).
TORCH_BASE_MB = 1300
#: A table or figure job: pandas, matplotlib, scipy.
TABLE_BASE_MB = 600
#: Each retry asks for this factor more than the attempt before it.
RETRY_GROWTH = 1.5
#: Activation memory of one image's forward and backward pass at 32 x 32 px, MB, by
#: architecture family (measured: torch 2.14 on the CPU, float32, batch 16 and 8); it grows with
#: the number of pixels.
ACTIVATION_MB_AT_32 = {
    "smallcnn": 0.5,
    "resnet18_cifar": 12.0,
    "resnet18": 8.0,
    "resnet34": 12.0,
    "resnet50": 16.0,
    "resnet101": 24.0,
    "wide_resnet50_2": 32.0,
    "wide_resnet50_4": 64.0,
    "robustbench": 64.0,  # WideResNet-28-10 and DMWideResNet-28-10: 47 and 59 MB measured
    "timm": 16.0,
}
#: GPU memory of the tensors one image's forward pass keeps for backward (a training or PGD
#: step: the loss differentiated to the weights and the input), MB at 32 x 32 px, growing with
#: the pixels. Counted with autograd's saved-tensor hooks, which see what a GPU would hold
#: (benchmarks/gpu_memory.py: smallcnn 0.068 at 16 px, resnet18_cifar 4.48, resnet18 0.43,
#: resnet50 1.67, wide_resnet50_2 2.18 at 32-px scale), rounded up by a tenth; resnet34,
#: resnet101 and wide_resnet50_4 are scaled from their siblings' depth and width; robustbench
#: and timm models keep the host constant (not measured on a GPU-sized count).
GPU_ACTIVATION_MB_AT_32 = {
    "smallcnn": 0.08,
    "resnet18_cifar": 5.0,
    "resnet18": 0.5,
    "resnet34": 0.8,
    "resnet50": 1.9,
    "resnet101": 3.0,
    "wide_resnet50_2": 2.4,
    "wide_resnet50_4": 4.8,
    "robustbench": 64.0,
    "timm": 16.0,
}
#: A torch job's GPU memory before it holds anything: the CUDA context, cuBLAS and cuDNN
#: handles and workspaces (typically 0.3-0.6 GB on current cards), with room to spare.
CUDA_CONTEXT_MB = 1000
#: The caching allocator's fragmentation and temporaries on top of what autograd saves.
GPU_ACTIVATION_SLACK = 1.25
#: A filter extraction job holds about this many bytes per byte of the network's weights beyond
#: its base: per-filter coordinates (model, layer, depth) beside each 3x3 filter's 36 bytes of
#: coefficients (measured in the rehearsals: 10.9 for a WRN-28-10, 3.0 for a CIFAR ResNet-18).
FILTER_EXTRACTION_PER_WEIGHT_BYTE = 12
#: A job reading filter stores (filters_tables, the first-layer figure) holds about this many
#: bytes per byte of the stores it reads: the stores decompressed with their per-filter
#: coordinates, concatenated, and the per-depth groups and histograms of the shift statistics
#: (measured in the rehearsals: 20.4 for ResNet-50s, 21.9 for CIFAR ResNet-18s, 23.4 for the
#: RobustBench mix of WideResNets and ResNets; 28 leaves a fifth above the largest).
FILTER_TABLE_PER_STORE_BYTE = 28
#: Parameters (millions) of the architectures robustlens builds itself; zoo models are read
#: from their checkpoint files, whose size gives theirs.
PARAMETERS_M = {"smallcnn": 0.05, "resnet18_cifar": 11.2, "resnet18": 11.7, "resnet50": 25.6}


def with_attempt(mb: float, attempt: int) -> int:
    """``mb`` for the first attempt, RETRY_GROWTH times more for each retry."""
    return int(math.ceil(mb * RETRY_GROWTH ** (max(1, attempt) - 1)))


def images_mb(n: int, channels: int, size: int, bytes_per_value: int = 4) -> float:
    """Memory of ``n`` images of ``channels`` x ``size`` x ``size`` values."""
    return n * channels * size * size * bytes_per_value / MB


def family(arch: dict) -> str:
    """The activation family of an ``arch`` block of a resolved model spec."""
    name = arch["name"]
    return name.split(":", 1)[0] if ":" in name else name


def activation_mb(arch: dict, image_size: int, batch: int) -> float:
    """Forward and backward activations of ``batch`` images (MB)."""
    per_image = ACTIVATION_MB_AT_32.get(family(arch), ACTIVATION_MB_AT_32["robustbench"])
    return batch * per_image * max(1.0, (image_size / 32) ** 2)


def gpu_activation_mb(arch: dict, image_size: int, batch: int) -> float:
    """GPU memory of a training or attack step's activations for ``batch`` images (MB)."""
    per_image = GPU_ACTIVATION_MB_AT_32.get(family(arch), GPU_ACTIVATION_MB_AT_32["robustbench"])
    return GPU_ACTIVATION_SLACK * batch * per_image * max(1.0, (image_size / 32) ** 2)


def model_mb(arch: dict, checkpoint_bytes: int | None = None) -> float:
    """Memory of one copy of a model's float32 weights: from its checkpoint file when known."""
    if checkpoint_bytes:
        return checkpoint_bytes / MB
    return PARAMETERS_M.get(family(arch), 100.0) * 4


def store_mb(n: int, features: int) -> float:
    """float32 activations of ``n`` samples x ``features`` units (one layer or all of them)."""
    return n * features * 4 / MB


def tree_bytes(paths) -> int:
    """Bytes of the files at ``paths`` (directories such as zarr stores: every file under them);
    0 for a path that does not exist yet (Snakemake evaluates resources again before the job)."""
    from pathlib import Path

    total = 0
    for path in map(Path, paths):
        if path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        elif path.exists():
            total += path.stat().st_size
    return total


#: Widest penultimate representation of the zoo's architectures (ResNet-50 and its wide
#: variants: 2048; WRN-28-10: 640; ResNet-18: 512): the width LP's fixed features are held at.
FEATURES_MAX = 2048
#: Copies of the fixed features LP holds (features, standardised features, a batch's slack).
LP_FEATURE_COPIES = 3


def npz_image_arrays(path) -> dict[str, tuple[tuple[int, ...], int]]:
    """(shape, bytes per value) of each image array (``x_*``) of an .npz file, read from the
    arrays' headers only (:class:`robustlens.npz_rows.NpzRows`; no image is loaded); {} for a
    file that does not exist yet."""
    if not Path(path).is_file():
        return {}
    with zipfile.ZipFile(path) as archive:
        keys = [name.removesuffix(".npy") for name in archive.namelist() if name.startswith("x_")]
    return {key: (rows.shape, rows.dtype.itemsize) for key, rows in ((key, NpzRows(path, key)) for key in keys)}


def _task_bytes(path) -> tuple[int, int]:
    """(images as stored, float32 images and LP's fixed features of the training split,
    FEATURES_MAX wide) of one transfer task, in bytes."""
    arrays = npz_image_arrays(path)
    stored = sum(int(np.prod(shape)) * size for shape, size in arrays.values())
    as_float = sum(int(np.prod(shape)) * 4 for shape, _ in arrays.values())
    n_train = arrays["x_train"][0][0] if "x_train" in arrays else 0
    return stored, as_float + LP_FEATURE_COPIES * n_train * FEATURES_MAX * 4


def transfer_task_mb(path) -> float:
    """Memory a transfer job holds for one task: its images as stored and as float32 (both
    splits), and LP's fixed features of the training split."""
    return sum(_task_bytes(path)) / MB


def transfer_task_device_mb(path) -> float:
    """Device memory of one task in a transfer job: its float32 images and LP's features."""
    return _task_bytes(path)[1] / MB
