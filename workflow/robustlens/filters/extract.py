"""Extraction of the 3x3 kernels of every conv layer of a torch model, in depth order
(Gavrikov & Keuper, CVPR-W 2022, Sec. 3: the filters W of a layer that Eq. 3-10 read).

The only part of :mod:`robustlens.filters` that uses torch, and it does not import it at module
level: :func:`extract_conv_filters` (and :func:`_forward_conv_order`) import it when called, so
table and figure jobs that import :mod:`robustlens.filters` never load torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .depth import normalised_depth


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
