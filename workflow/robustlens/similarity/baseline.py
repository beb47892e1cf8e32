"""Permutation null distribution of a similarity measure.

Shuffling the rows of Y breaks the sample correspondence of X and Y while keeping both marginal
geometries; the values of ``measure(X, Y[perm])`` over random permutations are the null a
similarity value is compared with (:func:`permutation_baseline`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from robustlens.measures import get_function
from robustlens.similarity.validation import _take_rows


def permutation_baseline(measure: Callable | str, X, Y, n_permutations: int = 100, seed: int = 0,
                         measure_kwargs: dict | None = None, **kwargs) -> np.ndarray:
    """Values of ``measure(X, Y[perm], **kwargs)`` for ``n_permutations`` random row permutations.

    Shuffling the rows of Y breaks the sample correspondence while keeping both marginal
    geometries: the result is the null distribution a similarity value is compared with (for a
    similarity, the observed value should exceed the null; for RTD, fall below it).
    ``measure`` is a function or a name in :data:`robustlens.measures.MEASURES`; ``kwargs`` go
    to it, and so do the entries of ``measure_kwargs``, which is how to pass an argument whose
    name this function uses itself (RTD's ``seed``: ``measure_kwargs={"seed": 0}``).
    Permutations come from ``numpy.random.default_rng(seed)``. Returns a float64 array.
    """
    kwargs = {**kwargs, **(measure_kwargs or {})}
    if isinstance(measure, str):
        measure = get_function(measure)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    values = np.empty(n_permutations)
    for i in range(n_permutations):
        values[i] = measure(X, _take_rows(Y, rng.permutation(n)), **kwargs)
    return values
