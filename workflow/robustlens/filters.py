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

No torch import at module level: :func:`extract_conv_filters` imports it when called.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

#: A filter is sparse if max|F| <= SPARSITY_FRACTION * max|W| (paper: max|W| / 100).
SPARSITY_FRACTION = 0.01
#: Histogram bins per PCA axis for the coefficient shift (authors' code: ``bins=70``).
KL_BINS = 70
#: Value given to empty histogram bins before renormalising (authors' code).
EMPTY_BIN_VALUE = float(np.finfo(np.float32).eps)
#: Number of taps of a 3x3 filter.
N_TAPS = 9
#: Maximum variance entropy of 3x3 filters: log10(9).
MAX_VARIANCE_ENTROPY = math.log10(N_TAPS)
#: The quality metrics :func:`quality_table` reports, in order.
QUALITY_METRICS = ("sparsity", "variance_entropy", "orthogonality", "n_zero_banks")
#: Name of the measure in :func:`shift_table`.
SHIFT_MEASURE = "weighted_symmetric_kl_nats"
#: What :func:`orthogonality` does with all-zero filter banks: ``drop`` (robustlens) or
#: ``keep`` (the authors' code).
ZERO_BANKS = ("drop", "keep")
#: Histogram range of the coefficient shift: ``pooled`` (per axis, the two samples' pooled
#: range; robustlens) or ``global`` (one range over every projected filter of the dataset, all
#: axes; the authors' code).
HISTOGRAM_RANGES = ("pooled", "global")

QUALITY_COLUMNS = [
    "model", "eps", "robust", "seed", "layer", "depth_index", "normalised_depth", "n_conv",
    "n_filters", "n_banks", "zero_banks", "metric", "value",
]
QUALITY_BY_DEPTH_COLUMNS = [
    "model", "eps", "robust", "seed", "group", "scope", "depth_lo", "depth_hi", "n_depth_bins",
    "n_layers", "metric", "value",
]
#: Weight of each layer when averaging a metric over the layers of a depth group (authors'
#: metric_comparison notebook: filters for sparsity and entropy, output channels for
#: orthogonality); None = sum.
QUALITY_WEIGHTS = {"sparsity": "n_filters", "variance_entropy": "n_filters", "orthogonality": "n_banks", "n_zero_banks": None}
SHIFT_COLUMNS = [
    "comparison", "group_a", "group_b", "scope", "bin", "depth_lo", "depth_hi", "n_depth_bins",
    "measure", "histogram_range", "value", "n_filters_a", "n_filters_b", "n_models_a", "n_models_b",
    "n_permutations", "permutation_exact", "p_value", "null_mean", "null_q95",
]
BASIS_COLUMNS = ["subset", "component", "explained_variance_ratio", "tap", "value"]


# --------------------------------------------------------------------------------------------
# array helpers


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


def scale_filters(filters: Any) -> np.ndarray:
    """Each filter divided by its own max|F| (Gavrikov & Keuper Eq. 3); all-zero filters kept.

    Idempotent: scaling scaled filters changes nothing. Returns float64 rows of 9 taps
    (or of k1*k2 taps for a 4-D weight of another kernel size).
    """
    a = _to_numpy(filters)
    rows = a.reshape(-1, a.shape[-1] * a.shape[-2]) if a.ndim >= 3 else a
    den = np.abs(rows).max(axis=1, keepdims=True)
    den[den == 0] = 1.0
    return rows / den


def _as_str_array(values: Any) -> np.ndarray:
    """Coordinate values as an object array of Python str (zarr 3 reads strings back as
    numpy's StringDType; fixed-width and object arrays are handled alike)."""
    return np.asarray(values).astype(object)


# --------------------------------------------------------------------------------------------
# layer quality (Sec. 3, Eq. 7-9)


def sparse_filter_mask(weight: Any) -> np.ndarray:
    """Boolean (c_out, c_in) mask of the sparse filters of one layer.

    A filter F is sparse if ``max|F| <= max|W| / 100`` (Gavrikov & Keuper Sec. 3, the criterion
    of CNN-Filter-DB). In an all-zero layer every filter is sparse.
    """
    w = _check_weight(weight)
    filter_max = np.abs(w).max(axis=(2, 3))
    return filter_max <= SPARSITY_FRACTION * np.abs(w).max()


def sparsity(weight: Any) -> float:
    """Fraction of sparse filters among the c_out * c_in filters of a conv layer
    (Gavrikov & Keuper Eq. 7), with ``max|F| <= max|W| / 100`` as the sparsity criterion.

    ``weight``: (c_out, c_in, 3, 3), numpy or torch. Range [0, 1]; lower = more filters that
    contribute to the feature maps.
    """
    return float(sparse_filter_mask(weight).mean())


def explained_variance_ratio(filters: Any) -> np.ndarray:
    """Explained variance ratios â of the PCA of the rows of ``filters`` (Eq. 4-5): the
    eigenvalues of the covariance of the centred rows, decreasing, normalised to sum 1.
    All zeros when the rows have no variance."""
    x = np.asarray(filters, dtype=np.float64)
    if x.shape[0] < 2:
        raise ValueError("need at least two filters for a PCA")
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    var = s**2 / (x.shape[0] - 1)
    total = var.sum()
    return var / total if total > 0 else np.zeros_like(var)


def entropy10(ratios: Any) -> float:
    """Base-10 entropy ``-sum a log10 a`` of a probability vector (0 log 0 = 0), Eq. 8."""
    a = np.asarray(ratios, dtype=np.float64)
    a = a[a > 0]
    return float(-(a * np.log10(a)).sum())


def variance_entropy(weight: Any) -> float:
    """Variance entropy of a conv layer (Gavrikov & Keuper Eq. 8): the base-10 entropy of the
    PCA explained variance ratios of the layer's non-sparse filters, each filter first scaled by
    its own max|F| (as in the authors' code; the paper's text says "without normalization").

    ``weight``: (c_out, c_in, 3, 3). Range [0, log10(9) ~ 0.954] for 3x3 filters: 0 = all
    variance along one basis vector (homogeneous filters), log10(9) = variance spread evenly (as
    in random, untrained layers); both edges indicate degeneration. NaN when the layer has fewer
    than two non-sparse filters or their scaled versions have no variance.
    """
    w = _check_weight(weight)
    mask = sparse_filter_mask(w).ravel()
    rows = w.reshape(-1, w.shape[2] * w.shape[3])[~mask]
    if rows.shape[0] < 2:
        return float("nan")
    ratios = explained_variance_ratio(scale_filters(rows))
    if not ratios.any():
        return float("nan")
    return entropy10(ratios)


def _bank_matrix(weight: Any) -> np.ndarray:
    w = _check_weight(weight)
    return w.reshape(w.shape[0], -1)


def n_zero_banks(weight: Any) -> int:
    """Number of all-zero filter banks (output channels) of a conv layer: the banks that
    :func:`orthogonality` leaves out (with its default ``zero_banks="drop"``)."""
    return int((np.abs(_bank_matrix(weight)).max(axis=1) == 0).sum())


def orthogonality(weight: Any, zero_banks: str = "drop") -> float:
    """Orthogonality of the filter banks of a conv layer (Gavrikov & Keuper Eq. 9):
    ``1 - sum|Ŵ Ŵᵀ - I| / (c (c - 1))`` with Ŵ the (c, c_in * 9) matrix of unit-normalised
    banks (one row per output channel).

    ``zero_banks="drop"`` (default): all-zero banks are left out (see :func:`n_zero_banks`) and
    c counts the banks kept; NaN when fewer than two non-zero banks. ``zero_banks="keep"``: the
    authors' code (``ortho_cond`` in their orthogonality notebook) and Eq. 9 read literally: an
    all-zero bank stays a zero row of Ŵ and c = c_out. Such a row is orthogonal to every bank
    (zero off-diagonal terms) but its diagonal term is ``|0 - 1| = 1``, so z zero banks give
    ``1 - (S + z) / (c_out (c_out - 1))`` with S the off-diagonal sum of the non-zero banks;
    NaN only when c_out < 2. The default differs because a dead channel is no evidence about
    the diversity of the live ones, and the literal formula both penalises it (diagonal) and
    dilutes the others (denominator). 1 = all banks orthogonal; 0 = parallel banks (feature
    maps identical up to scale and sign). Grouped convs: the stored (c_in / groups) banks.
    """
    if zero_banks not in ZERO_BANKS:
        raise ValueError(f"zero_banks must be one of {ZERO_BANKS}, got {zero_banks!r}")
    banks = _bank_matrix(weight)
    norms = np.linalg.norm(banks, axis=1)
    if zero_banks == "keep":
        kept = banks / np.where(norms > 0, norms, 1.0)[:, None]
    else:
        kept = banks[norms > 0] / norms[norms > 0, None]
    c = kept.shape[0]
    if c < 2:
        return float("nan")
    gram = kept @ kept.T
    off = np.abs(gram - np.eye(c)).sum()
    return float(1.0 - off / (c * (c - 1)))


# --------------------------------------------------------------------------------------------
# extraction


@dataclass(frozen=True)
class ConvLayerFilters:
    """The 3x3 kernels of one ``nn.Conv2d`` layer.

    ``weight``: float32 (c_out, c_in / groups, 3, 3). ``depth_index`` counts all conv layers
    (3x3 or not) in forward order, 0-based; ``normalised_depth = depth_index / (n_conv - 1)``.
    """

    name: str
    depth_index: int
    normalised_depth: float
    weight: np.ndarray
    groups: int = 1


@dataclass(frozen=True)
class ModelFilters:
    """All 3x3 conv kernels of one model plus bookkeeping.

    ``n_conv``: number of ``nn.Conv2d`` layers of every kernel size; ``skipped``: names of the
    non-3x3 conv layers left out (they still count for depth); ``order``: ``"forward"`` when the
    depth order came from a forward pass, ``"registration"`` when from ``named_modules()``;
    ``unexecuted``: conv layers the forward pass never called (placed after the called ones, in
    registration order); ``seed``: training seed, None when unknown.
    """

    model_id: str
    eps: float
    layers: tuple[ConvLayerFilters, ...]
    n_conv: int
    skipped: tuple[str, ...] = ()
    order: str = "registration"
    seed: int | None = None
    unexecuted: tuple[str, ...] = ()

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    @property
    def n_filters(self) -> int:
        return int(sum(layer.weight.shape[0] * layer.weight.shape[1] for layer in self.layers))

    @property
    def grouped_layers(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers if layer.groups > 1)


def normalised_depth(depth_index: int, n_conv: int) -> float:
    """depth_index / (n_conv - 1); 0.0 for a model with a single conv layer."""
    return float(depth_index) / (n_conv - 1) if n_conv > 1 else 0.0


def _forward_conv_order(model: Any, convs: list[tuple[str, Any]], example_input: Any) -> tuple[list[str], list[str]]:
    """Names of the conv modules in the order a forward pass first calls them, and the names of
    those it never calls."""
    import torch

    first_call: dict[str, int] = {}

    def make_hook(name: str):
        def hook(module, args):  # forward pre-hook; must return None to leave inputs alone
            if name not in first_call:
                first_call[name] = len(first_call)
            return None

        return hook

    modes = {m: m.training for m in model.modules()}
    handles = [module.register_forward_pre_hook(make_hook(name)) for name, module in convs]
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(example_input, tuple):
                model(*example_input)
            else:
                model(example_input)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    called = sorted(first_call, key=first_call.__getitem__)
    unexecuted = [name for name, _ in convs if name not in first_call]
    return called + unexecuted, unexecuted


def extract_conv_filters(
    model: Any,
    model_id: str,
    eps: float,
    *,
    seed: int | None = None,
    input_shape: Sequence[int] | None = None,
    example_input: Any = None,
) -> ModelFilters:
    """The 3x3 kernels of every ``nn.Conv2d`` (and subclass) of ``model``, in depth order.

    Depth counts *all* conv layers in forward order. Registration order (``named_modules()``) is
    not always forward order, so when ``example_input`` (a tensor, or a tuple of positional
    inputs) or ``input_shape`` (e.g. ``(1, 3, 32, 32)``; a zero tensor on the model's device and
    dtype) is given, one forward pass in eval mode under ``no_grad`` with pre-hooks on the convs gives the order (training flags
    are restored afterwards); conv layers it never calls come last, in registration order, with
    a warning. Without either, registration order is used (``order="registration"``).

    Non-3x3 convs are skipped but counted (``skipped``). Grouped and depthwise 3x3 convs are kept
    with their (c_out, c_in / groups, 3, 3) weight. Weights are copied to float32 numpy.
    """
    import torch
    from torch import nn

    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    modules = dict(convs)
    if example_input is None and input_shape is not None:
        ref = next(iter(model.parameters()), None)
        if ref is None:
            ref = next(iter(model.buffers()), torch.zeros(()))
        example_input = torch.zeros(tuple(input_shape), dtype=ref.dtype if ref.is_floating_point() else torch.float32, device=ref.device)
    if example_input is not None:
        names, unexecuted = _forward_conv_order(model, convs, example_input)
        order = "forward"
        if unexecuted:
            warnings.warn(
                f"{model_id}: conv layers never called in the forward pass were placed last: {unexecuted}",
                stacklevel=2,
            )
    else:
        names, unexecuted, order = [name for name, _ in convs], [], "registration"

    n_conv = len(names)
    layers, skipped = [], []
    for depth, name in enumerate(names):
        module = modules[name]
        if tuple(module.kernel_size) != (3, 3):
            skipped.append(name)
            continue
        weight = module.weight.detach().to(device="cpu", dtype=torch.float32).numpy().copy()
        layers.append(
            ConvLayerFilters(
                name=name,
                depth_index=depth,
                normalised_depth=normalised_depth(depth, n_conv),
                weight=weight,
                groups=int(module.groups),
            )
        )
    return ModelFilters(
        model_id=str(model_id),
        eps=float(eps),
        layers=tuple(layers),
        n_conv=n_conv,
        skipped=tuple(skipped),
        order=order,
        seed=None if seed is None else int(seed),
        unexecuted=tuple(unexecuted),
    )


# --------------------------------------------------------------------------------------------
# the filter dataset


def filters_dataset(records: Iterable[ModelFilters]) -> "xr.Dataset":
    """One row per 3x3 filter of the given models, as an ``xarray.Dataset``.

    Data variable ``coefficients`` (filter, tap), float32, tap = 0..8 row-major (ky, kx).
    Coordinates along ``filter``: ``model``, ``layer`` (object strings: zarr 3 stores them as
    variable-length UTF-8, which has a v3 spec, and reads them back as numpy ``StringDType``),
    ``depth_index``, ``normalised_depth``, ``n_conv``, ``eps``, ``robust`` (eps > 0), ``seed``
    (-1 when unknown), ``out_channel``, ``in_channel`` (within its group), ``groups``,
    ``sparse`` (max|F| <= max|W|/100 within its layer). Attributes (JSON-serialisable dicts keyed
    by model id): ``skipped_non3x3`` (count), ``skipped_layers`` (names), ``n_conv``,
    ``depth_order``, ``grouped_layers``, ``unexecuted_layers``.
    """
    import xarray as xr

    records = list(records)
    if not records:
        raise ValueError("no models given")
    ids = [r.model_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate model ids: {sorted({i for i in ids if ids.count(i) > 1})}")

    parts: dict[str, list[np.ndarray]] = {k: [] for k in (
        "coefficients", "depth_index", "normalised_depth", "n_conv", "eps", "seed",
        "out_channel", "in_channel", "groups", "sparse")}
    spans: list[tuple[str, str, int]] = []  # (model, layer, n_rows)
    for r in records:
        for layer in r.layers:
            w = np.asarray(layer.weight)
            if w.ndim != 4 or w.shape[2:] != (3, 3):
                raise ValueError(f"{r.model_id}/{layer.name}: not a 3x3 conv weight: shape {w.shape}")
            c_out, c_in = w.shape[:2]
            n = c_out * c_in
            rows = w.reshape(n, N_TAPS)
            parts["coefficients"].append(rows.astype(np.float32))
            parts["depth_index"].append(np.full(n, layer.depth_index, np.int32))
            parts["normalised_depth"].append(np.full(n, layer.normalised_depth, np.float64))
            parts["n_conv"].append(np.full(n, r.n_conv, np.int32))
            parts["eps"].append(np.full(n, r.eps, np.float64))
            parts["seed"].append(np.full(n, -1 if r.seed is None else r.seed, np.int64))
            parts["out_channel"].append(np.repeat(np.arange(c_out, dtype=np.int32), c_in))
            parts["in_channel"].append(np.tile(np.arange(c_in, dtype=np.int32), c_out))
            parts["groups"].append(np.full(n, layer.groups, np.int32))
            parts["sparse"].append(sparse_filter_mask(w).ravel())
            spans.append((r.model_id, layer.name, n))

    n_total = sum(n for _, _, n in spans)
    model = np.empty(n_total, dtype=object)
    layer_names = np.empty(n_total, dtype=object)
    start = 0
    for model_id, layer_name, n in spans:  # one shared str object per span: 8 bytes per row
        model[start:start + n] = model_id
        layer_names[start:start + n] = layer_name
        start += n

    def cat(key: str, dtype, shape=(0,)) -> np.ndarray:
        return np.concatenate(parts[key]) if parts[key] else np.zeros(shape, dtype)

    eps = cat("eps", np.float64)
    coords = {
        "tap": ("tap", np.arange(N_TAPS, dtype=np.int32)),
        "model": ("filter", model),
        "layer": ("filter", layer_names),
        "depth_index": ("filter", cat("depth_index", np.int32)),
        "normalised_depth": ("filter", cat("normalised_depth", np.float64)),
        "n_conv": ("filter", cat("n_conv", np.int32)),
        "eps": ("filter", eps),
        "robust": ("filter", eps > 0),
        "seed": ("filter", cat("seed", np.int64)),
        "out_channel": ("filter", cat("out_channel", np.int32)),
        "in_channel": ("filter", cat("in_channel", np.int32)),
        "groups": ("filter", cat("groups", np.int32)),
        "sparse": ("filter", cat("sparse", bool)),
    }
    attrs = {
        "description": "3x3 conv filters, one row per filter (Gavrikov & Keuper 2022)",
        "tap_order": "row-major (ky, kx)",
        "sparse_criterion": "max|F| <= max|W|/100 within the layer",
        "depth": "depth_index counts all Conv2d layers in forward order; normalised_depth = depth_index/(n_conv-1)",
        "skipped_non3x3": {r.model_id: r.n_skipped for r in records},
        "skipped_layers": {r.model_id: list(r.skipped) for r in records},
        "n_conv": {r.model_id: r.n_conv for r in records},
        "depth_order": {r.model_id: r.order for r in records},
        "grouped_layers": {r.model_id: list(r.grouped_layers) for r in records},
        "unexecuted_layers": {r.model_id: list(r.unexecuted) for r in records},
    }
    coefficients = cat("coefficients", np.float32, (0, N_TAPS))
    return xr.Dataset({"coefficients": (("filter", "tap"), coefficients)}, coords=coords, attrs=attrs)


@dataclass
class _FilterArrays:
    """The columns of a filter dataset as plain numpy arrays (one load)."""

    coefficients: np.ndarray
    model: np.ndarray
    layer: np.ndarray
    depth_index: np.ndarray
    normalised_depth: np.ndarray
    n_conv: np.ndarray
    eps: np.ndarray
    robust: np.ndarray
    seed: np.ndarray
    out_channel: np.ndarray
    in_channel: np.ndarray
    sparse: np.ndarray

    @classmethod
    def from_dataset(cls, ds: "xr.Dataset") -> "_FilterArrays":
        v = lambda name: np.asarray(ds[name].values)  # noqa: E731
        return cls(
            coefficients=np.asarray(ds["coefficients"].values, dtype=np.float64),
            model=_as_str_array(ds["model"].values),
            layer=_as_str_array(ds["layer"].values),
            depth_index=v("depth_index").astype(np.int64),
            normalised_depth=v("normalised_depth").astype(np.float64),
            n_conv=v("n_conv").astype(np.int64),
            eps=v("eps").astype(np.float64),
            robust=v("robust").astype(bool),
            seed=v("seed").astype(np.int64),
            out_channel=v("out_channel").astype(np.int64),
            in_channel=v("in_channel").astype(np.int64),
            sparse=v("sparse").astype(bool),
        )

    def subset(self, mask: np.ndarray) -> "_FilterArrays":
        return _FilterArrays(**{k: getattr(self, k)[mask] for k in self.__dataclass_fields__})


def model_table(ds: "xr.Dataset") -> pd.DataFrame:
    """One row per model of a filter dataset: model, eps, robust, seed, n_conv, n_filters,
    n_sparse, n_layers_3x3, n_skipped_non3x3."""
    a = _FilterArrays.from_dataset(ds)
    df = pd.DataFrame({
        "model": a.model, "eps": a.eps, "robust": a.robust, "seed": a.seed, "n_conv": a.n_conv,
        "layer": a.layer, "sparse": a.sparse,
    })
    out = df.groupby("model", sort=True).agg(
        eps=("eps", "first"), robust=("robust", "first"), seed=("seed", "first"),
        n_conv=("n_conv", "first"), n_filters=("sparse", "size"), n_sparse=("sparse", "sum"),
        n_layers_3x3=("layer", "nunique"),
    ).reset_index()
    skipped = ds.attrs.get("skipped_non3x3", {})
    out["n_skipped_non3x3"] = [int(skipped.get(m, 0)) for m in out["model"]]
    return out


def layer_weight(ds: "xr.Dataset", model: str, layer: str | None = None) -> tuple[str, np.ndarray]:
    """(layer name, float64 (c_out, c_in, 3, 3) weight) of one layer of one model, rebuilt from
    the filter rows; ``layer=None`` gives the model's shallowest 3x3 layer."""
    a = _FilterArrays.from_dataset(ds)
    rows = a.model == model
    if not rows.any():
        raise KeyError(f"model {model!r} is not in the dataset")
    if layer is None:
        depth = a.depth_index[rows].min()
        layer = str(a.layer[rows & (a.depth_index == depth)][0])
    rows &= a.layer == layer
    if not rows.any():
        raise KeyError(f"layer {layer!r} of model {model!r} is not in the dataset")
    return layer, _rebuild_weight(a.coefficients[rows], a.out_channel[rows], a.in_channel[rows])


def _rebuild_weight(coefficients: np.ndarray, out_channel: np.ndarray, in_channel: np.ndarray) -> np.ndarray:
    c_out, c_in = int(out_channel.max()) + 1, int(in_channel.max()) + 1
    w = np.zeros((c_out, c_in, N_TAPS), dtype=np.float64)
    w[out_channel, in_channel] = coefficients
    return w.reshape(c_out, c_in, 3, 3)


def quality_table(ds: "xr.Dataset", zero_banks: str = "drop") -> pd.DataFrame:
    """Layer quality (Gavrikov & Keuper Sec. 4.3, Fig. 7), tidy: one row per (model, layer,
    metric) with columns ``model, eps, robust, seed, layer, depth_index, normalised_depth,
    n_conv, n_filters, n_banks, zero_banks, metric, value``; metrics ``sparsity``,
    ``variance_entropy``, ``orthogonality`` (see their functions; ``zero_banks`` is passed to
    :func:`orthogonality` and recorded on every row) and ``n_zero_banks`` (all-zero banks,
    which orthogonality leaves out under ``drop``). ``n_filters`` = c_out * c_in, ``n_banks`` =
    c_out. Rows ordered by model, then depth."""
    if zero_banks not in ZERO_BANKS:
        raise ValueError(f"zero_banks must be one of {ZERO_BANKS}, got {zero_banks!r}")
    a = _FilterArrays.from_dataset(ds)
    if a.model.size == 0:
        return pd.DataFrame(columns=QUALITY_COLUMNS)
    keys = pd.DataFrame({"model": a.model, "layer": a.layer})
    groups = keys.groupby(["model", "layer"], sort=False).indices
    rows = []
    for (model, layer), idx in groups.items():
        w = _rebuild_weight(a.coefficients[idx], a.out_channel[idx], a.in_channel[idx])
        i0 = idx[0]
        meta = {
            "model": model, "eps": float(a.eps[i0]), "robust": bool(a.robust[i0]),
            "seed": int(a.seed[i0]), "layer": layer, "depth_index": int(a.depth_index[i0]),
            "normalised_depth": float(a.normalised_depth[i0]), "n_conv": int(a.n_conv[i0]),
            "n_filters": int(w.shape[0] * w.shape[1]), "n_banks": int(w.shape[0]), "zero_banks": zero_banks,
        }
        values = {
            "sparsity": sparsity(w),
            "variance_entropy": variance_entropy(w),
            "orthogonality": orthogonality(w, zero_banks),
            "n_zero_banks": float(n_zero_banks(w)),
        }
        rows += [{**meta, "metric": m, "value": values[m]} for m in QUALITY_METRICS]
    df = pd.DataFrame(rows, columns=QUALITY_COLUMNS)
    return df.sort_values(["model", "depth_index"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# depth bins


def depth_bin_index(depth_index: Any, n_conv: Any, n_bins: int) -> np.ndarray:
    """0-based depth bin of each layer: bin j holds normalised depths in ``(j/B, (j+1)/B]``
    (right-closed, as ``pd.cut``); -1 for the first conv layer (depth 0). Integer arithmetic,
    so a layer on a bin edge is never misplaced by rounding: j = ceil(d * B / (n - 1)) - 1."""
    d = np.asarray(depth_index, dtype=np.int64)
    den = np.asarray(n_conv, dtype=np.int64) - 1
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    safe = np.maximum(den, 1)
    j = (d * n_bins + safe - 1) // safe - 1
    return np.where((d <= 0) | (den <= 0), -1, j)


def depth_bin_edges(n_bins: int) -> np.ndarray:
    """Edges 0, 1/B, ..., 1 of the B equal-width depth bins."""
    return np.linspace(0.0, 1.0, n_bins + 1)


def choose_n_depth_bins(layers: pd.DataFrame, n_bins: int = 10) -> int:
    """How many equal-width depth bins to use for the layers after the first.

    ``layers``: one row per 3x3 layer with columns ``model``, ``depth_index``, ``n_conv``
    (duplicates are fine). Start from ``min(n_bins, fewest layers after the first among the
    models)`` — deciles when every model has at least ``n_bins`` such layers — and lower B until
    *every model* has at least one layer in *every* bin (skipped 1x1 convs make the 3x3 layers
    unevenly spaced). Per-model coverage keeps every bin non-empty for any split of the models
    (robust/normal, seed halves, permuted labels). 0 when some model has no layer after the
    first.
    """
    df = layers[["model", "depth_index", "n_conv"]].drop_duplicates()
    df = df[df["depth_index"] > 0]
    all_models = layers["model"].unique()
    if df.empty or df["model"].nunique() < len(all_models):
        return 0
    counts = df.groupby("model").size()
    b = int(min(n_bins, counts.min()))
    while b > 1:
        bins = depth_bin_index(df["depth_index"].to_numpy(), df["n_conv"].to_numpy(), b)
        covered = pd.DataFrame({"model": df["model"].to_numpy(), "bin": bins}).groupby("model")["bin"].nunique()
        if (covered == b).all():
            break
        b -= 1
    return b


def quality_by_depth(quality: pd.DataFrame, n_bins: int = 10) -> pd.DataFrame:
    """Layer quality per model and depth group, as in the paper's Fig. 7 (authors'
    ``metric_comparison`` notebook): group 0 = the first conv layer (scope ``first_layer``),
    groups 1..B = the equal-width depth bins of the remaining layers (scope ``depth_bin``, B from
    :func:`choose_n_depth_bins`); per model and group the layers' values averaged with weights
    :data:`QUALITY_WEIGHTS` (sparsity and variance entropy by number of filters, orthogonality by
    number of banks; ``n_zero_banks`` summed); NaN layer values are left out.

    ``quality``: the table of :func:`quality_table`. Columns: ``model, eps, robust, seed, group,
    scope, depth_lo, depth_hi, n_depth_bins, n_layers, metric, value``.
    """
    if quality.empty:
        return pd.DataFrame(columns=QUALITY_BY_DEPTH_COLUMNS)
    n_depth = choose_n_depth_bins(quality, n_bins)
    q = quality.copy()
    if n_depth > 0:
        q["group"] = depth_bin_index(q["depth_index"].to_numpy(), q["n_conv"].to_numpy(), n_depth) + 1
    else:
        q["group"] = np.where(q["depth_index"].to_numpy() == 0, 0, -1)
    q = q[q["group"] >= 0]
    edges = depth_bin_edges(max(n_depth, 1))
    rows = []
    for (model, group, metric), part in q.groupby(["model", "group", "metric"], sort=True):
        weight_col = QUALITY_WEIGHTS.get(metric, "n_filters")
        values = part["value"].to_numpy(dtype=np.float64)
        ok = np.isfinite(values)
        if weight_col is None:
            value = float(values[ok].sum())
        else:
            weights = part[weight_col].to_numpy(dtype=np.float64)[ok]
            value = float((values[ok] * weights).sum() / weights.sum()) if weights.sum() > 0 else np.nan
        first = part.iloc[0]
        rows.append({
            "model": model, "eps": first["eps"], "robust": first["robust"], "seed": first["seed"],
            "group": int(group), "scope": "first_layer" if group == 0 else "depth_bin",
            "depth_lo": 0.0 if group == 0 else float(edges[group - 1]),
            "depth_hi": 0.0 if group == 0 else float(edges[group]),
            "n_depth_bins": n_depth, "n_layers": int(len(part)), "metric": metric, "value": value,
        })
    return pd.DataFrame(rows, columns=QUALITY_BY_DEPTH_COLUMNS)


# --------------------------------------------------------------------------------------------
# PCA filter basis (Sec. 3 Eq. 3-6, Sec. 4.1)


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


# --------------------------------------------------------------------------------------------
# coefficient distribution shift (Sec. 3 Eq. 10, Sec. 4.2)


def symmetric_kl(p: Any, q: Any) -> float:
    """Symmetric KL divergence ``KL(p||q) + KL(q||p)`` in nats (natural log), Eq. 10 for one
    axis; p and q are normalised to sum 1 first (as ``scipy.stats.entropy`` does). Infinite
    when one vector has mass where the other has none."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_pq = np.where(p > 0, p * np.log(p / q), 0.0).sum()
        kl_qp = np.where(q > 0, q * np.log(q / p), 0.0).sum()
    return float(kl_pq + kl_qp)


def discrete_distribution(values: Any, value_range: tuple[float, float], bins: int = KL_BINS) -> np.ndarray:
    """The authors' discrete distribution of one coefficient axis: ``numpy.histogram(values,
    range=value_range, bins=bins, density=True)``, empty bins set to float32 machine epsilon,
    renormalised to sum 1. (The epsilon is given on the density scale, as in their code.)"""
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=bins, range=value_range)
    width = (value_range[1] - value_range[0]) / bins
    return _distributions(counts[None, :], np.array([width]))[0]


def _distributions(counts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """counts (..., axes, bins) -> densities with empty bins = eps, renormalised; NaN for an
    axis without any count. ``widths``: bin width per axis."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        density = counts / (n * widths[..., :, None])
    density[density == 0] = EMPTY_BIN_VALUE
    return density / density.sum(axis=-1, keepdims=True)


def _axis_ranges(ya: np.ndarray, yb: np.ndarray, value_range: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) histogram range per axis: the pooled (min, max) of the two samples' coefficients
    on each axis (``histogram_range="pooled"``), or the one ``value_range`` for every axis (how
    ``histogram_range="global"`` arrives here: :func:`global_coefficient_range`). A flat range
    is widened by 0.5 on each side. ``numpy.histogram`` counts a value equal to ``hi`` in the
    last bin, so the extreme coefficients that define a range are never dropped."""
    n_axes = ya.shape[1]
    if value_range is not None:
        lo = np.full(n_axes, float(value_range[0]))
        hi = np.full(n_axes, float(value_range[1]))
    else:
        pooled = np.vstack([ya, yb])
        lo, hi = pooled.min(axis=0), pooled.max(axis=0)
    flat = hi <= lo
    lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
    return lo, hi


def global_coefficient_range(coefficients: np.ndarray) -> tuple[float, float]:
    """One (min, max) over every projected coefficient on every axis: the authors' histogram
    range (``dX_trans.min(), dX_trans.max()`` in their pca notebook, over their whole filter
    database, sparse filters included)."""
    y = np.asarray(coefficients, dtype=np.float64)
    return float(y.min()), float(y.max())


def _axis_counts(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int) -> np.ndarray:
    """(axes, bins) histogram counts of the coefficient rows y, one range per axis."""
    return np.stack([np.histogram(y[:, i], bins=bins, range=(lo[i], hi[i]))[0] for i in range(y.shape[1])])


def _shift_from_counts(counts_a: np.ndarray, counts_b: np.ndarray, widths: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted symmetric KL from (..., axes, bins) counts; NaN where a sample is empty."""
    p, q = _distributions(counts_a, widths), _distributions(counts_b, widths)
    kl = ((p - q) * (np.log(p) - np.log(q))).sum(axis=-1)  # = KL(p||q) + KL(q||p), nats
    return (kl * weights).sum(axis=-1)


def coefficient_shift(
    coeffs_a: Any,
    coeffs_b: Any,
    basis: FilterBasis | None = None,
    bins: int = KL_BINS,
    *,
    value_range: tuple[float, float] | None = None,
) -> float:
    """Weighted symmetric KL divergence between the PCA coefficients of two filter samples
    (Gavrikov & Keuper Eq. 10; the paper reports 0.55 / 0.16 / 0.01 robust vs normal on
    CIFAR-10 / CIFAR-100 / ImageNet).

    ``coeffs_a``, ``coeffs_b``: filters as (n, 9), (n, 3, 3) or (c_out, c_in, 3, 3); each is
    scaled by its own max|F| (idempotent, so pre-scaled filters are fine). Leave sparse filters
    out beforehand (the criterion needs the layer; see the dataset's ``sparse`` coordinate).
    ``basis``: the shared basis; None fits one on both samples pooled. Per axis i: ``bins``
    equal-width bins over the pooled range of both samples' coefficients on that axis (or the
    one ``value_range`` for every axis, which is what the authors' code did with the range of
    their whole dataset), density histogram, empty bins = float32 eps, renormalised; symmetric
    KL in nats; weighted by ``basis.explained_variance_ratio[i]`` and summed. 0 for identical
    samples; symmetric in a and b for a given basis. NaN when a sample is empty.
    """
    xa, xb = scale_filters(_filter_rows(coeffs_a)), scale_filters(_filter_rows(coeffs_b))
    if xa.shape[0] == 0 or xb.shape[0] == 0:
        return float("nan")
    if basis is None:
        basis = filter_basis(np.vstack([xa, xb]), scale=False)
    ya, yb = basis.project(xa), basis.project(xb)
    lo, hi = _axis_ranges(ya, yb, value_range)
    widths = (hi - lo) / bins
    value = _shift_from_counts(_axis_counts(ya, lo, hi, bins), _axis_counts(yb, lo, hi, bins),
                               widths, basis.explained_variance_ratio)
    return float(value)


def _seed_halves(models: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int], list[int]] | None:
    """Split models into two halves by seed: the lower floor(k/2) of the k distinct seeds vs the
    rest. None with fewer than two distinct (known) seeds."""
    known = seeds >= 0
    distinct = sorted(set(seeds[known].tolist()))
    if len(distinct) < 2:
        return None
    first = distinct[: len(distinct) // 2]
    second = distinct[len(distinct) // 2:]
    in_first = np.isin(seeds, first) & known
    in_second = np.isin(seeds, second) & known
    return models[in_first], models[in_second], first, second


def _label_matrix(n_models: int, n_a: int, n_permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """Boolean (P, n_models) assignments of n_a models to group a: all C(n, n_a) when that is at
    most ``n_permutations`` (exact test), else ``n_permutations`` random ones."""
    total = math.comb(n_models, n_a)
    if total <= n_permutations:
        labels = np.zeros((total, n_models), dtype=bool)
        for row, chosen in enumerate(combinations(range(n_models), n_a)):
            labels[row, list(chosen)] = True
        return labels, True
    rng = np.random.default_rng(seed)
    base = np.zeros(n_models, dtype=bool)
    base[:n_a] = True
    return np.stack([rng.permutation(base) for _ in range(n_permutations)]), False


def _scopes(a: _FilterArrays, n_depth_bins: int) -> list[dict]:
    scopes = [
        {"scope": "overall", "bin": pd.NA, "depth_lo": 0.0, "depth_hi": 1.0, "rows": np.ones(a.model.size, bool)},
        {"scope": "first_layer", "bin": pd.NA, "depth_lo": 0.0, "depth_hi": 0.0, "rows": a.depth_index == 0},
    ]
    if n_depth_bins > 0:
        bins = depth_bin_index(a.depth_index, a.n_conv, n_depth_bins)
        edges = depth_bin_edges(n_depth_bins)
        scopes += [{"scope": "depth_bin", "bin": j, "depth_lo": float(edges[j]), "depth_hi": float(edges[j + 1]),
                    "rows": bins == j} for j in range(n_depth_bins)]
    return scopes


def shift_table(
    ds: "xr.Dataset",
    n_bins_depth: int = 10,
    *,
    bins: int = KL_BINS,
    n_permutations: int = 0,
    seed: int = 0,
    value_range: tuple[float, float] | None = None,
    histogram_range: str = "pooled",
) -> pd.DataFrame:
    """Coefficient distribution shifts (Gavrikov & Keuper Sec. 4.2, Fig. 1) with null baselines.

    Sparse filters are left out and every filter is scaled by its own max|F|. Comparisons:

    - ``robust_vs_normal``: filters of models with eps > 0 vs eps = 0;
    - ``normal_vs_normal`` and ``robust_vs_robust``: the models of one kind split into two halves
      by seed (lower floor(k/2) of the k distinct seeds vs the rest) — the shift expected from
      training noise alone; absent with fewer than two distinct seeds.

    Each comparison has one basis, fitted on all its (non-sparse, scaled) filters of every
    layer, whose explained variance ratios weight the axes in every scope. Scopes: ``overall``
    (all layers), ``first_layer`` (depth 0, the first conv of the model; no filters when it is
    not 3x3) and ``depth_bin`` j = 0..B-1 of the remaining layers: equal-width right-closed bins
    of normalised depth, B from :func:`choose_n_depth_bins` (deciles when every model has at
    least ``n_bins_depth`` layers after the first, fewer bins otherwise, so that no bin is empty
    for any model).

    With ``n_permutations > 0`` the ``robust_vs_normal`` rows get a permutation test: the
    robust/normal labels are shuffled across *models* (group sizes kept; basis and histogram
    ranges are fixed since they use all filters of the comparison); all C(M, M_robust)
    assignments are used when there are at most ``n_permutations`` of them (exact test, p =
    share of assignments with a shift >= the observed one, the observed included), else
    ``n_permutations`` random ones drawn with ``seed`` (p = (1 + #>=) / (1 + n)).

    Histogram range (recorded in the ``histogram_range`` column): ``"pooled"`` (default) bins
    each axis over the pooled (min, max) of the two compared samples on that axis;
    ``"global"`` is the authors' code: one (min, max) over all projected coefficients (all nine
    axes) of every model and layer in ``ds``, sparse filters included (scaled by their own
    max|F| like the others), projected on the comparison's basis; the same range for every
    scope of the comparison. The default differs because a global range spends most of the 70
    bins on the tails of the widest axis and of filters the comparison leaves out, so narrow
    axes get few occupied bins and a shift depends on which other models are in ``ds``.
    ``value_range`` (a fixed range for all axes) cannot be combined with ``"global"``.

    Small samples: the histogram estimator is biased upwards when a scope holds few filters
    (with 70 bins, a bin empty on one side only adds about p ln(p / 1.2e-7) ~ 15 p nats), so
    shifts are comparable only at similar filter counts; read them against the seed-half and
    permutation nulls, which carry the same bias. Compare models of one training dataset at a
    time (the paper's numbers are per dataset): subset ``ds`` first.

    Columns: ``comparison, group_a, group_b, scope, bin`` (nullable int), ``depth_lo, depth_hi,
    n_depth_bins, measure`` (``weighted_symmetric_kl_nats``), ``histogram_range, value,
    n_filters_a, n_filters_b, n_models_a, n_models_b, n_permutations, permutation_exact,
    p_value, null_mean, null_q95``
    (the last five empty/NaN where no permutation test ran).
    """
    if histogram_range not in HISTOGRAM_RANGES:
        raise ValueError(f"histogram_range must be one of {HISTOGRAM_RANGES}, got {histogram_range!r}")
    if histogram_range == "global" and value_range is not None:
        raise ValueError("value_range and histogram_range='global' both fix the histogram range; give one")
    every = _FilterArrays.from_dataset(ds)
    a = every.subset(~every.sparse)
    if a.model.size == 0:
        return pd.DataFrame(columns=SHIFT_COLUMNS)
    if histogram_range == "global":
        # every filter, sparse ones included, for the range; x_rows[i]: row of a's filter i in x
        x = scale_filters(every.coefficients)
        x_rows = np.flatnonzero(~every.sparse)
    else:
        x = scale_filters(a.coefficients)
        x_rows = np.arange(a.model.size)
    del every
    layers = pd.DataFrame({"model": a.model, "depth_index": a.depth_index, "n_conv": a.n_conv})
    n_depth = choose_n_depth_bins(layers, n_bins_depth)
    scopes = _scopes(a, n_depth)

    models, first_row = np.unique(a.model, return_index=True)
    model_robust = a.robust[first_row]
    model_seed = a.seed[first_row]
    model_code = np.searchsorted(models, a.model)

    comparisons = []
    if model_robust.any() and (~model_robust).any():
        comparisons.append(("robust_vs_normal", "robust", "normal", models[model_robust], models[~model_robust], True))
    for kind, is_kind in (("normal", ~model_robust), ("robust", model_robust)):
        halves = _seed_halves(models[is_kind], model_seed[is_kind])
        if halves is not None:
            ma, mb, sa, sb = halves
            comparisons.append((f"{kind}_vs_{kind}", f"{kind} seeds {','.join(map(str, sa))}",
                                f"{kind} seeds {','.join(map(str, sb))}", ma, mb, False))

    rows = []
    for name, group_a, group_b, models_a, models_b, permute in comparisons:
        in_a = np.isin(models, models_a)
        in_b = np.isin(models, models_b)
        comp_models = np.flatnonzero(in_a | in_b)
        in_comp = np.isin(model_code, comp_models)
        basis = filter_basis(x[x_rows[in_comp]], scale=False)
        comparison_range = value_range
        if histogram_range == "global":
            y_every = basis.project(x)  # the scopes' coefficients are rows of it: the range's ends are among them
            comparison_range = global_coefficient_range(y_every)
        labels, exact = (None, False)
        if permute and n_permutations > 0:
            labels, exact = _label_matrix(comp_models.size, int(in_a[comp_models].sum()), n_permutations, seed)
        for scope in scopes:
            sel = in_comp & scope["rows"]
            y = y_every[x_rows[sel]] if histogram_range == "global" else basis.project(x[x_rows[sel]])
            codes = model_code[sel]
            is_a = in_a[codes]
            row = {
                "comparison": name, "group_a": group_a, "group_b": group_b,
                "scope": scope["scope"], "bin": scope["bin"], "depth_lo": scope["depth_lo"],
                "depth_hi": scope["depth_hi"], "n_depth_bins": n_depth, "measure": SHIFT_MEASURE,
                "histogram_range": histogram_range,
                "n_filters_a": int(is_a.sum()), "n_filters_b": int((~is_a).sum()),
                "n_models_a": int(np.unique(codes[is_a]).size), "n_models_b": int(np.unique(codes[~is_a]).size),
                "n_permutations": 0, "permutation_exact": pd.NA, "p_value": np.nan,
                "null_mean": np.nan, "null_q95": np.nan,
            }
            if row["n_filters_a"] == 0 or row["n_filters_b"] == 0:
                rows.append({**row, "value": np.nan})
                continue
            lo, hi = _axis_ranges(y[is_a], y[~is_a], comparison_range)
            widths = (hi - lo) / bins
            per_model = np.stack([_axis_counts(y[codes == m], lo, hi, bins) for m in comp_models])
            observed = _shift_from_counts(per_model[in_a[comp_models]].sum(0),
                                          per_model[~in_a[comp_models]].sum(0),
                                          widths, basis.explained_variance_ratio)
            row["value"] = float(observed)
            if labels is not None:
                flat = per_model.reshape(per_model.shape[0], -1).astype(np.float64)
                counts_a = (labels.astype(np.float64) @ flat).reshape(-1, *per_model.shape[1:])
                counts_b = per_model.sum(0)[None] - counts_a
                with np.errstate(invalid="ignore", divide="ignore"):
                    null = _shift_from_counts(counts_a, counts_b, widths, basis.explained_variance_ratio)
                null = null[np.isfinite(null)]
                tol = 1e-12 * max(1.0, abs(observed))
                n_ge = int((null >= observed - tol).sum())
                row.update({
                    "n_permutations": int(null.size),
                    "permutation_exact": exact,
                    "p_value": (n_ge / null.size if exact else (1 + n_ge) / (1 + null.size)) if null.size else np.nan,
                    "null_mean": float(null.mean()) if null.size else np.nan,
                    "null_q95": float(np.quantile(null, 0.95)) if null.size else np.nan,
                })
            rows.append(row)
    df = pd.DataFrame(rows, columns=SHIFT_COLUMNS)
    df["bin"] = df["bin"].astype("Int64")
    df["permutation_exact"] = df["permutation_exact"].astype("boolean")
    return df
