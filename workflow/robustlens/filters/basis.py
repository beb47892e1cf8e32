"""PCA filter basis of scaled 3x3 filters (Gavrikov & Keuper, CVPR-W 2022, Sec. 3 Eq. 3-6;
Sec. 4.1, Fig. 2): :class:`FilterBasis`, :func:`filter_basis`, the bases of all, robust and
normal filters of a dataset (:func:`filter_bases`) and their tidy table (:func:`basis_table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from .common import _filter_rows
from .dataset import _FilterArrays
from .quality import scale_filters

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

BASIS_COLUMNS = ["subset", "component", "explained_variance_ratio", "tap", "value"]


@dataclass(frozen=True)
class FilterBasis:
    """A PCA basis of scaled 3x3 filters: ``components`` (9, 9), one basis vector v_i per row
    in decreasing order of explained variance, each with its largest-magnitude entry positive
    (PCA signs are arbitrary); ``explained_variance`` and ``explained_variance_ratio`` â (9,)
    (Eq. 5); ``mean`` (9,) the column means W̄ subtracted before projecting; ``n_filters``."""

    components: np.ndarray
    explained_variance_ratio: np.ndarray
    explained_variance: np.ndarray
    mean: np.ndarray
    n_filters: int

    def project(self, filters: Any) -> np.ndarray:
        """Coefficients c of the given (already scaled) filters on this basis: (F - W̄) Vᵀ."""
        return (_filter_rows(filters) - self.mean) @ self.components.T


def filter_basis(coefficients: Any, sparse: Any = None, *, scale: bool = True) -> FilterBasis:
    """PCA filter basis (Gavrikov & Keuper Eq. 3-5) of 3x3 filters.

    ``coefficients``: (n, 9), (n, 3, 3) or a (c_out, c_in, 3, 3) weight. ``sparse``: optional
    boolean mask of filters to leave out (the paper removes sparse filters; the sparsity
    criterion needs the whole layer, so pass the dataset's ``sparse`` coordinate — or use
    :func:`filter_bases`). With ``scale`` each filter is first divided by its own max|F| (Eq. 3).
    Fitted by an eigendecomposition of the 9x9 covariance of the centred filters.
    """
    x = _filter_rows(coefficients)
    if sparse is not None:
        x = x[~np.asarray(sparse, dtype=bool).ravel()]
    if scale:
        x = scale_filters(x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least two filters for a PCA basis; got {n}")
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / (n - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values = np.clip(values[order], 0.0, None)
    components = vectors[:, order].T.copy()
    for row in components:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    total = values.sum()
    ratio = values / total if total > 0 else np.zeros_like(values)
    return FilterBasis(components=components, explained_variance_ratio=ratio,
                       explained_variance=values, mean=mean, n_filters=n)


def filter_bases(ds: "xr.Dataset") -> dict[str, FilterBasis]:
    """The filter bases of Fig. 2: ``"all"``, ``"robust"`` and ``"normal"`` filters of the
    dataset (non-sparse, scaled); a subset without at least two filters is left out."""
    a = _FilterArrays.from_dataset(ds)
    keep = ~a.sparse
    subsets = {"all": keep, "robust": keep & a.robust, "normal": keep & ~a.robust}
    return {name: filter_basis(a.coefficients[m]) for name, m in subsets.items() if m.sum() >= 2}


def basis_table(bases: Mapping[str, FilterBasis]) -> pd.DataFrame:
    """Tidy table of filter bases: one row per (subset, component, tap) with columns
    ``subset, component, explained_variance_ratio, tap, value`` (value = the component's
    weight at that tap, tap row-major in the 3x3 kernel)."""
    rows = []
    for subset, basis in bases.items():
        for i, (vec, ratio) in enumerate(zip(basis.components, basis.explained_variance_ratio)):
            rows += [{"subset": subset, "component": i, "explained_variance_ratio": float(ratio),
                      "tap": t, "value": float(v)} for t, v in enumerate(vec)]
    return pd.DataFrame(rows, columns=BASIS_COLUMNS)
