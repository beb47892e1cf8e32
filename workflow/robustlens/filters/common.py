"""Array helpers shared by the parts of :mod:`robustlens.filters` (Gavrikov & Keuper, CVPR-W
2022, "Adversarial Robustness through the Lens of Convolutional Filters"): float64 conversion
of numpy arrays and torch tensors, conv weight checks, and filters as rows of nine taps, the
form in which Eq. 3-10 of the paper read them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Number of taps of a 3x3 filter.
N_TAPS = 9


def _to_numpy(x: Any) -> np.ndarray:
    """A float64 numpy array from a numpy array or torch tensor (without importing torch;
    bfloat16/half tensors included)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_weight(weight: Any) -> np.ndarray:
    w = _to_numpy(weight)
    if w.ndim != 4:
        raise ValueError(f"a conv weight has shape (c_out, c_in, k1, k2); got shape {w.shape}")
    if w.size == 0:
        raise ValueError("empty conv weight")
    return w


def _filter_rows(x: Any) -> np.ndarray:
    """Filters as rows of 9 taps: accepts (n, 9), (n, 3, 3) or a (c_out, c_in, 3, 3) weight."""
    a = _to_numpy(x)
    if a.ndim == 2 and a.shape[1] == N_TAPS:
        return a
    if a.ndim >= 3 and a.shape[-2:] == (3, 3):
        return a.reshape(-1, N_TAPS)
    raise ValueError(f"expected filters of shape (n, 9), (n, 3, 3) or (c_out, c_in, 3, 3); got {a.shape}")


def _as_str_array(values: Any) -> np.ndarray:
    """Coordinate values as an object array of Python str (zarr 3 reads strings back as
    numpy's StringDType; fixed-width and object arrays are handled alike)."""
    return np.asarray(values).astype(object)
