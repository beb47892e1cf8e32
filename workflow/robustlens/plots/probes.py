"""Figure of the probes stage (probes.smk): example inversions of a standard and the most robust
model (Engstrom et al. 2019)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from robustlens.plots.common import figure_size, new_figure, save

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr


def _imshow_chw(ax, img) -> None:
    """Draw a (channel, y, x) image in [0, 1]: RGB for 3 channels, grey for 1."""
    img = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    if img.shape[0] == 3:
        ax.imshow(img.transpose(1, 2, 0))
    elif img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        raise ValueError(f"an image of {img.shape[0]} channels: only 1 (grey) or 3 (RGB) can be drawn")


def plot_inversions(dataset: dict, probes: dict[str, "xr.Dataset"], paths: list[str], figure: dict, dpi: int,
                    split: str = "test", n_examples: int = 6) -> None:
    """For each model: start images (another class), target images and the inverted images, with
    the final relative representation loss of each inversion. Images are (channel, y, x) in
    [0, 1]: three channels are drawn in colour (RGB), one in grey."""
    images = dataset[f"x_{split}"]
    fig = new_figure(figure_size(figure, (8, 5)), layout=None)
    axes = fig.subplots(3 * len(probes), n_examples, squeeze=False)
    for m, (model, ds) in enumerate(probes.items()):
        for j in range(min(n_examples, ds.sizes["sample"])):
            start = images[int(ds["start_index"][j])]
            target = images[int(ds["target_index"][j])]
            inverted = ds["images"].values[j]
            for k, (img, name) in enumerate(((start, "start"), (target, "target"), (inverted, "inverted"))):
                ax = axes[3 * m + k][j]
                _imshow_chw(ax, img)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{model}\n{name}" if k == 0 else name, fontsize=6)
                if k == 2:
                    ax.set_xlabel(f"loss {float(ds['final_loss'][j]):.2f}", fontsize=6)
    fig.suptitle(figure.get("title", "Representation inversion (Engstrom et al. 2019)"))
    save(fig, paths, dpi, tight=True)
