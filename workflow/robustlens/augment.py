"""Training-time data augmentation on batches of images already on the device.

The robustness library's recipes (Engstrom et al. 2019, ``robustness/data_augmentation.py``)
apply torchvision transforms to PIL images one at a time in DataLoader workers; here the same
random transforms run on a whole batch of float images in [0, 1] at once, drawn from one seeded
generator, so a run is reproducible on any device and CIFAR images never leave the GPU.

``augment`` names: ``none``; ``crop_flip`` (RandomCrop(size, padding=4) and
RandomHorizontalFlip); ``cifar`` (the library's CIFAR ``TRAIN_TRANSFORMS_DEFAULT``: crop and flip,
then ColorJitter(0.25, 0.25, 0.25) and RandomRotation(2)); ``resized_crop_flip`` (Salman et al.
2020's ``TRAIN_TRANSFORMS``, robust-models-transfer ``src/utils/constants.py``:
RandomResizedCrop(size) and RandomHorizontalFlip, which feeds small images such as CIFAR's 32 px
to ImageNet models at 224 px); ``imagenet`` (the library's ``TRAIN_TRANSFORMS_IMAGENET``,
``robustness/data_augmentation.py`` L40-51 at MadryLab/robustness a954124: RandomResizedCrop(size),
RandomHorizontalFlip, ColorJitter(0.1, 0.1, 0.1) and AlexNet-style PCA lighting noise
Lighting(0.05) with ``IMAGENET_PCA``; see :func:`imagenet_augment`).

The test-time counterparts :func:`resize` and :func:`resize_center_crop` (Salman et al.'s
``TEST_TRANSFORMS``: Resize(256) and CenterCrop(224)) are differentiable, so adversarial attacks
can run through them on the task's own pixels: no upscaled copy of a dataset is ever stored.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import torch

AUGMENTS = ("none", "crop_flip", "cifar", "resized_crop_flip", "imagenet")
#: The recipes that cut random resized crops, whose output size is the model's input size.
CROPPING_AUGMENTS = ("resized_crop_flip", "imagenet")

# The robustness library's ImageNet colour PCA (robustness/data_augmentation.py L10-17 at
# MadryLab/robustness a954124, from fb.resnet.torch's datasets/imagenet.lua, https://git.io/fhBOc):
# the eigenvalues for pixels in [0, 1] (55.46, 4.794, 1.148 on the 0-255 scale, divided by 255)
# and the matching unit eigenvectors as the COLUMNS of the 3 x 3 matrix (rows are R, G, B); the
# first, largest, is close to -(1, 1, 1) / sqrt(3), i.e. brightness. Tuples (immutable), taken
# by :func:`lighting` as they are or as tensors.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
IMAGENET_PCA = MappingProxyType({"eigval": IMAGENET_PCA_EIGVAL, "eigvec": IMAGENET_PCA_EIGVEC})


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=device)


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Per image, a crop of the image's own size at a uniformly drawn offset of the image
    zero-padded by ``padding`` on every side (torchvision's RandomCrop(size, padding))."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=x.device)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Each image mirrored left to right with probability ``p`` (RandomHorizontalFlip)."""
    flip = torch.rand(len(x), generator=gen, device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma (torchvision's rgb_to_grayscale) of RGB images; single-channel images
    are their own grey."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor.view(-1, 1, 1, 1) * x + (1 - factor.view(-1, 1, 1, 1)) * other).clamp(0, 1)


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float, gen: torch.Generator) -> torch.Tensor:
    """torchvision's ColorJitter(brightness, contrast, saturation) per image: factors drawn
    uniformly from [max(0, 1 - v), 1 + v] and the three adjustments applied in an order drawn
    uniformly per image. Brightness scales; contrast blends with the mean grey level; saturation
    blends with the grey image (a no-op for one channel)."""
    n, device = len(x), x.device
    factors = torch.stack([_uniform(n, max(0.0, 1 - v), 1 + v, gen, device) for v in (brightness, contrast, saturation)])
    order = torch.argsort(torch.rand((n, 3), generator=gen, device=device), dim=1)
    for position in range(3):
        op = order[:, position].view(-1, 1, 1, 1)
        bright = _blend(x, torch.zeros_like(x), factors[0])
        contr = _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factors[1])
        satur = _blend(x, _grayscale(x), factors[2]) if x.shape[1] > 1 else x
        x = torch.where(op == 0, bright, torch.where(op == 1, contr, satur))
    return x


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Each image rotated counter-clockwise by its angle (degrees) about its centre, nearest
    neighbour, zero fill, same size: torchvision's tensor ``rotate`` grid (pixel centres
    relative to the image centre, normalised by half the size, ``align_corners=False``)."""
    n, _, h, w = x.shape
    rad = torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.cos(rad), torch.sin(rad)
    # output pixel (u, v) samples the input at (cos u - sin v, sin u + cos v)
    theta = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # (n, 2 in, 2 out)
    theta = (theta / torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float64, device=x.device)).to(x.dtype)
    u = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, device=x.device, dtype=x.dtype)
    v = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, device=x.device, dtype=x.dtype)
    base = torch.stack(torch.meshgrid(u, v, indexing="xy"), -1).view(1, h * w, 2).expand(n, -1, -1)
    grid = torch.bmm(base, theta).view(n, h, w, 2)
    return torch.nn.functional.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def random_rotation(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """RandomRotation(degrees): each image rotated by an angle drawn uniformly from
    [-degrees, degrees]."""
    return rotate(x, _uniform(len(x), -degrees, degrees, gen, x.device))


def _size2(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``size`` as (height, width): a single number is a square."""
    if isinstance(size, (tuple, list, torch.Size)):
        h, w = size
        return int(h), int(w)
    return int(size), int(size)


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``x`` (n, c, h, w) resized bilinearly to (size, size), or to ``size`` = (height, width):
    torchvision's tensor ``resize(img, [height, width], antialias=True)`` (Resize((height,
    width))), i.e. ``interpolate(mode="bilinear", align_corners=False, antialias=True)``. Note an
    int is a square here, unlike torchvision's Resize(int), which sets the short side (see
    :func:`resize_center_crop`). The antialias filter matters only when downscaling: upscaling
    (32 to 224 px) is plain bilinear interpolation either way. Differentiable; an input already
    at the size is returned as is, as torchvision does."""
    th, tw = _size2(size)
    if th < 1 or tw < 1:
        raise ValueError(f"resize size must be positive, got {size!r}")
    if tuple(x.shape[-2:]) == (th, tw):
        return x
    return torch.nn.functional.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)


def resize_center_crop(x: torch.Tensor, size: int, crop_fraction: float = 0.875) -> torch.Tensor:
    """torchvision's evaluation transform Resize(round(size / crop_fraction)) then
    CenterCrop(size) on a batch: Resize(256) and CenterCrop(224) for ``size`` 224 (Salman et al.'s
    ``TEST_TRANSFORMS``). As torchvision's Resize(int), the short side goes to the resize size and
    the long side to ``int(resize * long / short)`` (aspect ratio kept, truncated); the centre
    crop's offsets are torchvision ``center_crop``'s ``int(round((h - size) / 2.0))`` (Python's
    round, half to even). Bilinear with antialias as :func:`resize`. Differentiable."""
    size = int(size)
    if size < 1:
        raise ValueError(f"resize_center_crop size must be positive, got {size!r}")
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}")
    h, w = x.shape[-2:]
    new_short = int(round(size / crop_fraction))
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(new_short * long / short)
    new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
    return centre_crop(resize(x, (new_h, new_w)), size)


def centre_crop(x, size: int | None):
    """The centre ``size`` x ``size`` crop of a batch (a tensor or an array) at torchvision
    ``center_crop``'s offsets ``int(round((h - size) / 2.0))``; ``x`` itself when ``size`` is
    None or its own size."""
    h, w = x.shape[-2:]
    if size is None or (h, w) == (size, size):
        return x
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def resized_crop_boxes(
    n: int,
    height: int,
    width: int,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """(n, 4) int64 crop boxes (top, left, h, w) on the CPU, one per image of size (height,
    width), distributed as torchvision's ``RandomResizedCrop.get_params``: up to 10 attempts of
    an area drawn uniformly from ``scale`` times the image's area and an aspect ratio w / h
    log-uniformly from ``ratio``, ``w = round(sqrt(area * ratio))`` and ``h = round(sqrt(area /
    ratio))``; the first attempt with ``0 < w <= width`` and ``0 < h <= height`` is taken, at a top
    and left offset drawn uniformly from 0..height - h and 0..width - w. With none accepted, the
    central crop of the whole image with its aspect ratio clamped to ``ratio`` (top and left
    floor-halved, as torchvision). All attempts are drawn at once from ``gen`` (on its own device),
    so a call always consumes the same draws whichever attempts succeed; the boxes are determined
    by the generator's state, though not the same draws torchvision takes from its global one."""
    if not (0 <= scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"scale and ratio must be (min, max) with 0 <= scale and 0 < ratio, got {scale!r}, {ratio!r}")
    device = gen.device
    area = float(height * width)
    u_area = torch.rand((n, 10), generator=gen, device=device, dtype=torch.float64)
    u_ratio = torch.rand((n, 10), generator=gen, device=device, dtype=torch.float64)
    u_top = torch.rand(n, generator=gen, device=device, dtype=torch.float64)
    u_left = torch.rand(n, generator=gen, device=device, dtype=torch.float64)
    u_area, u_ratio, u_top, u_left = (u.cpu() for u in (u_area, u_ratio, u_top, u_left))

    target_area = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    # torch.round rounds half to even, as Python's round
    w = torch.round(torch.sqrt(target_area * aspect)).long()
    h = torch.round(torch.sqrt(target_area / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.long().argmax(1, keepdim=True)  # first accepted attempt (0 when none is)
    h, w, accepted = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0], ok.any(1)

    # uniform integers 0..room from uniform floats (float64; the minimum guards against rounding up)
    top = torch.minimum((u_top * (height - h + 1)).floor().long(), height - h)
    left = torch.minimum((u_left * (width - w + 1)).floor().long(), width - w)

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.long)
    boxes = torch.stack([top, left, h, w], 1)
    return torch.where(accepted[:, None], boxes, fallback)


def random_resized_crop(
    x: torch.Tensor,
    size: int | tuple[int, int],
    gen: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    return_boxes: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """torchvision's RandomResizedCrop(size, scale, ratio, antialias=True) per image: a crop box
    drawn by :func:`resized_crop_boxes` from ``gen``, the crop resized bilinearly (antialias, as
    :func:`resize`) to (size, size) or ``size`` = (height, width); that is, torchvision's
    ``resized_crop(img, top, left, h, w, size, antialias=True)``. On ``x``'s device; with
    ``return_boxes`` also the (n, 4) CPU tensor of boxes (top, left, h, w)."""
    n, _, height, width = x.shape
    th, tw = _size2(size)
    if th < 1 or tw < 1:
        raise ValueError(f"random_resized_crop size must be positive, got {size!r}")
    boxes = resized_crop_boxes(n, height, width, gen, scale, ratio)
    # contiguous crops: interpolate is several times slower on strided views on the CPU
    crops = [
        resize(x[i : i + 1, :, top : top + h, left : left + w].contiguous(), (th, tw))
        for i, (top, left, h, w) in enumerate(boxes.tolist())
    ]
    out = torch.cat(crops) if crops else x.new_empty((0, x.shape[1], th, tw))
    return (out, boxes) if return_boxes else out


def lighting(x: torch.Tensor, alphastd: float, eigval, eigvec, gen: torch.Generator) -> torch.Tensor:
    """AlexNet-style PCA lighting noise on a batch of RGB images (n, 3, h, w): the robustness
    library's ``Lighting(alphastd, eigval, eigvec)`` (``robustness/data_augmentation.py`` L18-37 at
    a954124) per image. Each image draws its own ``alpha`` ~ Normal(0, alphastd), 3 values (the
    library's L31, one draw per image as its DataLoader calls the transform once per image),
    here ``alpha = alphastd * torch.randn((n, 3), generator=gen)`` on ``x``'s device and dtype;
    the colour offset ``rgb = eigvec @ (alpha * eigval)`` (L32-35: ``eigvec * alpha[None, :] *
    eigval[None, :]`` summed over columns, i.e. ``rgb[c] = sum_j eigvec[c, j] alpha[j]
    eigval[j]``, the eigenvectors being the columns) is added to every pixel of channel c (L37).

    Not clamped: the library returns ``img.add(...)`` (L37) with no clamp, after ToTensor, so its
    training images can leave [0, 1] by up to |rgb| (a standard deviation of about 0.006 per
    channel at alphastd 0.05 with ``IMAGENET_PCA``, almost all of it along the brightness
    eigenvector); robustlens keeps that (no clamp either), to reproduce the recipe; attacks
    clamp their adversarial examples to [0, 1] afterwards, as the library's (``attack_steps.py``
    L93, L120). As the library (L28-29), ``alphastd`` 0 returns ``x`` itself and draws
    nothing from ``gen``."""
    if alphastd < 0:
        raise ValueError(f"lighting alphastd must be >= 0, got {alphastd!r}")
    if alphastd == 0:
        return x
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"lighting needs RGB images (n, 3, h, w), got shape {tuple(x.shape)}")
    eigval = torch.as_tensor(eigval, dtype=x.dtype, device=x.device)
    eigvec = torch.as_tensor(eigvec, dtype=x.dtype, device=x.device)
    if eigval.shape != (3,) or eigvec.shape != (3, 3):
        raise ValueError(f"lighting needs eigval (3,) and eigvec (3, 3), got {tuple(eigval.shape)} and {tuple(eigvec.shape)}")
    alpha = alphastd * torch.randn((len(x), 3), generator=gen, device=x.device, dtype=x.dtype)
    rgb = (alpha * eigval) @ eigvec.T  # (n, 3): row i is eigvec @ (alpha[i] * eigval)
    return x + rgb[:, :, None, None]


def imagenet_augment(
    x: torch.Tensor,
    size: int | tuple[int, int],
    gen: torch.Generator,
    brightness: float = 0.1,
    contrast: float = 0.1,
    saturation: float = 0.1,
    alphastd: float = 0.05,
) -> torch.Tensor:
    """The robustness library's ``TRAIN_TRANSFORMS_IMAGENET`` (``robustness/data_augmentation.py``
    L40-51 at a954124) on a batch, in its order: :func:`random_resized_crop` to ``size`` (scale
    (0.08, 1), ratio (3/4, 4/3)), :func:`random_flip` (p 0.5), :func:`color_jitter` (brightness,
    contrast, saturation; 0.1 each), then :func:`lighting` (``alphastd`` 0.05, ``IMAGENET_PCA``).
    The library's ToTensor (L48) sits between ColorJitter and Lighting; here images are floats in
    [0, 1] throughout, so the library's PIL uint8 rounding after each jitter step is not
    reproduced. The jitter is torchvision's ColorJitter: its three adjustments in an order drawn
    per call (torchvision 0.29.1 ``transforms.py`` L1259 ``fn_idx = torch.randperm(4)``, hue
    skipped as None), which :func:`color_jitter` reproduces with an order drawn per image, each
    step clamped to [0, 1]. Lighting is not clamped (see :func:`lighting`), so outputs can lie
    slightly outside [0, 1], as the library's. Jitter factors 0 and ``alphastd`` 0 leave the
    crop and flip alone (the crop and flip are the generator's first draws)."""
    x = random_flip(random_resized_crop(x, size, gen), gen)
    x = color_jitter(x, brightness, contrast, saturation, gen)
    return lighting(x, alphastd, IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, gen)


def augment_batch(x: torch.Tensor, augment: str, gen: torch.Generator, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """``x`` (n, c, h, w) in [0, 1] after the ``augment`` recipe, drawn from ``gen``. ``size``
    (an int for a square, or (height, width)) is the output size of ``resized_crop_flip`` and
    ``imagenet``; None (the default) means the input's own (h, w). The other recipes keep the
    input's size, so for them ``size`` must be None or that size. Every recipe's output is in
    [0, 1] except ``imagenet``'s, whose unclamped lighting noise (as the library's) can move it
    slightly outside; ``imagenet`` needs RGB (3-channel) images."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    out_size = tuple(x.shape[-2:]) if size is None else _size2(size)
    if augment == "resized_crop_flip":
        return random_flip(random_resized_crop(x, out_size, gen), gen)
    if augment == "imagenet":
        return imagenet_augment(x, out_size, gen)
    if out_size != tuple(x.shape[-2:]):
        raise ValueError(f"augment {augment!r} keeps the input's size {tuple(x.shape[-2:])}; got size {size!r}")
    if augment == "none":
        return x
    x = random_flip(random_crop(x, 4, gen), gen)  # crop_flip and cifar
    if augment == "cifar":
        x = random_rotation(color_jitter(x, 0.25, 0.25, 0.25, gen), 2.0, gen)
    return x
