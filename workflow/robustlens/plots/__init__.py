"""Figures of the robustlens studies (matplotlib, Agg backend, no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: The line each figure job logs per panel; the rehearsals fail on a panel without data.
PANEL_PREFIX = "robustlens: panel"


def panel_data_points(ax) -> int:
    """Finite data points drawn in one axes: line vertices, scatter and collection offsets or
    path vertices, image pixels, bar patches of non-zero size."""
    count = 0
    for line in ax.get_lines():
        xy = np.asarray(line.get_xydata(), dtype=float).reshape(-1, 2)
        count += int(np.isfinite(xy).all(axis=1).sum())
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets(), dtype=float).reshape(-1, 2)
        points = int(np.isfinite(offsets).all(axis=1).sum()) if len(offsets) > 1 or collection.get_paths() == [] else 0
        if not points:
            points = sum(int(np.isfinite(p.vertices).all(axis=1).sum()) for p in collection.get_paths())
        array = collection.get_array()
        if array is not None:
            points = max(points, int(np.isfinite(np.ma.filled(np.asarray(array, dtype=float), np.nan)).sum()))
        count += points
    for image in ax.get_images():
        count += int(np.isfinite(np.ma.filled(np.asarray(image.get_array(), dtype=float), np.nan)).sum())
    for patch in ax.patches:
        w, h = getattr(patch, "get_width", lambda: 0)(), getattr(patch, "get_height", lambda: 0)()
        count += int(np.isfinite([w, h]).all() and (w != 0 and h != 0))
    return count


def save_figure(fig, paths, dpi: int, close: bool = True, **savefig) -> None:
    """Save ``fig`` to every path (PDFs without a creation date, so equal figures are equal
    files), log the finite data points of every visible panel, and close it (unless ``close`` is
    false)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    for i, ax in enumerate(fig.axes):
        n = panel_data_points(ax)
        if ax.get_visible() and (ax.axison or n):
            print(f"{PANEL_PREFIX} {i} {ax.get_title()!r}: {n} data points")
    for path in paths:
        fig.savefig(path, dpi=dpi, metadata={"CreationDate": None} if str(path).endswith(".pdf") else None, **savefig)
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
