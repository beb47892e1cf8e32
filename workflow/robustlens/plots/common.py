"""What every figure module shares: how a figure is made (:func:`new_figure`) and saved
(:func:`save`), and the panel report the rehearsals read.

The one style of the figures: matplotlib's object-oriented API on an Agg canvas (no pyplot
state, nothing to close, no torch), in matplotlib's default rcParams, every size from the
config's ``figures.<name>`` (width, height in inches) and ``figures.dpi``; PNG and PDF from
the same Figure, PDFs without a creation date so that equal figures are equal files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: The line each figure job logs per panel; the rehearsals fail on a panel without data.
PANEL_PREFIX = "robustlens: panel"

PathLike = str | Path | Sequence[str | Path]


def new_figure(size: tuple[float, float], layout: str | None = "constrained") -> Figure:
    """A Figure of ``size`` inches on its own Agg canvas (``layout``: matplotlib's layout engine,
    None for none)."""
    fig = Figure(figsize=size, layout=layout)
    FigureCanvasAgg(fig)
    return fig


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


def save(fig: Figure, paths: PathLike, dpi: int, tight: bool = False) -> None:
    """Save ``fig`` to every path (PDFs without a creation date) at ``dpi``, cropped to what is
    drawn when ``tight`` (``bbox_inches="tight"``), and log the finite data points of every
    visible panel (:data:`PANEL_PREFIX`)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    for i, ax in enumerate(fig.axes):
        n = panel_data_points(ax)
        if ax.get_visible() and (ax.axison or n):
            print(f"{PANEL_PREFIX} {i} {ax.get_title()!r}: {n} data points")
    extra = {"bbox_inches": "tight"} if tight else {}
    for path in paths:
        fig.savefig(path, dpi=dpi, metadata={"CreationDate": None} if str(path).endswith(".pdf") else None, **extra)


def figure_size(figure: dict | None, default: tuple[float, float]) -> tuple[float, float]:
    """(width, height) of a figure's settings (``figures.<name>``), each defaulting to ``default``."""
    return (figure.get("width", default[0]), figure.get("height", default[1])) if figure else default


def require_rows(df: pd.DataFrame, what: str) -> None:
    """Stop with the table rows a figure needs when there are none."""
    if df.empty:
        raise ValueError(f"no rows to plot: {what}")
