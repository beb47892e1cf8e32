"""3x3 convolution filters of robust and normal models (Gavrikov & Keuper, CVPR-W 2022,
"Adversarial Robustness through the Lens of Convolutional Filters").

What this module computes, with the paper's names:

- layer quality (Sec. 3, "Measuring layer quality"): :func:`sparsity` (Eq. 7),
  :func:`variance_entropy` (Eq. 8) and :func:`orthogonality` (Eq. 9);
- the PCA filter basis (Sec. 3, Eq. 3-6; Sec. 4.1, Fig. 2): :func:`filter_basis`;
- the coefficient distribution shift (Sec. 3 "Quantifying distribution shifts", Eq. 10;
  Sec. 4.2, Fig. 1 and 3): :func:`coefficient_shift`, :func:`shift_table`, with null baselines
  (seed halves, and a permutation of the robust/normal labels across models).

Conventions (binding, from DESIGN.md "Filters"; where the authors' published code differs from
the paper's sentence we follow the code and say so):

- A filter F of layer W is **sparse** if ``max|F| <= max|W| / 100``. An all-zero layer has
  every filter sparse.
- **Scaling**: each filter is divided by its own ``max|F|`` (Eq. 3); an all-zero filter is left
  as it is. The PCA basis, the coefficient shift *and* the variance entropy use scaled filters.
  (The paper says the variance entropy is fitted "without normalization of filters"; the
  authors' code scales, and so do we.)
- **Variance entropy**: base-10 entropy of the explained variance ratios of the PCA of the
  layer's non-sparse, scaled filters; ``0`` = all variance on one axis, ``log10(9) ~ 0.954`` =
  spread evenly over the nine axes. NaN when fewer than two non-sparse filters or no variance.
- **Orthogonality**: ``1 - sum|Ŵ Ŵᵀ - I| / (c(c - 1))`` over the unit-normalised filter banks
  Ŵ (one row of ``c_in * 9`` weights per output channel); all-zero banks are left out (and
  counted by :func:`n_zero_banks`), c is the number of banks kept. 1 = orthogonal banks,
  0 = parallel banks. NaN when fewer than two non-zero banks. Option ``zero_banks="keep"``:
  the authors' code (zero rows kept in Ŵ, c = c_out; see :func:`orthogonality`).
- **Coefficient shift**: both samples are projected on one shared basis (fitted on all filters of
  the comparison); per PCA axis a 70-bin histogram over the pooled range of the two samples'
  coefficients on that axis (option ``histogram_range="global"``: the authors' code, one range
  for all axes over every projected filter of the dataset, sparse ones included), taken as a
  *density* (``numpy.histogram(..., density=True)``),
  empty bins set to ``numpy.finfo(numpy.float32).eps``, renormalised to sum 1 (exactly the
  authors' ``get_discrete_probability_distribution``); symmetric KL ``KL(p||q) + KL(q||p)`` in
  **nats** (natural log, as ``scipy.stats.entropy`` in the authors' code); weighted by the
  basis' explained variance ratio and summed over the nine axes.
- **Depth**: ``depth_index`` counts *all* ``nn.Conv2d`` layers (3x3 or not) in forward order,
  0-based; ``normalised_depth = depth_index / (n_conv - 1)``. Depth bins are equal-width,
  right-closed intervals ``(j/B, (j+1)/B]`` of normalised depth (the authors'
  ``pd.cut(conv_depth_norm, np.arange(0, 1.1, 0.1))``), so the first conv layer (depth 0) falls
  in no bin and is reported on its own.

Grouped and depthwise convolutions are kept: their weight is ``(c_out, c_in / groups, 3, 3)``
and ``in_channel`` indexes the input channel *within its group*; orthogonality compares the
stored banks as they are.

Layout (one part of the paper a module; every public name is re-exported here, so
``from robustlens.filters import X`` works for all of them):

- :mod:`~robustlens.filters.quality`: the layer quality measures (Eq. 7-9) and the per-filter
  scaling (Eq. 3);
- :mod:`~robustlens.filters.extract`: the 3x3 kernels of a torch model, in depth order;
- :mod:`~robustlens.filters.dataset`: the filter dataset (one row per filter), the model table
  and the layer quality table;
- :mod:`~robustlens.filters.depth`: normalised depth and depth bins, quality by depth;
- :mod:`~robustlens.filters.basis`: the PCA filter basis (Eq. 3-6);
- :mod:`~robustlens.filters.shift`: the coefficient distribution shift (Eq. 10);
- :mod:`~robustlens.filters.common`: array helpers shared by the others.

No torch import at module level, here or in any submodule: :func:`extract_conv_filters`
imports it when called.
"""

from __future__ import annotations

from .basis import BASIS_COLUMNS, FilterBasis, basis_table, filter_bases, filter_basis
from .common import N_TAPS
from .dataset import (
    QUALITY_COLUMNS,
    QUALITY_METRICS,
    filters_dataset,
    layer_weight,
    model_table,
    quality_table,
)
from .depth import (
    QUALITY_BY_DEPTH_COLUMNS,
    QUALITY_WEIGHTS,
    choose_n_depth_bins,
    depth_bin_edges,
    depth_bin_index,
    normalised_depth,
    quality_by_depth,
)
from .extract import ConvLayerFilters, ModelFilters, extract_conv_filters
from .quality import (
    MAX_VARIANCE_ENTROPY,
    SPARSITY_FRACTION,
    ZERO_BANKS,
    entropy10,
    explained_variance_ratio,
    n_zero_banks,
    orthogonality,
    scale_filters,
    sparse_filter_mask,
    sparsity,
    variance_entropy,
)
from .shift import (
    EMPTY_BIN_VALUE,
    HISTOGRAM_RANGES,
    KL_BINS,
    SHIFT_COLUMNS,
    SHIFT_MEASURE,
    coefficient_shift,
    discrete_distribution,
    global_coefficient_range,
    shift_table,
    symmetric_kl,
)

__all__ = [
    "SPARSITY_FRACTION",
    "KL_BINS",
    "EMPTY_BIN_VALUE",
    "N_TAPS",
    "MAX_VARIANCE_ENTROPY",
    "QUALITY_METRICS",
    "SHIFT_MEASURE",
    "ZERO_BANKS",
    "HISTOGRAM_RANGES",
    "QUALITY_COLUMNS",
    "QUALITY_BY_DEPTH_COLUMNS",
    "QUALITY_WEIGHTS",
    "SHIFT_COLUMNS",
    "BASIS_COLUMNS",
    "scale_filters",
    "sparse_filter_mask",
    "sparsity",
    "explained_variance_ratio",
    "entropy10",
    "variance_entropy",
    "n_zero_banks",
    "orthogonality",
    "ConvLayerFilters",
    "ModelFilters",
    "normalised_depth",
    "extract_conv_filters",
    "filters_dataset",
    "model_table",
    "layer_weight",
    "quality_table",
    "depth_bin_index",
    "depth_bin_edges",
    "choose_n_depth_bins",
    "quality_by_depth",
    "FilterBasis",
    "filter_basis",
    "filter_bases",
    "basis_table",
    "symmetric_kl",
    "discrete_distribution",
    "global_coefficient_range",
    "coefficient_shift",
    "shift_table",
]
