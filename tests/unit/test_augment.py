"""Batched training augmentation (robustlens.augment) against torchvision's own functional ops.

Every random op is checked image by image against ``torchvision.transforms.functional`` (the
per-image PIL/tensor transforms the robustness library's recipes use) with the random parameters
recovered from the output itself (a search over crop offsets, flip or not, a least-squares fit
of the colour factors, a search over rotation angles), never by replaying the generator's draws;
the recovered parameters are then checked against their documented distributions. The
robustness library's PCA lighting noise (no torchvision counterpart) is checked against a numpy
re-implementation of its ``Lighting`` formula, and its alphas recovered from the output.
"""

import itertools
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
import torchvision.transforms.v2.functional as TF2
from torchvision.transforms import InterpolationMode

from robustlens.augment import (
    AUGMENTS,
    IMAGENET_PCA,
    IMAGENET_PCA_EIGVAL,
    IMAGENET_PCA_EIGVEC,
    augment_batch,
    color_jitter,
    imagenet_augment,
    lighting,
    random_crop,
    random_flip,
    random_resized_crop,
    random_rotation,
    resize,
    resize_center_crop,
    rotate,
)


def _images(n, c, h, w, seed=0, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand((n, c, h, w), generator=g)


def _crop_matches(out, x, padding):
    """(n, 2p+1, 2p+1) bool: output image i equals torchvision's pad-then-crop of x[i] at
    (top, left)."""
    h, w = x.shape[-2:]
    padded = TF.pad(x, [padding], fill=0)
    k = 2 * padding + 1
    matches = torch.zeros((len(x), k, k), dtype=torch.bool)
    for top, left in itertools.product(range(k), repeat=2):
        matches[:, top, left] = (TF.crop(padded, top, left, h, w) == out).flatten(1).all(1)
    return matches


def _binomial_ok(count, n, p, sds=5.0):
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p))


# ---------------------------------------------------------------- random_crop


def test_random_crop_is_torchvision_pad_then_crop_at_uniform_offsets():
    # non-square so that rows and columns cannot be swapped unnoticed; random values, so each
    # output image matches exactly one of the (2p+1)^2 offsets
    padding, n = 3, 1400
    x = _images(n, 3, 12, 20)
    out = random_crop(x, padding, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    matches = _crop_matches(out, x, padding)
    assert (matches.flatten(1).sum(1) == 1).all()
    idx = matches.flatten(1).float().argmax(1)
    top, left = idx // (2 * padding + 1), idx % (2 * padding + 1)
    # torchvision RandomCrop draws top and left independently and uniformly from 0..2p
    k = 2 * padding + 1
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=k)
        assert all(_binomial_ok(int(c), n, 1 / k) for c in counts), counts
    assert _binomial_ok(int((top == left).sum()), n, 1 / k)  # independent, not one shared draw


def test_random_crop_output_pixels_are_zero_padding_or_input_pixels():
    padding = 4
    x = _images(64, 3, 12, 20, seed=2, low=0.1)  # no input pixel is 0
    out = random_crop(x, padding, torch.Generator().manual_seed(3))
    for xi, oi in zip(x, out):
        from_input = torch.isin(oi, xi)
        assert ((oi == 0) | from_input).all()
        # every image keeps at least (h - p) x (w - p) input pixels per channel
        assert from_input.sum() >= 3 * (12 - padding) * (20 - padding)
    # padding 0 leaves every image unchanged
    assert torch.equal(random_crop(x, 0, torch.Generator().manual_seed(3)), x)


# ---------------------------------------------------------------- random_flip


def test_random_flip_p0_identity_p1_torchvision_hflip():
    x = _images(16, 3, 5, 7)
    assert torch.equal(random_flip(x, torch.Generator().manual_seed(0), p=0.0), x)
    flipped = random_flip(x, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(flipped, TF.hflip(x))
    assert torch.equal(flipped, torch.stack([TF.hflip(im) for im in x]))


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_random_flip_fraction_is_binomial(p):
    n = 4000
    x = _images(n, 1, 3, 4, seed=4)
    out = random_flip(x, torch.Generator().manual_seed(5), p=p)
    same = (out == x).flatten(1).all(1)
    flipped = (out == TF.hflip(x)).flatten(1).all(1)
    assert (same ^ flipped).all()  # each image is itself or its mirror image, never both
    assert _binomial_ok(int(flipped.sum()), n, p, sds=4.0), int(flipped.sum())


# ---------------------------------------------------------------- color_jitter


def _lstsq_slope(x, y):
    """Least-squares slope of y on x (with intercept)."""
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc * yc).sum() / (xc * xc).sum())


def _check_factors(factors, v, n):
    low, high = max(0.0, 1 - v), 1 + v
    f = torch.tensor(factors, dtype=torch.float64)
    assert f.min() >= low - 1e-4 and f.max() <= high + 1e-4
    width = high - low
    # uniform on [low, high]: mean and standard deviation, and both ends reached
    assert abs(f.mean() - (low + high) / 2) < 5 * width / math.sqrt(12 * n)
    assert abs(f.std() - width / math.sqrt(12)) < 0.15 * width / math.sqrt(12)
    assert f.min() < low + 0.05 * width and f.max() > high - 0.05 * width


@pytest.mark.parametrize("v", [0.5, 1.5])
def test_color_jitter_brightness_is_torchvision_adjust_brightness(v):
    n = 400
    x = _images(n, 3, 6, 7, seed=6, low=0.05)
    out = color_jitter(x, v, 0.0, 0.0, torch.Generator().manual_seed(7))
    factors = []
    for xi, oi in zip(x, out):
        free = oi < 1  # not clipped
        assert free.any()  # a factor <= 0 would blacken every pixel; torchvision's is > 0
        f = float((oi[free] / xi[free]).median())
        factors.append(f)
        torch.testing.assert_close(oi, TF.adjust_brightness(xi, f), atol=1e-5, rtol=0)
    _check_factors(factors, v, n)


def test_color_jitter_contrast_is_torchvision_adjust_contrast():
    n, v = 400, 0.5
    x = _images(n, 3, 8, 9, seed=8)
    out = color_jitter(x, 0.0, v, 0.0, torch.Generator().manual_seed(9))
    factors = []
    for xi, oi in zip(x, out):
        free = (oi > 0) & (oi < 1)
        f = _lstsq_slope(xi[free].double(), oi[free].double())
        factors.append(f)
        torch.testing.assert_close(oi, TF.adjust_contrast(xi, f), atol=1e-5, rtol=0)
    _check_factors(factors, v, n)
    assert sum(bool(((oi == 0) | (oi == 1)).any()) for oi in out) > n / 10  # clipping was exercised


def test_color_jitter_saturation_is_torchvision_adjust_saturation():
    n, v = 400, 0.5
    x = _images(n, 3, 8, 9, seed=10)
    out = color_jitter(x, 0.0, 0.0, v, torch.Generator().manual_seed(11))
    factors = []
    for xi, oi in zip(x, out):
        grey = TF.rgb_to_grayscale(xi).expand_as(xi)
        free = (oi > 0) & (oi < 1)
        # out - grey = f (x - grey) where not clipped
        d, e = (xi - grey)[free].double(), (oi - grey)[free].double()
        f = float((d * e).sum() / (d * d).sum())
        factors.append(f)
        torch.testing.assert_close(oi, TF.adjust_saturation(xi, f), atol=1e-5, rtol=0)
    _check_factors(factors, v, n)


def test_color_jitter_single_channel():
    x = _images(200, 1, 8, 9, seed=12)
    # saturation of a grey image is the image itself
    assert torch.equal(color_jitter(x, 0.0, 0.0, 0.9, torch.Generator().manual_seed(13)), x)
    # contrast blends with the image's own mean (torchvision's one-channel adjust_contrast)
    out = color_jitter(x, 0.0, 0.5, 0.0, torch.Generator().manual_seed(14))
    for xi, oi in zip(x, out):
        free = (oi > 0) & (oi < 1)
        f = _lstsq_slope(xi[free].double(), oi[free].double())
        assert 0.5 - 1e-4 <= f <= 1.5 + 1e-4
        torch.testing.assert_close(oi, TF.adjust_contrast(xi, f), atol=1e-5, rtol=0)
        # the blend point is the mean: the unclipped pixels' line passes through (m, m)
        m = float(xi.mean())
        if abs(f - 1) > 0.05:
            intercept = float(oi[free].double().mean() - f * xi[free].double().mean())
            assert abs(intercept - (1 - f) * m) < 1e-5


def test_color_jitter_zero_ranges_are_identity():
    x = _images(32, 3, 5, 6, seed=15)
    assert torch.equal(color_jitter(x, 0.0, 0.0, 0.0, torch.Generator().manual_seed(0)), x)


def test_color_jitter_order_is_drawn_per_image():
    # brightness and saturation only (contrast factor exactly 1 is an identity). Without
    # clipping the two commute and out = fb fs x + fb (1 - fs) grey(x) on every pixel, which
    # recovers both factors by least squares from the mid-range "probe" pixels; the first row
    # holds extreme pixels that clip differently in the two orders, which tells them apart.
    n, v = 300, 0.25
    g = torch.Generator().manual_seed(16)
    x = 0.4 + 0.2 * torch.rand((n, 3, 6, 6), generator=g)  # probes: never clip in either order
    x[:, :, 0, :] = torch.rand((n, 3, 6), generator=g)
    x[:, 0, 0, :3], x[:, 2, 0, 3:] = 0.97, 0.97
    out = color_jitter(x, v, 0.0, v, torch.Generator().manual_seed(17))
    orders = {"bs": 0, "sb": 0, "either": 0}
    for xi, oi in zip(x, out):
        probe_x, probe_o = xi[:, 1:].reshape(3, -1), oi[:, 1:].reshape(3, -1)
        grey = TF.rgb_to_grayscale(xi[:, 1:]).reshape(1, -1).expand_as(probe_x)
        design = torch.stack([probe_x.reshape(-1), grey.reshape(-1)], 1).double()
        a, b = torch.linalg.lstsq(design, probe_o.reshape(-1, 1).double()).solution.flatten().tolist()
        fb, fs = a + b, a / (a + b)
        assert 1 - v - 1e-3 <= fb <= 1 + v + 1e-3 and 1 - v - 1e-3 <= fs <= 1 + v + 1e-3
        bs = TF.adjust_saturation(TF.adjust_brightness(xi, fb), fs)
        sb = TF.adjust_brightness(TF.adjust_saturation(xi, fs), fb)
        is_bs = torch.allclose(oi, bs, atol=1e-4, rtol=0)
        is_sb = torch.allclose(oi, sb, atol=1e-4, rtol=0)
        assert is_bs or is_sb
        orders["either" if is_bs and is_sb else "bs" if is_bs else "sb"] += 1
    decided = orders["bs"] + orders["sb"]
    assert decided > n / 4, orders
    assert _binomial_ok(orders["bs"], decided, 0.5), orders  # each order with probability 1/2


# ---------------------------------------------------------------- rotate


@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 12, 20), (3, 13, 17)])
@pytest.mark.parametrize("angle", [2.0, -2.0, 30.0, -45.0, 90.0, 0.7])
def test_rotate_is_torchvision_rotate_nearest_fill_zero(shape, angle):
    x = _images(3, *shape, seed=18)
    out = rotate(x, torch.full((3,), angle))
    ref = TF.rotate(x, angle, interpolation=InterpolationMode.NEAREST, fill=0)
    assert torch.equal(out, ref)


def test_rotate_uses_each_images_own_angle_and_zero_is_identity():
    angles = [0.0, 10.0, -30.0, 90.0, -1.5]
    x = _images(len(angles), 3, 11, 14, seed=19)
    out = rotate(x, torch.tensor(angles))
    for xi, oi, a in zip(x, out, angles):
        assert torch.equal(oi, TF.rotate(xi, a, interpolation=InterpolationMode.NEAREST, fill=0))
    assert torch.equal(out[0], x[0])
    # 90 degrees counter-clockwise on a square image is torch.rot90 (corners included)
    sq = _images(2, 1, 8, 8, seed=20)
    assert torch.equal(rotate(sq, torch.tensor([90.0, 90.0])), torch.rot90(sq, 1, dims=(-2, -1)))


def test_random_rotation_angles_are_uniform_within_degrees():
    # recover each image's angle from the grid angles whose torchvision rotation agrees best with
    # it (nearest-neighbour rotation is constant over small angle intervals, the identity for
    # |angle| < ~0.6 degrees on 96 x 96 images: take the middle of the best-agreeing angles)
    n, degrees = 60, 2.0
    x = _images(n, 1, 96, 96, seed=21)
    out = random_rotation(x, degrees, torch.Generator().manual_seed(22))
    grid = torch.arange(-50, 51) * 0.1  # -5 .. 5 degrees
    agreement = torch.stack(
        [(TF.rotate(x, float(a), interpolation=InterpolationMode.NEAREST, fill=0) == out).float().mean((1, 2, 3)) for a in grid],
        1,
    )
    best = agreement.max(1, keepdim=True).values
    assert (best > 0.85).all()
    near = agreement >= best - 1e-6
    angles = torch.stack([grid[row].mean() for row in near])
    assert angles.abs().max() <= degrees + 0.15
    assert angles.min() < -1.5 and angles.max() > 1.5
    assert _binomial_ok(int((angles < 0).sum()), n, 0.5)


# ---------------------------------------------------------------- augment_batch


def test_augment_none_and_unknown_name():
    x = _images(4, 3, 8, 8, seed=23).double()
    same = augment_batch(x, "none", torch.Generator().manual_seed(0))
    assert torch.equal(same, x) and same.dtype == torch.float64
    with pytest.raises(ValueError) as err:
        augment_batch(x, "autoaugment", torch.Generator().manual_seed(0))
    assert "autoaugment" in str(err.value)
    assert all(name in str(err.value) for name in ("none", "crop_flip", "cifar", "resized_crop_flip", "imagenet"))
    assert AUGMENTS == ("none", "crop_flip", "cifar", "resized_crop_flip", "imagenet")


def test_augment_crop_flip_is_pad4_crop_then_hflip():
    n = 300
    x = _images(n, 3, 10, 14, seed=24)
    out = augment_batch(x, "crop_flip", torch.Generator().manual_seed(25))
    plain_at, mirrored_at = _crop_matches(out, x, 4), _crop_matches(TF.hflip(out), x, 4)
    plain, mirrored = plain_at.flatten(1).any(1), mirrored_at.flatten(1).any(1)
    assert (plain ^ mirrored).all()
    assert _binomial_ok(int(mirrored.sum()), n, 0.5)
    # padding 4: every top and left offset 0..8 occurs (hflip(out) undoes the flip of a mirrored one)
    at = (plain_at | mirrored_at).flatten(1).float().argmax(1)
    assert set((at // 9).tolist()) == set(range(9)) and set((at % 9).tolist()) == set(range(9))


@pytest.mark.parametrize("augment", ["crop_flip", "cifar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_augment_reproducible_in_range_shape_dtype(augment, dtype):
    x = _images(16, 3, 32, 32, seed=26).to(dtype)
    a = augment_batch(x, augment, torch.Generator().manual_seed(27))
    b = augment_batch(x, augment, torch.Generator().manual_seed(27))
    c = augment_batch(x, augment, torch.Generator().manual_seed(28))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == dtype
    assert a.min() >= 0 and a.max() <= 1


def test_augment_cifar_adds_colour_and_rotation_to_crop_flip():
    # the cifar recipe's outputs are not plain crops/flips of the input (colour jitter and
    # rotation changed them), yet stay close to one: jitter factors within 25% and a rotation
    # of at most 2 degrees move the mean only a little
    n = 64
    x = _images(n, 3, 32, 32, seed=29)
    out = augment_batch(x, "cifar", torch.Generator().manual_seed(30))
    plain = _crop_matches(out, x, 4).flatten(1).any(1) | _crop_matches(TF.hflip(out), x, 4).flatten(1).any(1)
    assert not plain.any()
    ratio = out.mean((1, 2, 3)) / x.mean((1, 2, 3))
    assert ratio.min() > 0.5 and ratio.max() < 1.3
    assert ratio.std() > 0.05  # brightness factors differ between images


# ---------------------------------------------------------------- resize and resize_center_crop
# Salman et al. 2020 (robust-models-transfer, src/utils/constants.py) feed 32 px CIFAR images to
# ImageNet models with RandomResizedCrop(224) for training and Resize(256) + CenterCrop(224) for
# testing; torchvision's tensor transforms (antialias=True) are the oracles.


@pytest.mark.parametrize(
    "shape, size",
    [
        ((2, 3, 32, 32), 224),  # CIFAR to ImageNet resolution
        ((2, 3, 13, 17), (29, 11)),  # rows up, columns down; (height, width) order
        ((2, 1, 48, 40), (20, 15)),  # downscale: the antialias filter matters
    ],
)
def test_resize_is_torchvision_resize_antialias(shape, size):
    x = _images(*shape, seed=31)
    out = resize(x, size)
    hw = [size, size] if isinstance(size, int) else list(size)
    assert out.shape == (*shape[:2], *hw) and out.dtype == x.dtype
    torch.testing.assert_close(out, TF.resize(x, hw, antialias=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(out, TF2.resize(x, hw, antialias=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], TF.resize(x[1], hw, antialias=True), atol=1e-5, rtol=0)  # per image
    # antialias changes a downscale, never an upscale (there it is plain bilinear interpolation)
    plain = TF.resize(x, hw, antialias=False)
    downscaled = hw[0] < shape[2] or hw[1] < shape[3]
    assert ((out - plain).abs().max() > 1e-3) == downscaled


def test_resize_keeps_an_image_already_at_the_size():
    x = _images(2, 3, 9, 12, seed=32)
    assert torch.equal(resize(x, (9, 12)), x)
    assert torch.equal(resize(x[..., :9], 9), x[..., :9])


@pytest.mark.parametrize(
    "shape, size, crop_fraction",
    [
        ((2, 3, 32, 32), 224, 0.875),  # Resize(256) + CenterCrop(224), offset 16
        ((2, 3, 31, 45), 224, 0.875),  # wide: 256 x 371, left offset 73.5 rounds (half to even) to 74
        ((2, 1, 41, 30), 224, 0.875),  # tall: 349 x 256, top offset 62.5 rounds (half to even) to 62
        ((2, 3, 57, 40), 16, 0.9),  # downscale to Resize(18): 25 x 18, top offset 4.5 -> 4
        ((2, 3, 30, 46), 16, 0.9),  # downscale: 18 x 27 (int(27.6), not rounded), left offset 5.5 -> 6
    ],
)
def test_resize_center_crop_is_torchvision_resize_then_center_crop(shape, size, crop_fraction):
    x = _images(*shape, seed=33)
    out = resize_center_crop(x, size, crop_fraction)
    assert out.shape == (*shape[:2], size, size)
    ref = T.Compose([T.Resize(round(size / crop_fraction), antialias=True), T.CenterCrop(size)])
    torch.testing.assert_close(out, ref(x), atol=1e-5, rtol=0)
    if size == 224:  # the paper's literal TEST_TRANSFORMS
        torch.testing.assert_close(out, T.Compose([T.Resize(256), T.CenterCrop(224)])(x), atol=1e-5, rtol=0)


def test_resize_and_resize_center_crop_gradients():
    x = _images(1, 2, 6, 7, seed=34).double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: resize(t, (9, 4)), (x,))
    assert torch.autograd.gradcheck(lambda t: resize_center_crop(t, 4, 0.8), (x,))  # 6 x 7 -> 5 x 5 -> 4 x 4
    # a pixel outside the centre crop gets no gradient
    x = _images(1, 1, 32, 32, seed=35).requires_grad_()
    resize_center_crop(x, 224).sum().backward()
    assert x.grad[0, 0, 0, 0] == 0 and x.grad[0, 0, 16, 16] > 0


# ---------------------------------------------------------------- random_resized_crop


def _ks(a, b):
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the empirical CDFs)."""
    a, b = torch.as_tensor(a, dtype=torch.float64).sort().values, torch.as_tensor(b, dtype=torch.float64).sort().values
    at = torch.cat([a, b]).unique()
    fa = torch.searchsorted(a, at, right=True) / len(a)
    fb = torch.searchsorted(b, at, right=True) / len(b)
    return float((fa - fb).abs().max())


def _fallback_box(height, width, ratio):
    """torchvision RandomResizedCrop.get_params's central crop after ten rejected attempts."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@pytest.mark.parametrize(
    "shape, size",
    [
        ((40, 3, 32, 32), 48),  # upscaled crops
        ((40, 3, 24, 40), (20, 28)),  # non-square input and output
        ((40, 1, 64, 64), 12),  # downscaled crops: the antialias filter matters
    ],
)
def test_random_resized_crop_is_torchvision_resized_crop_at_its_boxes(shape, size):
    x = _images(*shape, seed=36)
    hw = [size, size] if isinstance(size, int) else list(size)
    out, boxes = random_resized_crop(x, size, torch.Generator().manual_seed(37), return_boxes=True)
    assert out.shape == (*shape[:2], *hw) and out.dtype == x.dtype and boxes.shape == (shape[0], 4)
    again = random_resized_crop(x, size, torch.Generator().manual_seed(37))
    assert torch.equal(out, again)
    height, width = shape[2:]
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (h > 0).all() and (w > 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    assert len(set(map(tuple, boxes.tolist()))) > shape[0] // 2  # crops drawn per image
    for xi, oi, (t, l, bh, bw) in zip(x, out, boxes.tolist()):
        torch.testing.assert_close(oi, TF.resized_crop(xi, t, l, bh, bw, hw, antialias=True), atol=1e-5, rtol=0)
    if shape[2] == 64:  # every crop (at least 16 px a side) downscaled: antialias matters
        assert (h > hw[0]).all() and (w > hw[1]).all()
        plain = torch.stack([TF.resized_crop(xi, *b, hw, antialias=False) for xi, b in zip(x, boxes.tolist())])
        assert (out - plain).abs().max() > 1e-2


@pytest.mark.parametrize(
    "height, width, scale, ratio",
    [
        (32, 32, (0.08, 1.0), (3 / 4, 4 / 3)),  # the paper's CIFAR training crops
        (24, 48, (0.2, 0.9), (1.0, 2.0)),  # non-square image, ratio range not symmetric about 1
        (30, 12, (0.3, 1.0), (0.5, 1.5)),  # tall image, many attempts rejected
    ],
)
def test_random_resized_crop_boxes_distributed_as_torchvision_get_params(height, width, scale, ratio):
    # torchvision's own RandomResizedCrop.get_params (global generator) is the reference
    # distribution: crop areas, aspect ratios, sides and offsets agree in distribution
    n = 2500
    x = _images(n, 1, height, width, seed=38)
    _, boxes = random_resized_crop(x, 4, torch.Generator().manual_seed(39), scale=scale, ratio=ratio, return_boxes=True)
    with torch.random.fork_rng():
        torch.manual_seed(40)
        ref = torch.tensor([T.RandomResizedCrop.get_params(x[0], list(scale), list(ratio)) for _ in range(n)])
    crit = 1.95 * math.sqrt(2 / n)  # 0.1 % two-sample KS level

    def stats(b):
        top, left, h, w = b.T.double()
        return {
            "area": h * w / (height * width),
            "log_ratio": torch.log(w / h),
            "h": h,
            "w": w,
            "top": (top + 0.5) / (height - h + 1),  # uniform offsets: uniform on (0, 1)
            "left": (left + 0.5) / (width - w + 1),
        }

    mine, theirs = stats(boxes), stats(ref)
    for key in mine:
        assert _ks(mine[key], theirs[key]) < crit, key
    fallback = torch.tensor(_fallback_box(height, width, ratio))
    is_fallback = (boxes == fallback).all(1)
    assert abs(float(is_fallback.float().mean()) - float((ref == fallback).all(1).double().mean())) < 0.03
    # every other box is a rounding of an area in scale and an aspect ratio in ratio
    top, left, h, w = boxes[~is_fallback].T.double()
    assert ((w + 0.5) * (h + 0.5) >= scale[0] * height * width).all()
    assert ((w - 0.5) * (h - 0.5) <= scale[1] * height * width).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0]).all() and ((w - 0.5) / (h + 0.5) <= ratio[1]).all()
    # offsets uniform on 0..height - h and 0..width - w, both ends reached at their rates
    for offset, room in ((top, height - h), (left, width - w)):
        p = 1 / (room + 1)
        for hits in (offset == 0, offset == room):
            expected, sd = float(p.sum()), float((p * (1 - p)).sum().sqrt())
            assert abs(float(hits.sum()) - expected) <= 5 * sd + 1, (float(hits.sum()), expected)
    top, left = mine["top"], mine["left"]
    assert abs(float(torch.corrcoef(torch.stack([top, left]))[0, 1])) < 0.1  # independent draws


@pytest.mark.parametrize("height, width", [(23, 12), (10, 24), (14, 16)])
def test_random_resized_crop_fallback_is_torchvision_central_crop(height, width):
    # scale (2, 3) never fits: torchvision falls back to the central crop with the aspect ratio
    # clamped to ratio (23 x 12: 16 x 12 at top 3; 10 x 24: 10 x 13 at left 5; 14 x 16: whole)
    x = _images(6, 3, height, width, seed=41)
    out, boxes = random_resized_crop(x, 20, torch.Generator().manual_seed(42), scale=(2.0, 3.0), return_boxes=True)
    transform = T.RandomResizedCrop(20, scale=(2.0, 3.0), antialias=True)
    with torch.random.fork_rng():
        torch.manual_seed(43)
        ref = torch.stack([transform(xi) for xi in x])
        ref_box = T.RandomResizedCrop.get_params(x[0], [2.0, 3.0], [3 / 4, 4 / 3])
    assert (boxes == torch.tensor(ref_box)).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_random_resized_crop_full_scale_unit_ratio_is_resize():
    # scale (1, 1) and ratio (1, 1) on a square image always crop the whole image
    x = _images(5, 3, 20, 20, seed=44)
    out = random_resized_crop(x, 32, torch.Generator().manual_seed(45), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(out, TF.resize(x, [32, 32], antialias=True), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- augment_batch resized_crop_flip


def test_augment_resized_crop_flip_is_resized_crop_then_hflip():
    n = 200
    x = _images(n, 3, 32, 32, seed=46)
    out = augment_batch(x, "resized_crop_flip", torch.Generator().manual_seed(47), size=40)
    assert out.shape == (n, 3, 40, 40)
    # the crops are the generator's first draws; each output is its crop or the crop's mirror image
    crops = random_resized_crop(x, 40, torch.Generator().manual_seed(47))
    plain = (out - crops).flatten(1).abs().max(1).values < 1e-6
    mirrored = (out - TF.hflip(crops)).flatten(1).abs().max(1).values < 1e-6
    assert (plain ^ mirrored).all()
    assert _binomial_ok(int(mirrored.sum()), n, 0.5)


def test_augment_resized_crop_flip_sizes_and_reproducibility():
    x = _images(4, 3, 32, 32, seed=48)
    a = augment_batch(x, "resized_crop_flip", torch.Generator().manual_seed(49), size=224)
    b = augment_batch(x, "resized_crop_flip", torch.Generator().manual_seed(49), size=224)
    c = augment_batch(x, "resized_crop_flip", torch.Generator().manual_seed(50), size=224)
    assert a.shape == (4, 3, 224, 224) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # size None: the input's own size; (height, width) tuples
    assert augment_batch(x, "resized_crop_flip", torch.Generator().manual_seed(49)).shape == x.shape
    assert augment_batch(x, "resized_crop_flip", torch.Generator().manual_seed(49), size=(24, 40)).shape == (4, 3, 24, 40)
    # the size-keeping recipes accept their input's own size and nothing else
    for augment in ("none", "crop_flip", "cifar"):
        same = augment_batch(x, augment, torch.Generator().manual_seed(51), size=32)
        assert torch.equal(same, augment_batch(x, augment, torch.Generator().manual_seed(51)))
        with pytest.raises(ValueError):
            augment_batch(x, augment, torch.Generator().manual_seed(51), size=224)


# ---------------------------------------------------------------- lighting and the imagenet recipe
# MadryLab/robustness a954124, robustness/data_augmentation.py: IMAGENET_PCA (L10-17), Lighting
# (L18-37), TRAIN_TRANSFORMS_IMAGENET (L40-51).

# the library's published constants, copied from its L11-16
LIB_EIGVAL = [0.2175, 0.0188, 0.0045]
LIB_EIGVEC = [
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
]


def _library_lighting(img, alpha, eigval, eigvec):
    """numpy transcription of the library's ``Lighting.__call__`` (L31-37) for one image (3, h,
    w) with its alpha (3,) given: ``eigvec * alpha.view(1, 3) * eigval.view(1, 3)``, summed over
    dim 1, added to every pixel of each channel; no clamp."""
    eigvec, eigval, alpha = np.asarray(eigvec, np.float64), np.asarray(eigval, np.float64), np.asarray(alpha, np.float64)
    rgb = (eigvec * alpha.reshape(1, 3) * eigval.reshape(1, 3)).sum(1)
    return np.asarray(img, np.float64) + rgb.reshape(3, 1, 1)


def _recover_alphas(shift, eigval, eigvec):
    """(n, 3) alphas from per-image colour offsets (n, 3) = eigvec @ (alpha * eigval)."""
    v = torch.linalg.solve(torch.as_tensor(eigvec, dtype=torch.float64), shift.double().T).T
    return v / torch.as_tensor(eigval, dtype=torch.float64)


def _check_iid_normal(alpha, std):
    """(n, 3) draws: each column Normal(0, std), the columns uncorrelated."""
    n = len(alpha)
    assert (alpha.mean(0).abs() < 5 * std / math.sqrt(n)).all(), alpha.mean(0)
    assert ((alpha.std(0) / std - 1).abs() < 0.06).all(), alpha.std(0)
    within = (alpha.abs() < std).double().mean(0)  # P(|Z| < 1) = 0.6827
    assert all(_binomial_ok(float(f) * n, n, 0.6827) for f in within), within
    corr = torch.corrcoef(alpha.T)
    assert (corr - torch.eye(3, dtype=corr.dtype)).abs().max() < 0.1, corr


def test_imagenet_pca_constants_are_the_librarys_published_values():
    assert IMAGENET_PCA_EIGVAL == tuple(LIB_EIGVAL)
    assert IMAGENET_PCA_EIGVEC == tuple(map(tuple, LIB_EIGVEC))
    assert IMAGENET_PCA["eigval"] == IMAGENET_PCA_EIGVAL and IMAGENET_PCA["eigvec"] == IMAGENET_PCA_EIGVEC
    with pytest.raises(TypeError):
        IMAGENET_PCA["eigval"] = (1.0, 1.0, 1.0)  # read-only
    vec = np.array(IMAGENET_PCA_EIGVEC)
    val = np.array(IMAGENET_PCA_EIGVAL)
    # unit eigenvectors, mutually orthogonal (published to 4 decimals)
    np.testing.assert_allclose(vec.T @ vec, np.eye(3), atol=1e-3)
    np.testing.assert_allclose(vec @ vec.T, np.eye(3), atol=1e-3)
    # eigenvalues positive, largest first; the largest one's eigenvector, the first COLUMN, is the
    # brightness direction -(1, 1, 1) / sqrt(3) (the first row is not)
    assert (val > 0).all() and (np.diff(val) < 0).all()
    np.testing.assert_allclose(vec[:, 0], -np.ones(3) / math.sqrt(3), atol=0.02)
    assert np.abs(vec[0] + 1 / math.sqrt(3)).max() > 0.5
    # the covariance they make has (1, 1, 1) / sqrt(3) carrying almost all the colour variance
    cov = vec @ np.diag(val) @ vec.T
    grey = np.ones(3) / math.sqrt(3)
    assert grey @ cov @ grey > 0.9 * val.sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lighting_is_the_librarys_formula_with_replayed_alphas(dtype):
    # the documented draws: alpha = alphastd * randn((n, 3), generator=gen) in x's dtype
    n, alphastd = 40, 0.3
    x = _images(n, 3, 5, 7, seed=52).to(dtype)
    out = lighting(x, alphastd, IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, torch.Generator().manual_seed(53))
    assert out.shape == x.shape and out.dtype == dtype
    alphas = alphastd * torch.randn((n, 3), generator=torch.Generator().manual_seed(53), dtype=dtype)
    ref = np.stack([_library_lighting(xi, ai, LIB_EIGVAL, LIB_EIGVEC) for xi, ai in zip(x.numpy(), alphas.numpy())])
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6 if dtype == torch.float32 else 1e-12, rtol=0)
    # an arbitrary basis and spectrum (not PCA's), as tensors: the same formula
    q = torch.linalg.qr(torch.randn((3, 3), generator=torch.Generator().manual_seed(54), dtype=torch.float64)).Q
    val = torch.tensor([0.5, 0.2, 0.05], dtype=torch.float64)
    out = lighting(x, alphastd, val, q, torch.Generator().manual_seed(55))
    alphas = alphastd * torch.randn((n, 3), generator=torch.Generator().manual_seed(55), dtype=dtype)
    ref = np.stack([_library_lighting(xi, ai, val.numpy(), q.numpy()) for xi, ai in zip(x.numpy(), alphas.numpy())])
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6 if dtype == torch.float32 else 1e-12, rtol=0)


def test_lighting_recovered_alphas_are_iid_normal_per_image():
    # without replaying the generator: every pixel of a channel moves by the same offset, and
    # the offsets solved for alpha give independent Normal(0, alphastd) draws per image
    n, alphastd = 4000, 0.05
    x = _images(n, 3, 2, 3, seed=56, low=0.2, high=0.8).double()
    out = lighting(x, alphastd, IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, torch.Generator().manual_seed(57))
    shift = out - x
    assert (shift - shift[..., :1, :1]).abs().max() < 1e-12  # one offset per image and channel
    alpha = _recover_alphas(shift[..., 0, 0], IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC)
    _check_iid_normal(alpha, alphastd)
    # the offsets' covariance is alphastd^2 eigvec diag(eigval^2) eigvec^T
    vec, val = torch.tensor(IMAGENET_PCA_EIGVEC, dtype=torch.float64), torch.tensor(IMAGENET_PCA_EIGVAL, dtype=torch.float64)
    expected = alphastd**2 * vec @ torch.diag(val**2) @ vec.T
    assert (torch.cov(shift[..., 0, 0].T) - expected).abs().max() < 0.1 * expected.abs().max()


def test_lighting_zero_std_is_identity_and_not_clamped_and_needs_rgb():
    x = _images(8, 3, 4, 4, seed=58)
    gen = torch.Generator().manual_seed(59)
    state = gen.get_state()
    assert lighting(x, 0.0, IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, gen) is x  # the library's L28-29
    assert torch.equal(gen.get_state(), state)  # and nothing drawn
    # the library adds the offset with no clamp (L37): white images go above 1, black below 0
    for value in (0.0, 1.0):
        flat = torch.full((200, 3, 2, 2), value)
        out = lighting(flat, 0.05, IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, torch.Generator().manual_seed(60))
        assert (out < 0).any() if value == 0 else (out > 1).any()
        assert (out - value).abs().max() < 0.05
    with pytest.raises(ValueError):
        lighting(_images(2, 1, 4, 4), 0.05, IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, torch.Generator())
    with pytest.raises(ValueError):
        lighting(x, -0.1, IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, torch.Generator())


def test_imagenet_with_zero_jitter_and_lighting_is_resized_crop_flip():
    x = _images(30, 3, 32, 32, seed=61)
    out = imagenet_augment(x, 40, torch.Generator().manual_seed(62), 0.0, 0.0, 0.0, 0.0)
    assert torch.equal(out, augment_batch(x, "resized_crop_flip", torch.Generator().manual_seed(62), size=40))


def test_imagenet_is_crop_flip_jitter_then_lighting_in_the_librarys_order():
    # the library's Compose order (L40-51) on the generator's stream, each op at its factor
    n = 16
    x = _images(n, 3, 32, 32, seed=63)
    out = augment_batch(x, "imagenet", torch.Generator().manual_seed(64), size=48)
    g = torch.Generator().manual_seed(64)
    ref = random_flip(random_resized_crop(x, 48, g), g)
    ref = color_jitter(ref, 0.1, 0.1, 0.1, g)
    ref = lighting(ref, 0.05, LIB_EIGVAL, LIB_EIGVEC, g)
    assert torch.equal(out, ref)
    assert torch.equal(out, imagenet_augment(x, 48, torch.Generator().manual_seed(64)))


def test_imagenet_lighting_on_constant_grey_images_is_eigvec_alpha_eigval():
    # a constant grey image stays itself under crop, flip, contrast and saturation (whatever
    # their order); with brightness 0 the output's colour offset per image is exactly the
    # lighting's eigvec @ (alpha * eigval), with alpha iid Normal(0, 0.05)
    n = 3000
    grey = 0.3 + 0.4 * torch.rand(n, generator=torch.Generator().manual_seed(65), dtype=torch.float64)
    x = grey.view(-1, 1, 1, 1).expand(n, 3, 6, 6).contiguous()
    out = imagenet_augment(x, 4, torch.Generator().manual_seed(66), brightness=0.0)
    assert out.shape == (n, 3, 4, 4)
    shift = out - grey.view(-1, 1, 1, 1)
    assert (shift - shift[..., :1, :1]).abs().max() < 1e-9
    _check_iid_normal(_recover_alphas(shift[..., 0, 0], IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC), 0.05)
    # the full recipe on white images: jitter clamps at 1, the lighting after it does not
    white = torch.ones((400, 3, 8, 8))
    out = augment_batch(white, "imagenet", torch.Generator().manual_seed(67))
    assert (out > 1).any() and (out.amax((1, 2, 3)) > 1).float().mean() > 0.25
    assert (out - 1).abs().max() < 0.15


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_augment_imagenet_sizes_reproducibility_and_channels(dtype):
    x = _images(4, 3, 32, 32, seed=68).to(dtype)
    a = augment_batch(x, "imagenet", torch.Generator().manual_seed(69), size=96)
    b = augment_batch(x, "imagenet", torch.Generator().manual_seed(69), size=96)
    c = augment_batch(x, "imagenet", torch.Generator().manual_seed(70), size=96)
    assert a.shape == (4, 3, 96, 96) and a.dtype == dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() > -0.1 and a.max() < 1.1  # [0, 1] up to the unclamped lighting offset
    assert augment_batch(x, "imagenet", torch.Generator().manual_seed(69)).shape == x.shape
    assert augment_batch(x, "imagenet", torch.Generator().manual_seed(69), size=(24, 40)).shape == (4, 3, 24, 40)
    with pytest.raises(ValueError):  # PCA lighting is defined on RGB only
        augment_batch(x[:, :1], "imagenet", torch.Generator().manual_seed(69))
