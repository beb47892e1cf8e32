"""Index splits of labelled items: stratified train/test splits, stratified subsets, plain
random splits. Every split is fixed by its seed and returned as sorted indices.

Only numpy at import time (scikit-learn when a stratified split is drawn): the Snakefile and
table jobs may import this module.
"""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/test split, fixed by ``seed`` (sorted within each part)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def stratified_subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a stratified subset of ``limit`` items (all when ``limit`` is None or
    not smaller), fixed by ``seed``. Where no stratified subset exists (fewer items kept or left
    out than there are classes, or a class of one item), a uniform random one."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    try:
        idx, _ = train_test_split(np.arange(len(labels)), train_size=limit, stratify=labels, random_state=seed)
    except ValueError:
        idx = np.random.default_rng(seed).permutation(len(labels))[:limit]
    return np.sort(idx)


def random_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted train/test indices of ``n`` items, fixed by ``seed``."""
    order = np.random.default_rng(int(seed)).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])
