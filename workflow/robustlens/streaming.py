"""Training images read from the dataset cache batch by batch (``training.stream``), as the
device sees them.

:class:`StreamedImages` behaves like a float32 image tensor on the device for the operations
training, validation and feature extraction use (``len``, slices, index arrays), but holds only
the batch it was asked for: rows are read from the .npz on disk
(:class:`robustlens.npz_rows.NpzRows`), 8-bit values divided by 255 on the device.
"""

from __future__ import annotations

import numpy as np
import torch

from robustlens.augment import centre_crop


class StreamedImages:
    """Images of a training split as the device sees them, read from the dataset cache per
    batch (``rows``: :class:`robustlens.npz_rows.NpzRows`; ``index``: this split's rows in it,
    e.g. the training or validation part). ``images[idx]`` (a slice, an index array or a CPU
    index tensor) is a float32 tensor in [0, 1] on ``device``: 8-bit rows divided by 255 on the
    device, the same values :func:`robustlens.data.as_float` gives. Only a batch is ever held,
    so a job's memory does not grow with the split."""

    def __init__(self, rows, index: np.ndarray, device: torch.device, crop: int | None = None):
        self.rows, self.index, self.device = rows, np.asarray(index, dtype=np.int64), torch.device(device)
        self.crop = crop  # the centre crop every batch is cut to (validation of larger stored images)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, slice):
            positions = self.index[idx]
        else:
            positions = self.index[np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx)]
        batch = torch.from_numpy(self.rows[positions]).to(self.device)
        return centre_crop(batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch, self.crop)
