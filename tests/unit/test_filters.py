"""Tests of robustlens.filters and robustlens.plots.filters (Gavrikov & Keuper 2022).

Every test checks numbers against a known answer or an independent computation.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
import torchvision
import xarray as xr

from robustlens import filters as F
from robustlens.filters import (
    ConvLayerFilters,
    ModelFilters,
    choose_n_depth_bins,
    coefficient_shift,
    depth_bin_index,
    discrete_distribution,
    extract_conv_filters,
    filter_basis,
    filters_dataset,
    n_zero_banks,
    orthogonality,
    quality_table,
    shift_table,
    sparsity,
    symmetric_kl,
    variance_entropy,
)

LOG10_9 = math.log10(9)


# ---------------------------------------------------------------------------------------------
# helpers


def make_record(model_id, eps, seed, weights, n_conv=None, depths=None, skipped=()):
    """A ModelFilters from numpy weights; by default all layers are 3x3 at depths 0..L-1."""
    depths = list(range(len(weights))) if depths is None else list(depths)
    n_conv = len(weights) if n_conv is None else n_conv
    layers = tuple(
        ConvLayerFilters(name=f"conv{d}", depth_index=d, normalised_depth=F.normalised_depth(d, n_conv),
                         weight=np.asarray(w, np.float32))
        for d, w in zip(depths, weights)
    )
    return ModelFilters(model_id=model_id, eps=eps, layers=layers, n_conv=n_conv, skipped=tuple(skipped), seed=seed)


def independent_variance_entropy(weight):
    """Sparse filters dropped, scaled by own max, eigenvalues of the covariance, scipy entropy."""
    rows = weight.reshape(-1, 9).astype(np.float64)
    layer_max = np.abs(rows).max()
    rows = rows[np.abs(rows).max(axis=1) > layer_max / 100]
    rows = rows / np.abs(rows).max(axis=1, keepdims=True)
    eig = np.clip(np.linalg.eigvalsh(np.cov(rows.T)), 0, None)
    return scipy.stats.entropy(eig / eig.sum(), base=10)


def independent_orthogonality(weight, keep_zero_banks=False):
    """Eq. 9 by a plain loop over bank pairs: 1 - sum_{i,j} |<w_i, w_j> / (|w_i| |w_j|) - [i = j]|
    / (c (c - 1)), zero banks left out (or, kept, as zero rows whose diagonal term is 1)."""
    banks = [b.ravel().astype(np.float64) for b in weight]
    if not keep_zero_banks:
        banks = [b for b in banks if np.any(b)]
    c, total = len(banks), 0.0
    for i in range(c):
        for j in range(c):
            ni, nj = np.linalg.norm(banks[i]), np.linalg.norm(banks[j])
            cos = banks[i] @ banks[j] / (ni * nj) if ni > 0 and nj > 0 else 0.0
            total += abs(cos - (i == j))
    return 1 - total / (c * (c - 1))


# ---------------------------------------------------------------------------------------------
# quality metrics


def test_sparsity_all_zero_filter_is_sparse_and_threshold_is_inclusive():
    w = np.zeros((2, 2, 3, 3))
    # [0, 0]: all zero -> sparse; [0, 1]: max exactly max|W|/100 -> sparse (<=)
    w[0, 1, 1, 1] = 0.01
    w[1, 0, 0, 0] = -0.0101  # just above the threshold -> not sparse
    w[1, 1, 2, 2] = 1.0  # the layer maximum
    np.testing.assert_array_equal(F.sparse_filter_mask(w), [[True, True], [False, False]])
    assert sparsity(w) == 0.5
    assert isinstance(sparsity(w), float)
    assert sparsity(np.zeros((3, 4, 3, 3))) == 1.0  # an all-zero layer: every filter sparse
    assert sparsity(torch.tensor(w)) == 0.5


def test_orthogonality_orthonormal_banks_give_one():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(2 * 9, 8)))  # 8 orthonormal columns in R^18
    banks = q.T * rng.uniform(0.5, 3.0, size=(8, 1))  # any positive scale per bank
    assert orthogonality(banks.reshape(8, 2, 3, 3)) == pytest.approx(1.0, abs=1e-12)


def test_orthogonality_identical_and_parallel_banks_give_zero():
    rng = np.random.default_rng(1)
    v = rng.normal(size=27)
    assert orthogonality(np.tile(v, (5, 1)).reshape(5, 3, 3, 3)) == pytest.approx(0.0, abs=1e-12)
    scales = np.array([1.0, -2.0, 0.3, 5.0])[:, None]  # parallel and anti-parallel
    assert orthogonality((scales * v).reshape(4, 3, 3, 3)) == pytest.approx(0.0, abs=1e-12)


def test_orthogonality_hand_case_and_zero_banks_left_out_and_counted():
    a = np.zeros(9)
    a[0] = 1.0
    b = np.zeros(9)
    b[0], b[1] = 0.5, math.sqrt(3) / 2  # cos(a, b) = 0.5
    w = np.stack([a, b]).reshape(2, 1, 3, 3)
    # 1 - (|0.5| + |0.5|) / (2 * 1)
    assert orthogonality(w) == pytest.approx(0.5)
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(18, 6)))
    with_zeros = np.vstack([q.T, np.zeros((3, 18))]).reshape(9, 2, 3, 3)
    assert n_zero_banks(with_zeros) == 3
    assert orthogonality(with_zeros) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(orthogonality(np.zeros((4, 2, 3, 3))))


def test_orthogonality_zero_banks_keep_is_the_authors_formula_and_drop_leaves_the_bank_out():
    rng = np.random.default_rng(31)
    banks = rng.normal(size=(4, 18))
    banks[2] = 0.0  # one all-zero filter bank
    w = banks.reshape(4, 2, 3, 3)

    def eq9(rows):  # Eq. 9 on unit-normalised rows, a zero row left as zeros (the authors' ortho_cond)
        n = rows.shape[0]
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        unit = rows / np.where(norms == 0, 1.0, norms)
        return 1.0 - np.abs(unit @ unit.T - np.eye(n)).sum() / (n * (n - 1))

    live = np.delete(banks, 2, axis=0)
    unit = live / np.linalg.norm(live, axis=1, keepdims=True)
    off = np.abs(unit @ unit.T - np.eye(3)).sum()  # off-diagonal |cos| of the 3 live banks
    keep, drop = orthogonality(w, zero_banks="keep"), orthogonality(w, zero_banks="drop")
    assert keep == pytest.approx(eq9(banks), abs=1e-12)
    # the zero bank adds no off-diagonal term but |0 - 1| = 1 on the diagonal; c = c_out = 4
    assert keep == pytest.approx(1.0 - (off + 1.0) / (4 * 3), abs=1e-12)
    assert drop == pytest.approx(eq9(live), abs=1e-12) and drop == pytest.approx(1.0 - off / (3 * 2), abs=1e-12)
    assert orthogonality(w) == drop  # the default leaves it out
    assert abs(keep - drop) > 0.005  # 0.842 vs 0.851 here
    # without zero banks the two agree; an all-zero layer: NaN when dropped, the formula when kept
    assert orthogonality(live.reshape(3, 2, 3, 3), "keep") == pytest.approx(drop, abs=1e-12)
    assert math.isnan(orthogonality(np.zeros((4, 2, 3, 3)), "drop"))
    assert orthogonality(np.zeros((4, 2, 3, 3)), "keep") == pytest.approx(1.0 - 4 / 12)
    with pytest.raises(ValueError, match="zero_banks"):
        orthogonality(w, zero_banks="ignore")


def test_variance_entropy_isotropic_gaussian_is_close_to_log10_9():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(64, 64, 3, 3))
    h = variance_entropy(w)
    assert abs(h - LOG10_9) < 0.01
    assert h <= LOG10_9 + 1e-12
    assert h == pytest.approx(independent_variance_entropy(w), abs=1e-10)


def test_variance_entropy_ignores_sparse_filters_and_scales_each_filter():
    rng = np.random.default_rng(4)
    g = rng.normal(size=9)
    # every filter is +-a * g: after scaling by its own max|f| only +-g remains -> one axis
    a = rng.uniform(0.1, 10.0, size=(40, 1)) * rng.choice([-1.0, 1.0], size=(40, 1))
    w = (a * g).reshape(8, 5, 3, 3)
    assert variance_entropy(w) == pytest.approx(0.0, abs=1e-9)
    # adding sparse (tiny) filters changes nothing; the value matches an independent computation
    mixed = rng.normal(size=(16, 8, 3, 3))
    mixed[:4] *= 1e-5
    assert F.sparse_filter_mask(mixed)[:4].all()
    assert variance_entropy(mixed) == pytest.approx(independent_variance_entropy(mixed), abs=1e-10)
    assert variance_entropy(mixed) == pytest.approx(variance_entropy(mixed[4:]), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# KL and coefficient shift


def test_symmetric_kl_known_value_zero_and_symmetry():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    expected = scipy.stats.entropy(p, q) + scipy.stats.entropy(q, p)  # nats
    hand = (0.5 - 0.9) * (math.log(0.5) - math.log(0.9)) + (0.5 - 0.1) * (math.log(0.5) - math.log(0.1))
    assert symmetric_kl(p, q) == pytest.approx(expected, rel=1e-12)
    assert symmetric_kl(p, q) == pytest.approx(hand, rel=1e-12)
    assert symmetric_kl(q, p) == symmetric_kl(p, q)
    assert symmetric_kl(p, p) == 0.0


def test_discrete_distribution_empty_bins_get_float32_eps_on_the_density_scale():
    eps = float(np.finfo(np.float32).eps)
    values = [0.1, 0.2, 0.9]
    np.testing.assert_allclose(discrete_distribution(values, (0.0, 1.0), bins=2), [2 / 3, 1 / 3])
    # counts [2, 0, 0, 1], width 0.25: densities [8/3, eps, eps, 4/3], then renormalised
    dens = np.array([8 / 3, eps, eps, 4 / 3])
    np.testing.assert_allclose(discrete_distribution(values, (0.0, 1.0), bins=4), dens / dens.sum(), rtol=1e-14)


def test_coefficient_shift_zero_for_identical_symmetric_and_larger_for_different_distributions():
    rng = np.random.default_rng(5)
    same_1 = rng.normal(size=(3000, 9))
    same_2 = rng.normal(size=(3000, 9))
    structured = rng.normal(size=(3000, 9)) * 0.2
    structured[:, 4] += 3.0  # a centre-heavy filter population
    basis = filter_basis(np.vstack([same_1, same_2, structured]))
    assert coefficient_shift(same_1, same_1, basis) == 0.0
    ab = coefficient_shift(same_1, structured, basis)
    assert ab == coefficient_shift(structured, same_1, basis)  # exactly symmetric for a fixed basis
    assert coefficient_shift(same_1, same_2, basis) < 0.1 * ab
    assert ab > 0.5
    # without a basis: one fitted on both samples pooled
    pooled = filter_basis(np.vstack([same_1, structured]))
    assert coefficient_shift(same_1, structured) == pytest.approx(coefficient_shift(same_1, structured, pooled), rel=1e-9)


def test_coefficient_shift_matches_hand_computation_from_its_definition():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(500, 9)), rng.normal(size=(400, 9)) + 0.3
    basis = filter_basis(np.vstack([a, b]))
    # by hand: rows over their own max |tap| (Eq. 3), centred and projected on the basis vectors,
    # histogram densities with empty bins at float32 eps, renormalised (the authors' code)
    ya = (a / np.abs(a).max(1, keepdims=True) - basis.mean) @ basis.components.T
    yb = (b / np.abs(b).max(1, keepdims=True) - basis.mean) @ basis.components.T

    def distribution(values, value_range):
        density, _ = np.histogram(values, bins=70, range=value_range, density=True)
        density[density == 0] = np.finfo(np.float32).eps
        return density / density.sum()

    total = 0.0
    for i in range(9):
        rng_i = (min(ya[:, i].min(), yb[:, i].min()), max(ya[:, i].max(), yb[:, i].max()))
        p, q = distribution(ya[:, i], rng_i), distribution(yb[:, i], rng_i)
        total += basis.explained_variance_ratio[i] * (scipy.stats.entropy(p, q) + scipy.stats.entropy(q, p))
    assert coefficient_shift(a, b, basis) == pytest.approx(total, rel=1e-10)


def test_filter_basis_recovers_a_two_dimensional_filter_structure():
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.normal(size=(9, 2)))
    v, u = q[:, 0], q[:, 1]
    raw = rng.normal(size=(2000, 1)) * 3 * v + rng.normal(size=(2000, 1)) * u
    scaled = raw / np.abs(raw).max(axis=1, keepdims=True)  # already scaled: scaling is idempotent
    basis = filter_basis(scaled)
    # independent PCA by SVD of the centred data
    s = np.linalg.svd(scaled - scaled.mean(0), compute_uv=False)
    np.testing.assert_allclose(basis.explained_variance_ratio, s**2 / (s**2).sum(), atol=1e-12)
    assert basis.explained_variance_ratio[2:].sum() < 1e-12
    np.testing.assert_allclose(basis.components @ basis.components.T, np.eye(9), atol=1e-10)
    np.testing.assert_allclose(np.linalg.svd(basis.components[:2] @ q, compute_uv=False), [1, 1], atol=1e-8)


# ---------------------------------------------------------------------------------------------
# extraction


def test_extraction_conv3x3_conv1x1_conv3x3():
    from torch import nn

    model = nn.Sequential(OrderedDict(
        a=nn.Conv2d(3, 4, 3, padding=1), r=nn.ReLU(), b=nn.Conv2d(4, 5, 1), c=nn.Conv2d(5, 6, 3, padding=1)))
    rec = extract_conv_filters(model, "m", eps=0.5, seed=2, input_shape=(1, 3, 8, 8))
    assert rec.order == "forward"
    assert rec.n_conv == 3 and rec.skipped == ("b",) and rec.n_skipped == 1
    assert [(l.name, l.depth_index, l.normalised_depth) for l in rec.layers] == [("a", 0, 0.0), ("c", 2, 1.0)]
    np.testing.assert_array_equal(rec.layers[1].weight, model.c.weight.detach().numpy())
    assert rec.n_filters == 4 * 3 + 6 * 5


def _reordered_model():
    from torch import nn

    class ReorderedNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.head_conv = nn.Conv2d(8, 4, 3, padding=1)  # registered first, called last
            self.unused = nn.Conv2d(4, 4, 3)  # never called
            self.down = nn.Conv2d(8, 8, 1)  # 1x1: skipped, still counts for depth
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise: kept
            self.stem = nn.Conv2d(3, 8, 3, padding=1)  # registered last, called first
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            return self.head_conv(self.dw(self.down(self.bn(self.stem(x)))))

    return ReorderedNet()


def test_extraction_uses_forward_order_not_registration_order():
    model = _reordered_model()
    model.train()
    running = model.bn.running_mean.clone()
    with pytest.warns(UserWarning, match="never called"):
        rec = extract_conv_filters(model, "r", eps=0.0, input_shape=(1, 3, 8, 8))
    # forward: stem 0, down 1 (1x1), dw 2, head_conv 3, then the never-called conv 4
    assert rec.order == "forward" and rec.n_conv == 5
    assert [(l.name, l.depth_index) for l in rec.layers] == [("stem", 0), ("dw", 2), ("head_conv", 3), ("unused", 4)]
    assert [l.normalised_depth for l in rec.layers] == [0.0, 0.5, 0.75, 1.0]
    assert rec.skipped == ("down",) and rec.unexecuted == ("unused",)
    dw = rec.layers[1]
    assert dw.groups == 8 and dw.weight.shape == (8, 1, 3, 3)
    assert model.training and model.bn.training  # training flags restored
    assert np.array_equal(model.bn.running_mean.numpy(), running.numpy())  # forward ran in eval mode
    # without an input: registration order
    reg = extract_conv_filters(model, "r", eps=0.0)
    assert reg.order == "registration"
    assert [(l.name, l.depth_index) for l in reg.layers] == [("head_conv", 0), ("unused", 1), ("dw", 3), ("stem", 4)]
    ds = filters_dataset([rec])
    assert ds.attrs["grouped_layers"] == {"r": ["dw"]} and ds.attrs["skipped_non3x3"] == {"r": 1}
    assert int((np.asarray(ds["layer"].values).astype(object) == "dw").sum()) == 8


def test_extraction_torchvision_resnet18_layout():
    model = torchvision.models.resnet18(weights=None)
    rec = extract_conv_filters(model, "rn18", eps=0.0, input_shape=(1, 3, 32, 32))
    # conv1 (7x7) + 16 3x3 + 3 downsample 1x1 = 20 conv layers
    assert rec.n_conv == 20 and len(rec.layers) == 16
    assert rec.skipped == ("conv1", "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0")
    depth = {l.name: l.depth_index for l in rec.layers}
    assert depth["layer1.0.conv1"] == 1 and depth["layer2.0.conv2"] == 6 and depth["layer2.1.conv1"] == 8
    assert depth["layer4.1.conv2"] == 19 and rec.layers[-1].normalised_depth == 1.0
    # every model layer after the first has >= 10 3x3 layers in the remaining depth: deciles
    layers = pd.DataFrame({"model": "rn18", "depth_index": list(depth.values()), "n_conv": 20})
    assert choose_n_depth_bins(layers, 10) == 10


# ---------------------------------------------------------------------------------------------
# dataset, tables


def _small_records():
    rng = np.random.default_rng(8)
    w0 = rng.normal(size=(4, 3, 3, 3))
    w0[0, 0] = 0.0  # a sparse filter
    w1 = rng.normal(size=(5, 4, 3, 3))
    w1[2] = 0.0  # an all-zero bank
    w2 = rng.normal(size=(6, 5, 3, 3))
    a = make_record("normal_s0", 0.0, 0, [w0, w1, w2], n_conv=4, depths=[0, 2, 3], skipped=["proj"])
    b = make_record("robust_s0", 0.5, None, [rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(5, 4, 3, 3))])
    return [a, b], (w0, w1, w2)


def test_filters_dataset_layout_and_zarr_roundtrip(tmp_path):
    records, (w0, w1, w2) = _small_records()
    ds = filters_dataset(records)
    n = 12 + 20 + 30 + 12 + 20
    assert ds["coefficients"].shape == (n, 9) and ds["coefficients"].dtype == np.float32
    assert bool(ds["sparse"].values[0]) and int(ds["sparse"].values.sum()) == 1 + 4  # + the zero bank's 4
    np.testing.assert_array_equal(ds["coefficients"].values[:12].reshape(4, 3, 3, 3), w0.astype(np.float32))
    assert list(ds["out_channel"].values[12:16]) == [0, 0, 0, 0] and list(ds["in_channel"].values[12:16]) == [0, 1, 2, 3]
    assert ds.attrs["skipped_non3x3"] == {"normal_s0": 1, "robust_s0": 0}
    np.testing.assert_allclose(np.unique(ds["normalised_depth"].values[:62]), [0.0, 2 / 3, 1.0])
    assert set(np.unique(ds["seed"].values)) == {-1, 0}

    path = tmp_path / "filters.zarr"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds.to_zarr(path)
        back = xr.open_zarr(path).load()
    # object strings are stored as zarr's spec'd variable-length string type
    assert not [w for w in caught if "UnstableSpecification" in type(w.message).__name__]
    np.testing.assert_array_equal(back["coefficients"].values, ds["coefficients"].values)
    for name in ["model", "layer"]:
        assert list(np.asarray(back[name].values).astype(object)) == list(ds[name].values)
    for name in ["depth_index", "normalised_depth", "n_conv", "eps", "robust", "seed", "out_channel", "in_channel", "groups", "sparse"]:
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert back.attrs["skipped_non3x3"] == ds.attrs["skipped_non3x3"]
    # the tables are the same from the store as from memory
    pd.testing.assert_frame_equal(quality_table(back), quality_table(ds))


def test_quality_table_matches_direct_metrics():
    records, (w0, w1, w2) = _small_records()
    q = quality_table(filters_dataset(records))
    assert list(q.columns) == ["model", "eps", "robust", "seed", "layer", "depth_index", "normalised_depth", "n_conv",
                               "n_filters", "n_banks", "zero_banks", "metric", "value"]
    assert set(q["zero_banks"]) == {"drop"}
    assert len(q) == 5 * 4
    row = q[(q.model == "normal_s0") & (q.layer == "conv2")].set_index("metric")["value"]
    w1_32 = w1.astype(np.float32)
    assert row["sparsity"] == pytest.approx(sparsity(w1_32)) and row["sparsity"] == pytest.approx(4 / 20)
    assert row["variance_entropy"] == pytest.approx(independent_variance_entropy(w1_32), abs=1e-9)
    assert row["orthogonality"] == pytest.approx(independent_orthogonality(w1_32), abs=1e-9)
    assert row["n_zero_banks"] == 1
    sizes = q[(q.model == "normal_s0") & (q.layer == "conv2")].iloc[0]
    assert (sizes["n_filters"], sizes["n_banks"]) == (20, 5)
    first = q[(q.model == "normal_s0") & (q.metric == "sparsity")].iloc[0]
    assert first["layer"] == "conv0" and first["value"] == pytest.approx(1 / 12)
    assert not q[q.model == "robust_s0"]["robust"].eq(False).any()
    # zero_banks="keep" reaches orthogonality (conv2 has an all-zero bank) and is recorded
    kept = quality_table(filters_dataset(records), zero_banks="keep")
    assert set(kept["zero_banks"]) == {"keep"}
    ortho = kept[(kept.model == "normal_s0") & (kept.layer == "conv2") & (kept.metric == "orthogonality")]["value"].item()
    assert ortho == pytest.approx(independent_orthogonality(w1_32, keep_zero_banks=True), abs=1e-9)
    assert ortho != pytest.approx(row["orthogonality"], abs=1e-3)
    other = (kept.metric != "orthogonality") | (kept.layer != "conv2") | (kept.model != "normal_s0")
    np.testing.assert_array_equal(kept[other]["value"].to_numpy(), q[other]["value"].to_numpy())


def test_depth_bins_hand_checked_case_has_no_empty_bin():
    # n_conv = 7: 3x3 layers at depths 0, 1, 2, 3, 6 (4 and 5 are 1x1): normalised 1/6, 1/3, 1/2, 1
    layers = pd.DataFrame({"model": "m", "depth_index": [0, 1, 2, 3, 6], "n_conv": 7})
    # 4 bins would leave (0.5, 0.75] empty; 3 bins: (0, 1/3] = {1/6, 1/3}, (1/3, 2/3] = {1/2}, (2/3, 1] = {1}
    np.testing.assert_array_equal(depth_bin_index([1, 2, 3, 6], 7, 4), [0, 1, 1, 3])
    assert choose_n_depth_bins(layers, 10) == 3
    np.testing.assert_array_equal(depth_bin_index([0, 1, 2, 3, 6], 7, 3), [-1, 0, 0, 1, 2])
    # a layer exactly on an edge stays in the lower bin (right-closed): 3/10 -> (0.2, 0.3]
    assert depth_bin_index([3], [11], 10)[0] == 2
    # deciles when every model has >= 10 layers after the first; fewest layers decides otherwise
    deep = pd.DataFrame({"model": "d", "depth_index": range(12), "n_conv": 12})
    assert choose_n_depth_bins(deep, 10) == 10
    shallow = pd.DataFrame({"model": "s", "depth_index": range(5), "n_conv": 5})
    assert choose_n_depth_bins(pd.concat([deep, shallow]), 10) == 4
    assert choose_n_depth_bins(pd.DataFrame({"model": ["x"], "depth_index": [0], "n_conv": [1]}), 10) == 0


def test_quality_by_depth_weights_layers_like_the_authors():
    # one model, n_conv 5, 3x3 layers at depths 0..4; 2 bins: (0, 0.5] = depths 1, 2; (0.5, 1] = 3, 4
    rows = []
    layer_values = {  # depth: (n_filters, n_banks, sparsity, entropy, orthogonality, zero banks)
        0: (6, 2, 0.5, 0.9, 0.3, 0),
        1: (10, 2, 0.1, 0.8, 0.5, 1),
        2: (30, 6, 0.4, float("nan"), 0.8, 2),
        3: (8, 4, 0.0, 0.7, 0.9, 0),
        4: (8, 4, 0.2, 0.5, 0.7, 0),
    }
    for d, (nf, nb, sp, ent, orth, zb) in layer_values.items():
        for metric, value in (("sparsity", sp), ("variance_entropy", ent), ("orthogonality", orth), ("n_zero_banks", zb)):
            rows.append({"model": "a", "eps": 0.0, "robust": False, "seed": 0, "layer": f"l{d}", "depth_index": d,
                         "normalised_depth": d / 4, "n_conv": 5, "n_filters": nf, "n_banks": nb, "metric": metric, "value": value})
    out = F.quality_by_depth(pd.DataFrame(rows), n_bins=2).set_index(["group", "metric"])["value"]
    assert out[(0, "sparsity")] == 0.5
    assert out[(1, "sparsity")] == pytest.approx((10 * 0.1 + 30 * 0.4) / 40)
    assert out[(1, "orthogonality")] == pytest.approx((2 * 0.5 + 6 * 0.8) / 8)
    assert out[(1, "variance_entropy")] == pytest.approx(0.8)  # the NaN layer is left out
    assert out[(1, "n_zero_banks")] == 3
    assert out[(2, "variance_entropy")] == pytest.approx(0.6)


def _synthetic_shift_dataset(n_seeds=4):
    """normal models: centre-heavy filters; robust models: isotropic Gaussian filters."""
    rng = np.random.default_rng(9)
    records = []
    for seed in range(n_seeds):
        for eps, kind in ((0.0, "normal"), (1.0, "robust")):
            weights = []
            for _ in range(5):
                w = rng.normal(size=(16, 16, 9))
                if kind == "normal":
                    w = 0.3 * w
                    w[..., 4] += 2.0
                weights.append(w.reshape(16, 16, 3, 3))
            records.append(make_record(f"{kind}_s{seed}", eps, seed, weights))
    return filters_dataset(records)


def test_shift_table_robust_vs_normal_exceeds_null_baselines_with_exact_permutation_p():
    ds = _synthetic_shift_dataset()
    table = shift_table(ds, n_bins_depth=10, n_permutations=100, seed=0)
    assert list(table.columns) == F.SHIFT_COLUMNS
    # 5 layers: 4 after the first -> 4 depth bins; scopes: overall, first layer, 4 bins
    assert set(table["n_depth_bins"]) == {4}
    assert set(table["comparison"]) == {"robust_vs_normal", "normal_vs_normal", "robust_vs_robust"}
    assert len(table) == 3 * 6
    assert (table["n_filters_a"] > 0).all() and (table["n_filters_b"] > 0).all()
    table["bin"] = table["bin"].fillna(-1)
    rvn = table[table.comparison == "robust_vs_normal"].set_index(["scope", "bin"])
    nulls = table[table.comparison != "robust_vs_normal"]
    # in every scope the robust-vs-normal shift exceeds both seed-half nulls by far
    worst_null = nulls.groupby(["scope", "bin"])["value"].max()
    assert (rvn["value"] > 2 * worst_null.reindex(rvn.index)).all()
    assert rvn.loc[("overall", -1), "value"] > 10 * worst_null.loc[("overall", -1)]
    # 8 models, 4 robust: all C(8, 4) = 70 labelings; the observed one and its mirror image are the
    # two largest shifts, so the exact p-value is 2/70
    assert (rvn["n_permutations"] == 70).all() and rvn["permutation_exact"].all()
    np.testing.assert_allclose(rvn["p_value"], 2 / 70)
    seeds = nulls.set_index("comparison")
    assert seeds.loc["normal_vs_normal", "group_a"].iloc[0] == "normal seeds 0,1"
    # the overall shift equals coefficient_shift on the same filters with the comparison's basis
    keep = ~ds["sparse"].values
    robust = ds["robust"].values
    x = ds["coefficients"].values
    basis = filter_basis(x[keep])
    expected = coefficient_shift(x[keep & robust], x[keep & ~robust], basis)
    assert rvn.loc[("overall", -1), "value"] == pytest.approx(expected, rel=1e-9)
    # first-layer scope holds exactly the depth-0 filters: 4 models x 256 filters per side
    first = rvn.xs("first_layer", level="scope").iloc[0]
    assert first["n_filters_a"] == 4 * 256 and first["n_filters_b"] == 4 * 256


def _global_range_case():
    """A normal and a robust model of one layer each; the robust one has a sparse filter (a
    checkerboard scaled down 10^4: scaled by its own max it is the +-1 checkerboard)."""
    rng = np.random.default_rng(2)
    wn = 0.3 * rng.normal(size=(6, 4, 9))
    wn[..., 4] += 2.0
    wr = rng.normal(size=(6, 4, 9))
    wr[1, 2] = 1e-4 * np.array([1, -1, 1, -1, 1, -1, 1, -1, 1.0])
    return wn.reshape(6, 4, 3, 3), wr.reshape(6, 4, 3, 3)


def authors_global_range_shift(weights, robust, bins=70, drop_upper_edge=False):
    """The authors' pca notebook in plain numpy/scipy: scale every filter by its own max|F|, PCA
    of the non-sparse ones (largest-magnitude entry of each component positive), project every
    filter (sparse ones included), ONE range = (min, max) of all those coefficients on all axes;
    per axis a 70-bin density histogram of each group's non-sparse filters over that range,
    empty bins = float32 eps, renormalised; symmetric KL (scipy, nats) weighted by the
    explained variance ratio. Returns (shift, range, range of the non-sparse filters only,
    whether the largest coefficient is a non-sparse filter's)."""
    rows, sparse, is_robust = [], [], []
    for w, r in zip(weights, robust):
        f = np.asarray(w, np.float32).astype(np.float64).reshape(-1, 9)
        rows.append(f)
        sparse.append(np.abs(f).max(axis=1) <= np.abs(f).max() / 100)
        is_robust.append(np.full(len(f), r))
    f, sparse, is_robust = np.vstack(rows), np.concatenate(sparse), np.concatenate(is_robust)
    den = np.abs(f).max(axis=1, keepdims=True)
    z = f / np.where(den == 0, 1.0, den)
    fit = z[~sparse]
    values, vectors = np.linalg.eigh(np.cov(fit.T))
    order = np.argsort(values)[::-1]
    values, components = values[order], vectors[:, order].T
    components *= np.sign(components[np.arange(9), np.abs(components).argmax(axis=1)])[:, None]
    ratio = values / values.sum()
    c = (z - fit.mean(axis=0)) @ components.T
    lo, hi = c.min(), c.max()

    def distribution(x):
        if drop_upper_edge:
            x = x[x < hi]
        v, _ = np.histogram(x, range=(lo, hi), bins=bins, density=True)
        v[v == 0] = np.finfo(np.float32).eps
        return v / v.sum()

    shift = 0.0
    for i in range(9):
        p = distribution(c[is_robust & ~sparse, i])
        q = distribution(c[~is_robust & ~sparse, i])
        shift += ratio[i] * (scipy.stats.entropy(p, q) + scipy.stats.entropy(q, p))
    top = np.unravel_index(np.argmax(c), c.shape)[0]
    return shift, (lo, hi), (c[~sparse].min(), c[~sparse].max()), not sparse[top]


def test_shift_table_global_range_is_the_authors_one_range_over_every_projected_filter():
    wn, wr = _global_range_case()
    ds = filters_dataset([make_record("normal_s0", 0.0, 0, [wn]), make_record("robust_s0", 1.0, 0, [wr])])
    assert int(ds["sparse"].values.sum()) == 1
    expected, (lo, hi), (lo_kept, hi_kept), top_is_counted = authors_global_range_shift([wn, wr], [False, True])
    # the case is one that tells the conventions apart: the sparse filter widens the range (its
    # coefficient is the minimum), and the maximum, exactly on the upper edge, is a counted filter's
    assert lo < lo_kept - 0.5 and hi == hi_kept and top_is_counted
    dropped, *_ = authors_global_range_shift([wn, wr], [False, True], drop_upper_edge=True)
    assert abs(dropped - expected) > 1e-3 * expected

    table = shift_table(ds, n_bins_depth=10, histogram_range="global")
    overall = table[(table.comparison == "robust_vs_normal") & (table.scope == "overall")].iloc[0]
    assert overall["histogram_range"] == "global"
    assert overall["value"] == pytest.approx(expected, rel=1e-9)
    # the same one range fixed by hand gives the same value; the pooled default differs
    fixed = shift_table(ds, n_bins_depth=10, value_range=(lo, hi))
    assert fixed.loc[(fixed.comparison == "robust_vs_normal") & (fixed.scope == "overall"), "value"].item() == pytest.approx(expected, rel=1e-9)
    pooled = shift_table(ds, n_bins_depth=10)
    assert set(pooled["histogram_range"]) == {"pooled"}
    pooled_value = pooled.loc[(pooled.comparison == "robust_vs_normal") & (pooled.scope == "overall"), "value"].item()
    assert abs(pooled_value - expected) > 0.05 * expected
    assert list(table.columns) == F.SHIFT_COLUMNS
    with pytest.raises(ValueError, match="histogram_range"):
        shift_table(ds, histogram_range="local")
    with pytest.raises(ValueError, match=r"^value_range and histogram_range='global' both fix the histogram range; give one$"):
        shift_table(ds, histogram_range="global", value_range=(-1.0, 1.0))


def test_shift_table_random_permutations_and_missing_seed_halves():
    ds = _synthetic_shift_dataset(n_seeds=1)  # one seed: no seed-half nulls
    table = shift_table(ds, n_bins_depth=2, n_permutations=5, seed=3)
    assert set(table["comparison"]) == {"robust_vs_normal"}
    assert set(table["n_depth_bins"]) == {2}
    # 2 models, 1 robust: C(2, 1) = 2 <= 5 -> exact, both labelings give the same shift -> p = 1
    assert (table["p_value"] == 1.0).all()
    t2 = shift_table(_synthetic_shift_dataset(), n_bins_depth=2, n_permutations=20, seed=3)
    rvn = t2[t2.comparison == "robust_vs_normal"]
    assert (rvn["n_permutations"] == 20).all() and not rvn["permutation_exact"].any()
    assert (rvn["p_value"] >= 1 / 21).all() and (rvn["p_value"] <= 3 / 21).all()


def test_filter_bases_and_basis_table():
    ds = _synthetic_shift_dataset(n_seeds=1)
    bases = F.filter_bases(ds)
    assert set(bases) == {"all", "robust", "normal"}
    # normal filters are centre-heavy: after scaling, the first component carries most variance;
    # isotropic robust filters spread it out
    assert bases["normal"].explained_variance_ratio[0] > bases["robust"].explained_variance_ratio[0]
    assert abs(sum(bases["robust"].explained_variance_ratio) - 1) < 1e-12
    table = F.basis_table(bases)
    assert list(table.columns) == ["subset", "component", "explained_variance_ratio", "tap", "value"]
    assert len(table) == 3 * 9 * 9
    v0 = table[(table.subset == "all") & (table.component == 0)].sort_values("tap")["value"].to_numpy()
    np.testing.assert_allclose(v0, bases["all"].components[0])


def test_filters_module_and_plots_do_not_import_torch():
    code = "import sys, robustlens.filters, robustlens.plots.filters; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# figures


def test_figures_draw_the_table_values(tmp_path):
    from robustlens.plots import filters as P

    ds = _synthetic_shift_dataset()
    shift = shift_table(ds, n_bins_depth=10, n_permutations=30)
    fig = P.plot_kl_by_depth(shift, tmp_path / "kl.png")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    expected = shift[(shift.comparison == "robust_vs_normal") & (shift.scope != "overall")]["value"]
    np.testing.assert_allclose(sorted(heights), sorted(expected))
    assert ax.get_ylabel() == "weighted symmetric KL (nats)"
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "first layer"
    assert len(ax.get_lines()) == 3  # permutation null + two seed-half nulls

    fig = P.plot_filter_basis(F.basis_table(F.filter_bases(ds)), tmp_path / "basis.png")
    images = [a for a in fig.axes if a.images]
    assert len(images) == 27
    assert images[0].get_title() == "$v_0$"

    quality = quality_table(ds)
    fig = P.plot_quality_by_depth(quality, tmp_path / "quality.png")
    assert [a.get_ylabel() for a in fig.axes] == list(P.QUALITY_LABELS.values())
    # 1 first-layer group + 4 depth bins, robust and normal boxes each
    assert len(fig.axes[0].patches) == 2 * 5

    fig = P.plot_first_layer_filters(ds, tmp_path / "first.png")
    titles = [a.get_title() for a in fig.axes if a.images]
    assert titles[0].startswith("robust: robust_s0") and titles[1].startswith("normal: normal_s0")
    for name in ["kl.png", "basis.png", "quality.png", "first.png"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# edge cases and exact values of the helpers (each against a hand computation)


def test_sparse_mask_threshold_scales_with_the_layer_maximum():
    # layer max 10: the threshold is 10 / 100 = 0.1 (not 0.01 / 10)
    w = np.zeros((1, 3, 3, 3))
    w[0, 0, 0, 0] = 10.0
    w[0, 1, 1, 1] = -0.1  # exactly max|W| / 100: sparse
    w[0, 2, 2, 2] = 0.05  # below: sparse
    np.testing.assert_array_equal(F.sparse_filter_mask(w), [[False, True, True]])
    w[0, 1, 1, 1] = 0.1001  # just above: kept
    np.testing.assert_array_equal(F.sparse_filter_mask(w), [[False, False, True]])
    assert sparsity(w) == pytest.approx(1 / 3)


def test_check_weight_shapes_single_tap_layer_and_messages():
    # a 1x1 layer of one channel: one filter, it is the layer maximum, so not sparse
    assert sparsity(np.full((1, 1, 1, 1), 2.0)) == 0.0
    with pytest.raises(ValueError, match=r"conv weight has shape \(c_out, c_in, k1, k2\); got shape \(3, 3, 3\)"):
        sparsity(np.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="^empty conv weight$"):
        sparsity(np.zeros((0, 2, 3, 3)))


def test_to_numpy_accepts_bfloat16_and_grad_tensors():
    rng = np.random.default_rng(40)
    w = rng.normal(size=(6, 5, 3, 3))
    w[0, 0] *= 1e-4  # one sparse filter
    t = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    assert variance_entropy(t) == pytest.approx(independent_variance_entropy(w), abs=1e-12)
    assert orthogonality(t) == pytest.approx(independent_orthogonality(w), abs=1e-12)
    b = torch.tensor(w, dtype=torch.float32).to(torch.bfloat16)
    wb = b.float().numpy().astype(np.float64)  # the bfloat16 values, exactly
    assert sparsity(b) == pytest.approx(1 / 30)
    assert variance_entropy(b) == pytest.approx(independent_variance_entropy(wb), abs=1e-12)


def test_scale_filters_shapes_zero_filters_and_other_kernel_sizes():
    rng = np.random.default_rng(41)
    w = rng.normal(size=(3, 2, 3, 3))
    w[1, 0] = 0.0  # an all-zero filter stays zero
    rows = w.reshape(6, 9)
    expected = np.array([r / np.abs(r).max() if np.any(r) else r for r in rows])
    np.testing.assert_array_equal(F.scale_filters(w), expected)
    np.testing.assert_array_equal(F.scale_filters(w.reshape(6, 3, 3)), expected)  # (n, 3, 3)
    np.testing.assert_array_equal(F.scale_filters(rows), expected)
    assert not np.isnan(F.scale_filters(w)).any()
    # a 4-D weight of 3x5 kernels: rows of 15 taps, each over its own max
    v = rng.normal(size=(2, 2, 3, 5))
    r15 = v.reshape(4, 15)
    np.testing.assert_allclose(F.scale_filters(v), r15 / np.abs(r15).max(axis=1, keepdims=True), rtol=0, atol=0)


def test_filter_rows_accepts_the_three_documented_shapes_and_rejects_others():
    rng = np.random.default_rng(42)
    x = rng.normal(size=(40, 9))
    z = x / np.abs(x).max(axis=1, keepdims=True)
    vals = np.linalg.eigvalsh(np.cov(z.T))[::-1]
    for shaped in (x, x.reshape(40, 3, 3), x.reshape(8, 5, 3, 3)):
        basis = filter_basis(shaped)
        np.testing.assert_allclose(basis.explained_variance, vals, rtol=1e-10, atol=1e-14)
        assert basis.n_filters == 40
        np.testing.assert_allclose(basis.project(z.reshape(shaped.shape)), (z - z.mean(0)) @ basis.components.T, atol=1e-12)
    for bad in (np.zeros((5, 4)), np.zeros((3, 3, 4)), np.zeros((4, 4, 3)), np.zeros((2, 3, 4, 3)), np.zeros(9)):
        with pytest.raises(ValueError, match=r"expected filters of shape \(n, 9\), \(n, 3, 3\) or \(c_out, c_in, 3, 3\); got"):
            filter_basis(bad)


def test_explained_variance_ratio_edge_cases():
    # two filters: one axis carries all the variance
    two = np.array([[1.0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0, 0, 0, 0]])
    r = F.explained_variance_ratio(two)
    assert r[0] == pytest.approx(1.0) and np.abs(r[1:]).max() < 1e-12 and r.shape == (2,)
    # small total variance (< 1) is still normalised
    rng = np.random.default_rng(43)
    small = 1e-3 * rng.normal(size=(30, 9))
    ev = np.linalg.eigvalsh(np.cov(small.T))[::-1]
    np.testing.assert_allclose(F.explained_variance_ratio(small), ev / ev.sum(), rtol=1e-9, atol=1e-15)
    # float32 input is computed in float64
    x32 = rng.normal(size=(30, 9)).astype(np.float32)
    ev64 = np.linalg.eigvalsh(np.cov(x32.astype(np.float64).T))[::-1]
    np.testing.assert_allclose(F.explained_variance_ratio(x32), ev64 / ev64.sum(), rtol=1e-11, atol=1e-15)
    # one column: all variance on that axis
    np.testing.assert_allclose(F.explained_variance_ratio(rng.normal(size=(5, 1))), [1.0])
    # no variance: all zeros, not NaN
    flat = np.tile(rng.normal(size=9), (4, 1))
    r0 = F.explained_variance_ratio(flat)
    assert r0.shape == (4,) and np.array_equal(r0, np.zeros(4))
    with pytest.raises(ValueError, match="^need at least two filters for a PCA$"):
        F.explained_variance_ratio(np.ones((1, 9)))


def test_entropy10_ignores_zero_ratios():
    assert F.entropy10([0.5, 0.5, 0.0]) == pytest.approx(math.log10(2))
    assert F.entropy10([0.0, 1.0]) == 0.0
    assert F.entropy10([0.25] * 4) == pytest.approx(math.log10(4), rel=1e-14)
    assert F.entropy10(np.array([0.25] * 4, np.float32)) == pytest.approx(math.log10(4), rel=1e-14)  # in float64


def test_variance_entropy_few_filters_and_no_variance():
    rng = np.random.default_rng(44)
    w = np.zeros((3, 1, 3, 3))
    w[0, 0] = rng.normal(size=(3, 3))
    assert math.isnan(variance_entropy(w))  # one non-sparse filter
    w[1, 0] = rng.normal(size=(3, 3))
    # two filters: centred, they span one axis -> entropy 0
    assert variance_entropy(w) == pytest.approx(0.0, abs=1e-12)
    w[2, 0] = rng.normal(size=(3, 3))
    assert variance_entropy(w) == pytest.approx(independent_variance_entropy(w), abs=1e-12)
    # two non-sparse filters equal after scaling: no variance -> NaN
    same = np.zeros((2, 1, 3, 3))
    same[0, 0] = rng.normal(size=(3, 3))
    same[1, 0] = 4.0 * same[0, 0]  # a power of two: scaled, the two are bitwise equal
    assert math.isnan(variance_entropy(same))


def test_orthogonality_keep_normalises_small_banks():
    rng = np.random.default_rng(45)
    banks = 0.05 * rng.normal(size=(5, 18))  # norms well below 1
    banks[3] = 0.0
    w = banks.reshape(5, 2, 3, 3)
    assert orthogonality(w, "keep") == pytest.approx(independent_orthogonality(w, keep_zero_banks=True), abs=1e-12)
    assert orthogonality(w) == pytest.approx(independent_orthogonality(w), abs=1e-12)


def test_symmetric_kl_normalises_and_handles_zero_entries():
    p, q = np.array([1.0, 1.0, 0.0]), np.array([9.0, 1.0, 0.0])  # unnormalised, a common empty entry
    pn, qn = p[:2] / 2, q[:2] / 10
    hand = sum((a - b) * (math.log(a) - math.log(b)) for a, b in zip(pn, qn))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert symmetric_kl(p, q) == pytest.approx(hand, rel=1e-12)
        assert symmetric_kl([1, 3], [3, 1]) == pytest.approx(2 * (0.75 - 0.25) * math.log(3), rel=1e-12)
        # float32 histograms are normalised in float64: [1, 2] / 3 is not exact in float32
        p32, q32 = np.array([1, 2], np.float32), np.array([2, 1], np.float32)
        assert symmetric_kl(p32, q32) == pytest.approx(2 / 3 * math.log(2), rel=1e-13)
        assert symmetric_kl(p32, [2.0, 1.0]) == pytest.approx(2 / 3 * math.log(2), rel=1e-13)
        assert symmetric_kl([1.0, 2.0], q32) == pytest.approx(2 / 3 * math.log(2), rel=1e-13)
        # mass where the other has none: infinite, without a warning
        assert symmetric_kl([0.5, 0.5], [1.0, 0.0]) == math.inf


def test_discrete_distribution_uses_the_given_range_and_its_width():
    eps = float(np.finfo(np.float32).eps)
    # values only in the first quarter of (0, 1): the data's own range would spread them out
    dens = np.array([2 / (2 * 0.25), eps, eps, eps])
    np.testing.assert_allclose(discrete_distribution([0.1, 0.2], (0.0, 1.0), bins=4), dens / dens.sum(), rtol=1e-14)
    # range (1, 2): width 0.25 (not (1 + 2) / 4): the density scale sets eps's share
    dens = np.array([1 / (2 * 0.25), eps, eps, 1 / (2 * 0.25)])
    np.testing.assert_allclose(discrete_distribution([1.1, 1.9], (1.0, 2.0), bins=4), dens / dens.sum(), rtol=1e-14)
    # no value inside the range: NaN, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(discrete_distribution([5.0], (0.0, 1.0), bins=4)).all()


def test_depth_bin_index_against_exact_fractions():
    from fractions import Fraction

    for n_conv in range(2, 14):
        for n_bins in range(1, 11):
            d = np.arange(1, n_conv)
            expected = [math.ceil(Fraction(int(k), n_conv - 1) * n_bins) - 1 for k in d]
            np.testing.assert_array_equal(depth_bin_index(d, np.full(d.size, n_conv), n_bins), expected)
            assert depth_bin_index([0], [n_conv], n_bins)[0] == -1
    assert depth_bin_index([0], [1], 3)[0] == -1
    with pytest.raises(ValueError, match="^n_bins must be >= 1$"):
        depth_bin_index([1], [3], 0)


def test_depth_bin_edges_and_normalised_depth():
    np.testing.assert_array_equal(F.depth_bin_edges(4), [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(F.depth_bin_edges(1), [0.0, 1.0])
    assert F.normalised_depth(1, 2) == 1.0 and F.normalised_depth(0, 2) == 0.0
    assert F.normalised_depth(0, 1) == 0.0 and F.normalised_depth(3, 7) == 0.5


def test_choose_n_depth_bins_lowers_until_covered_and_needs_every_model():
    # n_conv 5, 3x3 at depths 0, 1, 2: normalised 1/4, 1/2 both in (0, 1/2] -> 2 bins leave one empty
    layers = pd.DataFrame({"model": "m", "depth_index": [0, 1, 2], "n_conv": 5})
    assert choose_n_depth_bins(layers, 10) == 1
    # a model with no layer after the first: 0, even if another model has some
    both = pd.concat([pd.DataFrame({"model": "a", "depth_index": [0, 1, 2], "n_conv": 3}),
                      pd.DataFrame({"model": "b", "depth_index": [0], "n_conv": 3})])
    assert choose_n_depth_bins(both, 10) == 0
    # the default is deciles: 12 layers after the first
    deep = pd.DataFrame({"model": "d", "depth_index": range(13), "n_conv": 13})
    assert choose_n_depth_bins(deep) == 10


def test_filter_basis_sparse_mask_variance_scale_and_signs():
    rng = np.random.default_rng(46)
    x = rng.normal(size=(30, 9))
    sparse = np.zeros(30, int)
    sparse[[2, 7]] = 1  # an integer 0/1 mask is a boolean mask
    basis = filter_basis(x, sparse)
    kept = x[sparse == 0]
    z = kept / np.abs(kept).max(axis=1, keepdims=True)
    vals, vecs = np.linalg.eigh(np.cov(z.T))
    vals, vecs = vals[::-1], vecs[:, ::-1].T
    assert basis.n_filters == 28
    np.testing.assert_allclose(basis.explained_variance, vals, rtol=1e-10)
    np.testing.assert_allclose(basis.explained_variance_ratio, vals / vals.sum(), rtol=1e-10)
    np.testing.assert_allclose(basis.mean, z.mean(axis=0), rtol=1e-12)
    # each component is an eigenvector with its largest-magnitude entry positive
    signs = np.sign(vecs[np.arange(9), np.abs(vecs).argmax(axis=1)])
    np.testing.assert_allclose(basis.components, vecs * signs[:, None], atol=1e-9)
    # without scaling, the raw rows
    raw = filter_basis(kept, scale=False)
    np.testing.assert_allclose(raw.explained_variance, np.linalg.eigvalsh(np.cov(kept.T))[::-1], rtol=1e-10)
    # rank one: no negative variance
    line = np.outer(rng.normal(size=12), rng.normal(size=9))
    ev = filter_basis(line, scale=False).explained_variance
    assert (ev >= 0).all() and ev[0] == pytest.approx(np.var(line @ (line[0] / np.linalg.norm(line[0])), ddof=1))
    # two filters are enough; identical filters: ratios all zero
    assert filter_basis(x[:2]).n_filters == 2
    same = filter_basis(np.tile(x[0], (2, 1)))
    assert np.array_equal(same.explained_variance_ratio, np.zeros(9))
    with pytest.raises(ValueError, match="^need at least two filters for a PCA basis; got 1$"):
        filter_basis(x[:1])


# ---------------------------------------------------------------------------------------------
# the filter dataset and its tables: every coordinate, attribute and column against hand values


def _layout_records():
    """Two models: m0 (eps 0, seed 3, n_conv 4: 3x3 at depths 1 and 3, one grouped; 1x1 'p' skipped)
    and m1 (eps 0.5, seed unknown, one 3x3 layer at depth 0, a never-called conv)."""
    rng = np.random.default_rng(50)
    wa = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    wa[1, 2] = 0.0  # a sparse (zero) filter
    wb = rng.normal(size=(4, 1, 3, 3)).astype(np.float32)
    wc = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    m0 = ModelFilters(model_id="m0", eps=0.0, n_conv=4, skipped=("p",), order="forward", seed=3, layers=(
        ConvLayerFilters("a", 1, 1 / 3, wa), ConvLayerFilters("b", 3, 1.0, wb, groups=4)))
    m1 = ModelFilters(model_id="m1", eps=0.5, n_conv=2, order="registration", unexecuted=("u",), layers=(
        ConvLayerFilters("a", 0, 0.0, wc),))
    return [m0, m1], (wa, wb, wc)


def test_filters_dataset_every_coordinate_dtype_dimension_and_attribute():
    records, (wa, wb, wc) = _layout_records()
    ds = filters_dataset(records)
    assert ds["coefficients"].dims == ("filter", "tap") and ds["coefficients"].dtype == np.float32
    np.testing.assert_array_equal(ds["coefficients"].values, np.vstack([wa.reshape(-1, 9), wb.reshape(-1, 9), wc.reshape(-1, 9)]))
    assert ds["tap"].dims == ("tap",) and ds["tap"].dtype == np.int32
    np.testing.assert_array_equal(ds["tap"].values, np.arange(9))
    expected = {  # name: (dtype, values), rows: 6 of a, 4 of b, 6 of c
        "model": (object, ["m0"] * 10 + ["m1"] * 6),
        "layer": (object, ["a"] * 6 + ["b"] * 4 + ["a"] * 6),
        "depth_index": (np.int32, [1] * 6 + [3] * 4 + [0] * 6),
        "normalised_depth": (np.float64, [1 / 3] * 6 + [1.0] * 4 + [0.0] * 6),
        "n_conv": (np.int32, [4] * 10 + [2] * 6),
        "eps": (np.float64, [0.0] * 10 + [0.5] * 6),
        "robust": (bool, [False] * 10 + [True] * 6),
        "seed": (np.int64, [3] * 10 + [-1] * 6),
        "out_channel": (np.int32, [0, 0, 0, 1, 1, 1, 0, 1, 2, 3, 0, 0, 1, 1, 2, 2]),
        "in_channel": (np.int32, [0, 1, 2, 0, 1, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1]),
        "groups": (np.int32, [1] * 6 + [4] * 4 + [1] * 6),
        "sparse": (bool, [False] * 5 + [True] + [False] * 10),
    }
    assert set(ds.coords) == set(expected) | {"tap"}
    for name, (dtype, values) in expected.items():
        assert ds[name].dims == ("filter",), name
        assert ds[name].dtype == dtype, name
        assert list(ds[name].values) == values, name
    assert ds.attrs == {
        "description": "3x3 conv filters, one row per filter (Gavrikov & Keuper 2022)",
        "tap_order": "row-major (ky, kx)",
        "sparse_criterion": "max|F| <= max|W|/100 within the layer",
        "depth": "depth_index counts all Conv2d layers in forward order; normalised_depth = depth_index/(n_conv-1)",
        "skipped_non3x3": {"m0": 1, "m1": 0},
        "skipped_layers": {"m0": ["p"], "m1": []},
        "n_conv": {"m0": 4, "m1": 2},
        "depth_order": {"m0": "forward", "m1": "registration"},
        "grouped_layers": {"m0": ["b"], "m1": []},
        "unexecuted_layers": {"m0": [], "m1": ["u"]},
    }


def test_filters_dataset_of_models_without_3x3_layers_is_empty_and_typed():
    ds = filters_dataset([ModelFilters(model_id="none", eps=1.0, layers=(), n_conv=2, skipped=("x", "y"))])
    assert ds["coefficients"].shape == (0, 9) and ds["coefficients"].dtype == np.float32
    assert ds["coefficients"].dims == ("filter", "tap")
    dtypes = {"depth_index": np.int32, "normalised_depth": np.float64, "n_conv": np.int32, "eps": np.float64,
              "robust": bool, "seed": np.int64, "out_channel": np.int32, "in_channel": np.int32,
              "groups": np.int32, "sparse": bool}
    for name, dtype in dtypes.items():
        assert ds[name].shape == (0,) and ds[name].dtype == dtype, name
    assert ds.attrs["skipped_non3x3"] == {"none": 2}
    # the tables of an empty dataset: no rows, the documented columns
    assert quality_table(ds).empty and list(quality_table(ds).columns) == F.QUALITY_COLUMNS
    assert shift_table(ds).empty and list(shift_table(ds).columns) == F.SHIFT_COLUMNS


def test_filters_dataset_rejects_bad_input_with_its_messages():
    good = make_record("a", 0.0, 0, [np.ones((2, 2, 3, 3))])
    with pytest.raises(ValueError, match="^no models given$"):
        filters_dataset([])
    with pytest.raises(ValueError, match=r"^duplicate model ids: \['a'\]$"):
        filters_dataset([good, make_record("b", 0.0, 0, [np.ones((2, 2, 3, 3))]), good])
    with pytest.raises(ValueError, match=r"^duplicate model ids: \['a', 'b'\]$"):
        filters_dataset([good, good, good, make_record("b", 0, 0, []), make_record("b", 0, 0, [])])
    bad = ModelFilters(model_id="m", eps=0.0, n_conv=1, layers=(ConvLayerFilters("c", 0, 0.0, np.ones((2, 2, 5, 5))),))
    with pytest.raises(ValueError, match=r"^m/c: not a 3x3 conv weight: shape \(2, 2, 5, 5\)$"):
        filters_dataset([bad])


def test_model_table_counts_per_model():
    records, _ = _layout_records()
    records.append(ModelFilters(model_id="k", eps=2.0, n_conv=3, seed=7, layers=(
        ConvLayerFilters("z", 2, 1.0, np.zeros((1, 2, 3, 3), np.float32)),)))
    ds = filters_dataset(records)
    t = F.model_table(ds)
    expected = pd.DataFrame({
        "model": ["k", "m0", "m1"], "eps": [2.0, 0.0, 0.5], "robust": [True, False, True], "seed": [7, 3, -1],
        "n_conv": [3, 4, 2], "n_filters": [2, 10, 6], "n_sparse": [2, 1, 0], "n_layers_3x3": [1, 2, 1],
        "n_skipped_non3x3": [0, 1, 0],
    })
    assert list(t.columns) == list(expected.columns)
    for col in expected.columns:
        assert list(t[col]) == list(expected[col]), col
    # without the attribute, no skipped layers
    del ds.attrs["skipped_non3x3"]
    assert list(F.model_table(ds)["n_skipped_non3x3"]) == [0, 0, 0]


def test_quality_table_metadata_columns_single_filter_layer_and_messages():
    rng = np.random.default_rng(51)
    w0 = rng.normal(size=(1, 1, 3, 3))  # one filter: sparsity 0, entropy and orthogonality NaN
    w1 = rng.normal(size=(3, 2, 3, 3))
    rec_b = make_record("b", 0.25, 9, [w0, w1], n_conv=5, depths=[0, 4])
    rec_a = make_record("a", 0.0, None, [w1])
    q = quality_table(filters_dataset([rec_b, rec_a]))
    assert list(q["model"]) == ["a"] * 4 + ["b"] * 8
    assert list(q["layer"]) == ["conv0"] * 8 + ["conv4"] * 4
    assert list(q["metric"]) == list(F.QUALITY_METRICS) * 3
    assert list(q["eps"]) == [0.0] * 4 + [0.25] * 8
    assert list(q["robust"]) == [False] * 4 + [True] * 8
    assert list(q["seed"]) == [-1] * 4 + [9] * 8
    assert list(q["depth_index"]) == [0] * 8 + [4] * 4
    assert list(q["normalised_depth"]) == [0.0] * 8 + [1.0] * 4
    assert list(q["n_conv"]) == [1] * 4 + [5] * 8
    assert list(q["n_filters"]) == [6] * 4 + [1] * 4 + [6] * 4 and list(q["n_banks"]) == [3] * 4 + [1] * 4 + [3] * 4
    single = q[(q.model == "b") & (q.layer == "conv0")].set_index("metric")["value"]
    assert single["sparsity"] == 0.0 and single["n_zero_banks"] == 0.0
    assert math.isnan(single["variance_entropy"]) and math.isnan(single["orthogonality"])
    w1_32 = w1.astype(np.float32)
    last = q[(q.model == "b") & (q.layer == "conv4")].set_index("metric")["value"]
    assert last["orthogonality"] == pytest.approx(independent_orthogonality(w1_32), abs=1e-12)
    assert last["variance_entropy"] == pytest.approx(independent_variance_entropy(w1_32), abs=1e-12)
    with pytest.raises(ValueError, match=r"^zero_banks must be one of \('drop', 'keep'\), got 'none'$"):
        quality_table(filters_dataset([rec_a]), zero_banks="none")


def test_layer_weight_rebuilds_one_layer_of_one_model():
    rng = np.random.default_rng(52)
    w_other = rng.normal(size=(2, 2, 3, 3))
    w_first = rng.normal(size=(1, 1, 3, 3))  # the shallowest layer holds one filter
    w_deep = rng.normal(size=(3, 2, 3, 3))
    # same layer names in both models; the other model comes first and has a layer at depth 1
    other = ModelFilters(model_id="other", eps=0.0, n_conv=3, layers=(
        ConvLayerFilters("x", 1, 0.5, w_other.astype(np.float32)), ConvLayerFilters("conv1", 2, 1.0, w_other.astype(np.float32))))
    target = make_record("target", 1.0, 0, [w_first, w_deep], depths=[1, 2], n_conv=3)
    ds = filters_dataset([other, target])
    name, w = F.layer_weight(ds, "target")
    assert name == "conv1" and w.dtype == np.float64
    np.testing.assert_array_equal(w, w_first.astype(np.float32))
    name, w = F.layer_weight(ds, "target", "conv2")
    assert name == "conv2"
    np.testing.assert_array_equal(w, w_deep.astype(np.float32))
    name, w = F.layer_weight(ds, "other")
    assert name == "x"
    np.testing.assert_array_equal(w, w_other.astype(np.float32))
    with pytest.raises(KeyError, match="model 'nope' is not in the dataset"):
        F.layer_weight(ds, "nope")
    with pytest.raises(KeyError, match="layer 'conv0' of model 'target' is not in the dataset"):
        F.layer_weight(ds, "target", "conv0")


def test_filter_bases_leave_sparse_filters_out_and_keep_two_filter_subsets():
    rng = np.random.default_rng(53)
    wn = rng.normal(size=(4, 3, 3, 3))
    wn[0, 0] *= 1e-4  # sparse in its layer; scaled by its own max it would be a full filter
    wr = np.zeros((1, 3, 3, 3))
    wr[0, :2] = rng.normal(size=(2, 3, 3))  # two non-sparse robust filters (the third is all zero)
    ds = filters_dataset([make_record("n", 0.0, 0, [wn]), make_record("r", 1.0, 0, [wr])])
    bases = F.filter_bases(ds)
    assert set(bases) == {"all", "robust", "normal"}
    rows_n = wn.astype(np.float32).astype(np.float64).reshape(-1, 9)[1:]
    rows_r = wr.astype(np.float32).astype(np.float64).reshape(-1, 9)[:2]

    def ev(rows):
        z = rows / np.abs(rows).max(axis=1, keepdims=True)
        return np.clip(np.linalg.eigvalsh(np.cov(z.T))[::-1], 0, None)

    np.testing.assert_allclose(bases["normal"].explained_variance, ev(rows_n), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(bases["robust"].explained_variance, ev(rows_r), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(bases["all"].explained_variance, ev(np.vstack([rows_n, rows_r])), rtol=1e-9, atol=1e-14)
    assert (bases["normal"].n_filters, bases["robust"].n_filters, bases["all"].n_filters) == (11, 2, 13)


def test_basis_table_rows_and_empty_table():
    rng = np.random.default_rng(54)
    basis = filter_basis(rng.normal(size=(20, 9)))
    table = F.basis_table({"s": basis})
    assert list(table.columns) == F.BASIS_COLUMNS and len(table) == 81
    assert list(table["tap"]) == list(range(9)) * 9
    assert list(table["component"]) == [i for i in range(9) for _ in range(9)]
    np.testing.assert_array_equal(table["explained_variance_ratio"], np.repeat(basis.explained_variance_ratio, 9))
    np.testing.assert_array_equal(table["value"], basis.components.ravel())
    empty = F.basis_table({})
    assert empty.empty and list(empty.columns) == F.BASIS_COLUMNS


def _quality_rows(model, eps, seed, n_conv, layers):
    """Rows of a quality table: layers = {depth: (n_filters, n_banks, {metric: value})}."""
    return [{"model": model, "eps": eps, "robust": eps > 0, "seed": seed, "layer": f"l{d}", "depth_index": d,
             "normalised_depth": d / (n_conv - 1), "n_conv": n_conv, "n_filters": nf, "n_banks": nb,
             "zero_banks": "drop", "metric": m, "value": v}
            for d, (nf, nb, values) in layers.items() for m, v in values.items()]


def test_quality_by_depth_whole_table_by_hand():
    nan = float("nan")
    rows = _quality_rows("b", 0.0, 0, 5, {  # depths 1, 2 -> bin (0, 1/2]; 3, 4 -> (1/2, 1]
        0: (1, 1, {"sparsity": 0.0, "orthogonality": nan, "n_zero_banks": 0, "custom": 5.0}),
        1: (4, 2, {"sparsity": 0.5, "orthogonality": 0.2, "n_zero_banks": 1, "custom": 1.0}),
        2: (12, 3, {"sparsity": 0.25, "orthogonality": 0.6, "n_zero_banks": 2, "custom": 3.0}),
        3: (2, 2, {"sparsity": 1.0, "orthogonality": 0.9, "n_zero_banks": 0, "custom": 2.0}),
        4: (6, 3, {"sparsity": 0.0, "orthogonality": nan, "n_zero_banks": 4, "custom": 4.0}),
    }) + _quality_rows("a", 0.5, 7, 3, {  # depth 1 -> (0, 1/2], depth 2 -> (1/2, 1]
        0: (3, 3, {"sparsity": 0.4, "orthogonality": 0.7, "n_zero_banks": 1, "custom": 0.5}),
        1: (6, 2, {"sparsity": 0.1, "orthogonality": 0.3, "n_zero_banks": 0, "custom": 1.5}),
        2: (8, 4, {"sparsity": 0.2, "orthogonality": 0.8, "n_zero_banks": 2, "custom": 2.5}),
    })
    quality = pd.DataFrame(rows).sample(frac=1.0, random_state=3)  # input order does not matter
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ("b", 0) orthogonality: all NaN -> NaN, not a 0/0
        out = F.quality_by_depth(quality, n_bins=10)
    assert list(out.columns) == F.QUALITY_BY_DEPTH_COLUMNS
    metrics = ["custom", "n_zero_banks", "orthogonality", "sparsity"]
    # (model, group): {metric: value}, by hand: sparsity/custom weighted by n_filters, orthogonality by
    # n_banks (NaN layers left out), n_zero_banks summed; "custom" is not in QUALITY_WEIGHTS: n_filters
    values = {
        ("a", 0): [0.5, 1.0, 0.7, 0.4],
        ("a", 1): [1.5, 0.0, 0.3, 0.1],
        ("a", 2): [2.5, 2.0, 0.8, 0.2],
        ("b", 0): [5.0, 0.0, nan, 0.0],
        ("b", 1): [(4 * 1.0 + 12 * 3.0) / 16, 3.0, (2 * 0.2 + 3 * 0.6) / 5, (4 * 0.5 + 12 * 0.25) / 16],
        ("b", 2): [(2 * 2.0 + 6 * 4.0) / 8, 4.0, 0.9, (2 * 1.0 + 6 * 0.0) / 8],
    }
    expected = []
    for (model, group), vals in values.items():
        eps, seed = (0.5, 7) if model == "a" else (0.0, 0)
        lo, hi = {0: (0.0, 0.0), 1: (0.0, 0.5), 2: (0.5, 1.0)}[group]
        n_layers = 1 if group == 0 or model == "a" else 2  # NaN layers count as layers
        for metric, value in zip(metrics, vals):
            expected.append({"model": model, "eps": eps, "robust": eps > 0, "seed": seed, "group": group,
                             "scope": "first_layer" if group == 0 else "depth_bin", "depth_lo": lo, "depth_hi": hi,
                             "n_depth_bins": 2, "n_layers": n_layers, "metric": metric, "value": value})
    expected = pd.DataFrame(expected)
    for col in F.QUALITY_BY_DEPTH_COLUMNS:
        if col == "value":
            np.testing.assert_allclose(out[col].to_numpy(float), expected[col].to_numpy(float), rtol=1e-12)
        else:
            assert list(out[col]) == list(expected[col]), col


def test_quality_by_depth_without_bins_with_one_bin_and_defaults():
    # a model without layers after the first: no depth bins, only the first layers are reported
    q = pd.DataFrame(_quality_rows("a", 0.0, 0, 3, {0: (2, 1, {"sparsity": 0.5}), 1: (4, 2, {"sparsity": 0.25}),
                                                    2: (4, 2, {"sparsity": 0.75})})
                     + _quality_rows("c", 1.0, 1, 3, {0: (3, 3, {"sparsity": 1 / 3})}))
    out = F.quality_by_depth(q)
    assert list(out["model"]) == ["a", "c"] and list(out["group"]) == [0, 0]
    assert list(out["scope"]) == ["first_layer"] * 2 and list(out["n_depth_bins"]) == [0, 0]
    assert list(out["depth_lo"]) == [0.0, 0.0] and list(out["depth_hi"]) == [0.0, 0.0]
    np.testing.assert_allclose(out["value"], [0.5, 1 / 3])
    # one layer after the first: one bin (0, 1]
    q1 = pd.DataFrame(_quality_rows("a", 0.0, 0, 2, {0: (2, 1, {"sparsity": 0.5}), 1: (4, 2, {"sparsity": 0.25})}))
    out = F.quality_by_depth(q1)
    assert list(out["group"]) == [0, 1] and list(out["scope"]) == ["first_layer", "depth_bin"]
    assert list(out["depth_lo"]) == [0.0, 0.0] and list(out["depth_hi"]) == [0.0, 1.0]
    assert list(out["n_depth_bins"]) == [1, 1]
    np.testing.assert_allclose(out["value"], [0.5, 0.25])
    # the default is deciles: 12 layers after the first
    deep = pd.DataFrame(_quality_rows("d", 0.0, 0, 13, {d: (1, 1, {"sparsity": d / 12}) for d in range(13)}))
    out = F.quality_by_depth(deep)
    assert set(out["n_depth_bins"]) == {10} and list(out["group"]) == list(range(11))
    # bin j of 10 over depths 1..12 of n_conv 13 holds the depths d with ceil(10 d / 12) = j
    for j in range(1, 11):
        members = [d for d in range(1, 13) if math.ceil(10 * d / 12) == j]
        assert out.loc[out.group == j, "value"].item() == pytest.approx(np.mean(members) / 12)
    empty = F.quality_by_depth(pd.DataFrame(columns=F.QUALITY_COLUMNS))
    assert empty.empty and list(empty.columns) == F.QUALITY_BY_DEPTH_COLUMNS


# ---------------------------------------------------------------------------------------------
# shift_table, row by row, against a plain numpy/scipy reimplementation of its definition


def _shift_models():
    """Four models of 3 conv layers (n_conv 3): normal seeds 0, 1 with 3x3 layers at depths 0, 1, 2
    (centre-heavy filters, one sparse filter in normal_s0); robust seeds 0, 1 whose first conv is
    not 3x3 (3x3 at depths 1, 2; isotropic filters; one filter at depth 2)."""
    rng = np.random.default_rng(60)
    models = []
    for seed in (0, 1):
        layers = {}
        for depth, shape in ((0, (3, 2)), (1, (3, 3)), (2, (2, 2))):
            w = 0.3 * rng.normal(size=(*shape, 9))
            w[..., 4] += 2.0
            layers[depth] = w
        if seed == 0:
            layers[1][2, 1] = 1e-4 * rng.normal(size=9)  # sparse
        models.append({"id": f"normal_s{seed}", "eps": 0.0, "seed": seed, "n_conv": 3, "layers": layers})
    for seed in (0, 1):
        layers = {1: rng.normal(size=(3, 3, 9)), 2: rng.normal(size=(1, 1, 9))}
        models.append({"id": f"robust_s{seed}", "eps": 1.0, "seed": seed, "n_conv": 3, "layers": layers})
    return models


def _shift_dataset(models):
    return filters_dataset([
        make_record(m["id"], m["eps"], m["seed"], [w.reshape(*w.shape[:2], 3, 3) for w in m["layers"].values()],
                    n_conv=m["n_conv"], depths=list(m["layers"])) for m in models])


def reference_shift_table(models, n_bins, n_permutations=0, seed=0, bins=70):
    """The shift table by its definition: per model and layer the non-sparse filters (max|F| >
    max|W| / 100), each over its own max|F|; per comparison a PCA (numpy eigh of the covariance,
    any signs) of all its filters; per scope and PCA axis a 70-bin density histogram of each side
    over the pooled (min, max) of the scope's coefficients, empty bins = float32 eps, renormalised;
    symmetric KL (scipy, nats) weighted by the explained variance ratio. Permutations: all
    assignments of the comparison's models (exact, itertools) when at most n_permutations, else
    n_permutations draws of numpy's Generator.permutation with ``seed``."""
    from itertools import combinations as combos
    from fractions import Fraction

    eps32 = np.finfo(np.float32).eps
    filt = []  # (model index, depth, scaled row)
    for k, m in enumerate(models):
        for depth, w in m["layers"].items():
            rows = np.asarray(w, np.float32).astype(np.float64).reshape(-1, 9)
            peak = np.abs(rows).max(axis=1)
            for r in rows[peak > np.abs(rows).max() / 100]:
                filt.append((k, depth, r / np.abs(r).max()))
    owner = np.array([f[0] for f in filt])
    depth = np.array([f[1] for f in filt])
    x = np.array([f[2] for f in filt])
    n_conv = np.array([models[k]["n_conv"] for k in owner])
    scopes = [("overall", None, 0.0, 1.0, np.ones(len(x), bool)), ("first_layer", None, 0.0, 0.0, depth == 0)]
    bin_of = np.array([math.ceil(Fraction(int(d), int(n) - 1) * n_bins) - 1 if d > 0 else -1 for d, n in zip(depth, n_conv)])
    scopes += [("depth_bin", j, j / n_bins, (j + 1) / n_bins, bin_of == j) for j in range(n_bins)]

    def distribution(values, lo, hi):
        density, _ = np.histogram(values, bins=bins, range=(lo, hi), density=True)
        density[density == 0] = eps32
        return density / density.sum()

    def shift(c, in_a, ratio):
        if not in_a.any() or in_a.all():
            return np.nan
        total = 0.0
        for i in range(9):
            lo, hi = c[:, i].min(), c[:, i].max()
            p, q = distribution(c[in_a, i], lo, hi), distribution(c[~in_a, i], lo, hi)
            total += ratio[i] * (scipy.stats.entropy(p, q) + scipy.stats.entropy(q, p))
        return total

    normal = sorted(k for k, m in enumerate(models) if m["eps"] == 0)
    robust = sorted(k for k, m in enumerate(models) if m["eps"] > 0)
    comparisons = [("robust_vs_normal", "robust", "normal", robust, normal, True)] if robust and normal else []
    for kind, ks in (("normal", normal), ("robust", robust)):
        seeds = sorted({models[k]["seed"] for k in ks})
        if len(seeds) >= 2:
            first, second = seeds[: len(seeds) // 2], seeds[len(seeds) // 2:]
            comparisons.append((f"{kind}_vs_{kind}", f"{kind} seeds " + ",".join(map(str, first)),
                                f"{kind} seeds " + ",".join(map(str, second)),
                                [k for k in ks if models[k]["seed"] in first], [k for k in ks if models[k]["seed"] in second], False))
    out = []
    for name, ga, gb, ka, kb, permute in comparisons:
        comp = sorted(ka + kb)
        members = np.isin(owner, comp)
        values, vectors = np.linalg.eigh(np.cov(x[members].T))
        values, vectors = values[::-1], vectors[:, ::-1]
        ratio = values / values.sum()
        labelings = None
        if permute and n_permutations > 0:
            if math.comb(len(comp), len(ka)) <= n_permutations:
                labelings, exact = [set(c) for c in combos(comp, len(ka))], True
            else:
                rng = np.random.default_rng(seed)
                base = np.arange(len(comp)) < len(ka)
                labelings = [{comp[i] for i in np.flatnonzero(rng.permutation(base))} for _ in range(n_permutations)]
                exact = False
        for scope, b, lo, hi, rows in scopes:
            sel = members & rows
            c = (x[sel] - x[members].mean(axis=0)) @ vectors
            in_a = np.isin(owner[sel], ka)
            row = {"comparison": name, "group_a": ga, "group_b": gb, "scope": scope, "bin": b, "depth_lo": lo,
                   "depth_hi": hi, "n_depth_bins": n_bins, "n_filters_a": int(in_a.sum()),
                   "n_filters_b": int((~in_a).sum()), "n_models_a": len(set(owner[sel][in_a])),
                   "n_models_b": len(set(owner[sel][~in_a])), "value": shift(c, in_a, ratio),
                   "n_permutations": 0, "permutation_exact": None, "p_value": np.nan, "null_mean": np.nan,
                   "null_q95": np.nan}
            if labelings is not None and np.isfinite(row["value"]):
                null = np.array([shift(c, np.isin(owner[sel], list(lab)), ratio) for lab in labelings])
                null = null[np.isfinite(null)]
                n_ge = int((null >= row["value"] * (1 - 1e-12)).sum())
                row.update({"n_permutations": len(null), "permutation_exact": exact})
                if len(null):
                    row.update({"p_value": n_ge / len(null) if exact else (1 + n_ge) / (1 + len(null)),
                                "null_mean": null.mean(), "null_q95": np.quantile(null, 0.95)})
            out.append(row)
    return out


def _assert_shift_rows(table, expected):
    assert list(table.columns) == F.SHIFT_COLUMNS
    assert len(table) == len(expected)
    assert str(table["bin"].dtype) == "Int64" and str(table["permutation_exact"].dtype) == "boolean"
    for (_, got), want in zip(table.iterrows(), expected):
        where = (want["comparison"], want["scope"], want["bin"])
        for key in ("comparison", "group_a", "group_b", "scope", "n_depth_bins", "n_filters_a", "n_filters_b",
                    "n_models_a", "n_models_b", "n_permutations"):
            assert got[key] == want[key], (where, key)
        assert got["measure"] == "weighted_symmetric_kl_nats" and got["histogram_range"] == "pooled"
        assert (pd.isna(got["bin"]) and want["bin"] is None) or got["bin"] == want["bin"], where
        assert (got["depth_lo"], got["depth_hi"]) == pytest.approx((want["depth_lo"], want["depth_hi"]), abs=1e-15)
        if want["permutation_exact"] is None:
            assert pd.isna(got["permutation_exact"]), where
        else:
            assert got["permutation_exact"] is want["permutation_exact"] or got["permutation_exact"] == want["permutation_exact"], where
        for key in ("value", "p_value", "null_mean", "null_q95"):
            if np.isnan(want[key]):
                assert np.isnan(got[key]), (where, key)
            else:
                assert got[key] == pytest.approx(want[key], rel=1e-9), (where, key)


def test_shift_table_every_row_matches_the_definition_with_an_exact_permutation_test():
    models = _shift_models()
    ds = _shift_dataset(models)
    table = shift_table(ds, n_bins_depth=10, n_permutations=100)
    expected = reference_shift_table(models, n_bins=2, n_permutations=100)
    _assert_shift_rows(table, expected)
    # the hand-checkable facts of this case
    rows = table.set_index(["comparison", "scope", table["bin"].fillna(-1)])
    assert rows.loc[("robust_vs_normal", "overall", -1), "n_filters_b"] == 2 * (6 + 9 + 4) - 1  # one sparse
    assert rows.loc[("robust_vs_normal", "overall", -1), "n_permutations"] == 6  # C(4, 2)
    first = rows.loc[("robust_vs_normal", "first_layer", -1)]
    assert (first["n_filters_a"], first["n_models_a"], first["n_models_b"]) == (0, 0, 2)
    assert np.isnan(first["value"]) and first["n_permutations"] == 0  # no test on an empty side
    one = rows.loc[("robust_vs_robust", "depth_bin", 1)]  # one filter on each side
    assert (one["n_filters_a"], one["n_filters_b"]) == (1, 1) and np.isfinite(one["value"])
    assert set(table.loc[table.comparison != "robust_vs_normal", "n_permutations"]) == {0}
    assert table.loc[table.comparison == "normal_vs_normal", "group_b"].iloc[0] == "normal seeds 1"


def test_shift_table_random_permutations_follow_the_seed():
    models = _shift_models()
    ds = _shift_dataset(models)
    for n_permutations, seed in ((4, 11), (1, 2), (5, 0)):
        table = shift_table(ds, n_bins_depth=10, n_permutations=n_permutations, seed=seed)
        _assert_shift_rows(table, reference_shift_table(models, 2, n_permutations, seed))
        assert not table.loc[table.n_permutations > 0, "permutation_exact"].any()
    # the default seed is 0; as many permutations as assignments: the exact test
    _assert_shift_rows(shift_table(ds, n_permutations=4), reference_shift_table(models, 2, 4, 0))
    exact = shift_table(ds, n_permutations=6)
    assert exact.loc[exact.n_permutations > 0, "permutation_exact"].all()
    _assert_shift_rows(exact, reference_shift_table(models, 2, 6))
    # no permutations by default
    plain = shift_table(ds)
    _assert_shift_rows(plain, reference_shift_table(models, 2))
    assert plain["p_value"].isna().all() and plain["permutation_exact"].isna().all()


def test_shift_table_one_depth_bin_and_deciles_by_default():
    rng = np.random.default_rng(61)
    models = [{"id": "n", "eps": 0.0, "seed": 0, "n_conv": 2, "layers": {0: rng.normal(size=(3, 2, 9)), 1: rng.normal(size=(2, 2, 9)) + 1}},
              {"id": "r", "eps": 0.5, "seed": 0, "n_conv": 2, "layers": {0: rng.normal(size=(3, 2, 9)), 1: rng.normal(size=(2, 3, 9))}}]
    table = shift_table(_shift_dataset(models), n_bins_depth=10)
    _assert_shift_rows(table, reference_shift_table(models, n_bins=1))
    assert list(table["scope"]) == ["overall", "first_layer", "depth_bin"]
    assert (table["depth_lo"].iloc[2], table["depth_hi"].iloc[2]) == (0.0, 1.0)
    # 12 layers after the first: the default gives deciles
    deep = [{"id": i, "eps": e, "seed": 0, "n_conv": 13, "layers": {d: rng.normal(size=(1, 2, 9)) for d in range(13)}}
            for i, e in (("n", 0.0), ("r", 1.0))]
    assert set(shift_table(_shift_dataset(deep))["n_depth_bins"]) == {10}


def test_shift_table_seed_halves_of_four_seeds():
    table = shift_table(_synthetic_shift_dataset(n_seeds=4), n_bins_depth=1)
    halves = table[table.comparison != "robust_vs_normal"].drop_duplicates("comparison").set_index("comparison")
    assert halves.loc["normal_vs_normal", ["group_a", "group_b"]].tolist() == ["normal seeds 0,1", "normal seeds 2,3"]
    assert halves.loc["robust_vs_robust", ["group_a", "group_b"]].tolist() == ["robust seeds 0,1", "robust seeds 2,3"]
    assert halves["n_models_a"].tolist() == [2, 2] and halves["n_models_b"].tolist() == [2, 2]
    assert halves["n_filters_a"].tolist() == [2 * 5 * 256] * 2 and halves["n_filters_b"].tolist() == [2 * 5 * 256] * 2


def _identity_basis(ratio):
    ratio = np.asarray(ratio, np.float64)
    return F.FilterBasis(components=np.eye(9), explained_variance_ratio=ratio, explained_variance=ratio,
                         mean=np.zeros(9), n_filters=0)


def _taps_shift(a, b, ratio, value_range=None, bins=70):
    """The shift with the identity basis (coefficients = taps), by hand: per tap the pooled (or the
    given) range, widened by 0.5 on each side where it is a single point."""
    eps32 = np.finfo(np.float32).eps
    total = 0.0
    for i in range(9):
        if value_range is None:
            lo, hi = min(a[:, i].min(), b[:, i].min()), max(a[:, i].max(), b[:, i].max())
        else:
            lo, hi = value_range
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        dists = []
        for v in (a[:, i], b[:, i]):
            d, _ = np.histogram(v, bins=bins, range=(lo, hi), density=True)
            d[d == 0] = eps32
            dists.append(d / d.sum())
        total += ratio[i] * (scipy.stats.entropy(*dists) + scipy.stats.entropy(*dists[::-1]))
    return total


def test_coefficient_shift_flat_axes_value_ranges_and_small_samples():
    rng = np.random.default_rng(62)
    # every filter has its max|F| = 1 at tap 8: scaling leaves it, and tap 8 is flat at 1.0
    a = np.hstack([rng.uniform(-0.9, 0.9, size=(25, 8)), np.ones((25, 1))])
    b = np.hstack([rng.uniform(-0.5, 0.9, size=(15, 8)) ** 3, np.ones((15, 1))])
    ratio = rng.dirichlet(np.ones(9))
    basis = _identity_basis(ratio)
    assert coefficient_shift(a, b, basis) == pytest.approx(_taps_shift(a, b, ratio), rel=1e-12)
    assert coefficient_shift(a.reshape(25, 3, 3), b.reshape(5, 3, 3, 3), basis) == pytest.approx(_taps_shift(a, b, ratio), rel=1e-12)
    # one fixed range for every axis, including a single point (widened to (0.25, 1.25))
    for value_range in ((-2.0, 2.0), (-1.0, 1.0), (0.75, 0.75)):
        expected = _taps_shift(a, b, ratio, value_range)
        assert coefficient_shift(a, b, basis, value_range=value_range) == pytest.approx(expected, rel=1e-12), value_range
    assert coefficient_shift(a, b, basis, bins=7) == pytest.approx(_taps_shift(a, b, ratio, bins=7), rel=1e-12)
    # a single filter on one side is a sample; an empty side gives NaN
    assert coefficient_shift(a[:1], b, basis) == pytest.approx(_taps_shift(a[:1], b, ratio), rel=1e-12)
    assert coefficient_shift(a, b[:1], basis) == pytest.approx(_taps_shift(a, b[:1], ratio), rel=1e-12)
    assert math.isnan(coefficient_shift(a[:1], np.zeros((0, 9))))
    assert math.isnan(coefficient_shift(np.zeros((0, 9)), b[:1]))
    assert math.isnan(coefficient_shift(np.zeros((0, 3, 3)), b, basis))


# ---------------------------------------------------------------------------------------------
# extraction: dtypes, devices of the probe input, record fields


def test_extraction_float64_model_record_fields_and_warning_location():
    from torch import nn

    model = nn.Sequential(OrderedDict(a=nn.Conv2d(2, 3, 3, padding=1), b=nn.Conv2d(3, 2, 3, padding=1))).double()
    rec = extract_conv_filters(model, 7, eps=1, seed=np.int64(4), input_shape=(1, 2, 5, 5))
    assert rec.order == "forward" and rec.model_id == "7"
    assert rec.eps == 1.0 and type(rec.eps) is float
    assert rec.seed == 4 and type(rec.seed) is int
    for layer, module in zip(rec.layers, (model.a, model.b)):
        assert layer.weight.dtype == np.float32
        np.testing.assert_array_equal(layer.weight, module.weight.detach().numpy().astype(np.float32))
    assert extract_conv_filters(model, "m", eps=0.0).seed is None

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Conv2d(1, 1, 3)
            self.unused = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.used(x)

    with pytest.warns(UserWarning, match=r"m: conv layers never called in the forward pass were placed last: \['unused'\]") as caught:
        extract_conv_filters(Skips(), "m", eps=0.0, input_shape=(1, 1, 4, 4))
    assert Path(caught[0].filename).name != "extract.py"  # attributed to a caller, not the library (mutmut adds a frame)


def test_extraction_probe_input_dtype_without_parameters():
    from torch import nn

    class Probe(nn.Module):
        """No parameters; records the dtype of what it is called with."""

        def __init__(self, buffer=None):
            super().__init__()
            if buffer is not None:
                self.register_buffer("b", buffer)
            self.seen = []

        def forward(self, x):
            self.seen.append(x.dtype)
            return x

    for buffer, dtype in ((None, torch.float32), (torch.zeros(2, dtype=torch.int64), torch.float32),
                          (torch.zeros(2, dtype=torch.float64), torch.float64)):
        probe = Probe(buffer)
        rec = extract_conv_filters(probe, "p", eps=0.0, input_shape=(1, 2))
        assert probe.seen == [dtype]
        assert rec.n_conv == 0 and rec.layers == () and rec.order == "forward"


def test_quality_table_of_a_single_filter():
    w = np.arange(9.0).reshape(1, 1, 3, 3) - 4
    q = quality_table(filters_dataset([make_record("one", 0.0, 0, [w])])).set_index("metric")["value"]
    assert list(q.index) == list(F.QUALITY_METRICS)
    assert q["sparsity"] == 0.0 and q["n_zero_banks"] == 0.0
    assert math.isnan(q["variance_entropy"]) and math.isnan(q["orthogonality"])


def test_shift_table_one_kind_of_model_unknown_seeds_and_permutations_without_a_finite_null():
    rng = np.random.default_rng(63)

    def model(name, eps, seed, depths):
        return {"id": name, "eps": eps, "seed": seed, "n_conv": 2,
                "layers": {d: rng.normal(size=(2, 2, 9)) + (0.0 if eps else 1.5) for d in depths}}

    # only normal (or only robust) models: the seed-half comparison alone
    normal = [model("n0", 0.0, 0, [0, 1]), model("n1", 0.0, 1, [0, 1])]
    for models, name in ((normal, "normal_vs_normal"), ([dict(m, eps=1.0) for m in normal], "robust_vs_robust")):
        table = shift_table(_shift_dataset(models), n_permutations=10)
        assert set(table["comparison"]) == {name}
        _assert_shift_rows(table, reference_shift_table(models, n_bins=1, n_permutations=10))
    # a model of unknown seed takes no part in the seed halves
    unknown = normal + [model("nx", 0.0, None, [0, 1])]
    halves = shift_table(_shift_dataset(unknown)).query("scope == 'overall'").iloc[0]
    assert (halves["n_models_a"], halves["n_models_b"], halves["n_filters_a"], halves["n_filters_b"]) == (1, 1, 8, 8)
    # first layers only in n0 and r0: a permuted labeling that puts both on one side has no finite
    # shift; with one random labeling that does so, the test has no null at all
    models = [model("n0", 0.0, 0, [0, 1]), model("n1", 0.0, 1, [1]), model("r0", 1.0, 0, [0, 1]), model("r1", 1.0, 1, [1])]
    ds = _shift_dataset(models)

    def draw_splits_n0_r0(seed):  # sorted models n0, n1, r0, r1; the first two drawn are group a
        a = np.flatnonzero(np.random.default_rng(seed).permutation(np.arange(4) < 2))
        return (0 in a) != (2 in a)

    seed = next(s for s in range(100) if not draw_splits_n0_r0(s))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean or quantile of an empty null
        for n_permutations, s in ((100, 0), (1, seed)):
            table = shift_table(ds, n_permutations=n_permutations, seed=s)
            _assert_shift_rows(table, reference_shift_table(models, 1, n_permutations, s))
    first = table.query("comparison == 'robust_vs_normal' and scope == 'first_layer'").iloc[0]
    assert first["n_permutations"] == 0 and np.isnan(first["p_value"]) and np.isnan(first["null_q95"])
    assert np.isfinite(first["value"])
