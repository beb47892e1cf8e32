"""Procedurally generated dSprites-style sprites (Matthey et al. 2017): white shapes (square,
ellipse, heart, triangle) on black, at a random scale, position and orientation, with the
generating factors as regression targets (the ``shapes`` dataset source and the ``shapes`` and
``shapes-factors`` transfer tasks).

Only numpy: the Snakefile and table jobs may import this module.
"""

from __future__ import annotations

import numpy as np

#: Shapes of the sprites and their rotational symmetry order k (rotating by 2*pi/k maps the
#: shape onto itself): the orientation target is (cos k*theta, sin k*theta).
SHAPE_SYMMETRY = {"square": 4, "ellipse": 2, "heart": 1, "triangle": 3}
SHAPE_NAMES = tuple(SHAPE_SYMMETRY)
#: Regression targets of ``shapes-factors``, in column order.
FACTOR_NAMES = ("scale", "pos_x", "pos_y", "cos_k_theta", "sin_k_theta")


def inside_shape(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v) of the shape's own frame (unit size, centred) lie in the shape.
    Each shape maps onto itself under rotation by 2*pi/k, k = SHAPE_SYMMETRY[shape]."""
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.75
    if shape == "ellipse":
        return u**2 + (v / 0.5) ** 2 <= 1.0
    if shape == "triangle":  # equilateral, circumradius 1: three half-planes at inradius 0.5
        out = np.ones(np.broadcast(u, v).shape, dtype=bool)
        for i in range(3):
            phi = -np.pi / 2 + 2 * np.pi * i / 3
            out &= u * np.cos(phi) + v * np.sin(phi) <= 0.5
        return out
    if shape == "heart":  # (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, centred and scaled to ~unit size
        x, y = u / 0.85, v / 0.85 + 0.12
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPE_NAMES)})")


def render_sprite(shape: str, scale: float, pos_x: float, pos_y: float, theta: float, size: int, supersample: int = 4) -> np.ndarray:
    """One white sprite on black, (size, size) in [0, 1]: the shape scaled by ``scale`` (its
    unit radius is 0.3 of the image), centred at (pos_x, pos_y) in image units [0, 1] (x to
    the right, y down), rotated by ``theta`` (radians, counter-clockwise), anti-aliased by
    averaging ``supersample``^2 points per pixel."""
    offsets = (np.arange(supersample) + 0.5) / supersample
    grid = (np.arange(size)[:, None] + offsets[None, :]).ravel() / size
    py, px = np.meshgrid(grid, grid, indexing="ij")
    dx, dy = px - pos_x, -(py - pos_y)  # y up in the shape's frame
    radius = 0.3 * scale
    c, s = np.cos(theta), np.sin(theta)
    u = (c * dx + s * dy) / radius  # rotate the points by -theta
    v = (-s * dx + c * dy) / radius
    mask = inside_shape(shape, u, v).astype(np.float64)
    return mask.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def orientation_target(theta: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(cos k*theta, sin k*theta): invariant under the shape's symmetry rotation theta + 2*pi/k."""
    theta, k = np.asarray(theta, dtype=np.float64), np.asarray(k, dtype=np.float64)
    return np.stack([np.cos(k * theta), np.sin(k * theta)], axis=-1)


def generate_shapes(n: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` random sprites: shape uniform over SHAPE_NAMES, scale in [0.5, 1], position in
    [0.3, 0.7]^2, orientation in [0, 2*pi). Returns images (n, 1, size, size) float32, labels
    (shape index), factors (n, 5) in FACTOR_NAMES order, and the raw theta."""
    rng = np.random.default_rng(int(seed))
    labels = rng.integers(0, len(SHAPE_NAMES), size=n)
    scale = rng.uniform(0.5, 1.0, size=n)
    pos = rng.uniform(0.3, 0.7, size=(n, 2))
    theta = rng.uniform(0.0, 2 * np.pi, size=n)
    images = np.stack([
        render_sprite(SHAPE_NAMES[lab], sc, x, y, th, size)
        for lab, sc, (x, y), th in zip(labels, scale, pos, theta)
    ])
    k = np.array([SHAPE_SYMMETRY[SHAPE_NAMES[lab]] for lab in labels])
    factors = np.column_stack([scale, pos[:, 0], pos[:, 1], orientation_target(theta, k)])
    return {
        "images": images[:, None].astype(np.float32),
        "labels": labels.astype(np.int64),
        "factors": factors.astype(np.float32),
        "theta": theta,
    }
