"""Classifier-head retraining (Klabunde, Caspari, Lemmerich, Sec. 5): stored heads and their
logits. The heads are fitted by :mod:`robustlens.head_training` (torch); this module is numpy
only, so comparison and table jobs that apply stored heads to stored features
(:func:`head_logits`, :func:`load_heads`) start without torch.
"""

from __future__ import annotations

import numpy as np

from robustlens.data import load_dataset, save_dataset


def head_logits(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Logits of a linear head: features @ W.T + b (float64)."""
    return np.asarray(features, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T + bias


def save_heads(heads: dict, path: str) -> None:
    """Write the heads (.npz) through a temporary file."""
    save_dataset(heads, path)


def load_heads(path: str) -> dict:
    """Heads written by :func:`save_heads`."""
    return load_dataset(path)
