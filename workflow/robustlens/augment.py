"""Training-time data augmentation on batches of images already on the device.

The robustness library's recipes (Engstrom et al. 2019, ``robustness/data_augmentation.py``)
apply torchvision transforms to PIL images one at a time in DataLoader workers; here the same
random transforms run on a whole batch of float images in [0, 1] at once, drawn from one seeded
generator, so a run is reproducible on any device and CIFAR images never leave the GPU.

``augment`` names: ``none``; ``crop_flip`` (RandomCrop(size, padding=4) and
RandomHorizontalFlip); ``cifar`` (the library's CIFAR ``TRAIN_TRANSFORMS_DEFAULT``: crop and flip,
then ColorJitter(0.25, 0.25, 0.25) and RandomRotation(2)).
"""

from __future__ import annotations

import torch

AUGMENTS = ("none", "crop_flip", "cifar")


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


def augment_batch(x: torch.Tensor, augment: str, gen: torch.Generator) -> torch.Tensor:
    """``x`` (n, c, h, w) in [0, 1] after the ``augment`` recipe, drawn from ``gen``."""
    if augment == "none":
        return x
    if augment in ("crop_flip", "cifar"):
        x = random_flip(random_crop(x, 4, gen), gen)
        if augment == "cifar":
            x = random_rotation(color_jitter(x, 0.25, 0.25, 0.25, gen), 2.0, gen)
        return x
    raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
