"""Layer activations: forward hooks, spatial reduction, and the xarray layout of a store.

A store holds one variable per layer, dims ``(sample, <layer>_unit)``, plus the ``label`` of
each sample as a coordinate. Convolutional feature maps are reduced over space by global
average pooling (``spatial="avgpool"``, the default) or kept whole (``spatial="flatten"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from robustlens.atomic import remove_path, remove_stale_temporaries, temporary_path
from robustlens.runtime import autocast, memory_format
from robustlens.store import write_store
from robustlens.streaming import StreamedImages
from robustlens.zoo import LOGITS, PENULTIMATE

SPATIAL = ("avgpool", "flatten")


class NonFiniteActivationError(FloatingPointError):
    """A layer produced NaN or Inf activations; the message names the model, layer and batch."""


def reduce_spatial(h: torch.Tensor, spatial: str) -> torch.Tensor:
    """(n, c, h, w) -> (n, c) by averaging over space, or (n, c*h*w) by flattening; 2-D passes."""
    if h.dim() == 2:
        return h
    if spatial == "avgpool":
        return h.mean(dim=tuple(range(2, h.dim())))
    if spatial == "flatten":
        return h.flatten(1)
    raise ValueError(f"spatial must be one of {SPATIAL}, got {spatial!r}")


@torch.no_grad()
def extract_activations(
    model: torch.nn.Module,
    x: np.ndarray | torch.Tensor,
    layers: list[str],
    *,
    spatial: str = "avgpool",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "extract",
    model_id: str = "",
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict[str, np.ndarray]:
    """Activations of ``model`` at ``layers`` for inputs ``x``, as float32 arrays (n, features).

    ``precision``: ``bf16`` runs the forward passes under bf16 autocast (the activations are
    stored as float32 all the same); ``channels_last``: model and batches in NHWC layout.

    Raises :class:`NonFiniteActivationError` naming ``model_id``, the layer and the batch (step)
    as soon as a batch's activations contain NaN or Inf, so no store is written from them.

    Block layers are read with forward hooks on the model's ``representation_modules()``; ``penultimate``
    is ``model.forward_features`` and ``logits`` the head's output.
    """
    layout = memory_format(channels_last)
    model = model.to(device, memory_format=layout).eval()
    device = torch.device(device)
    x = x if isinstance(x, StreamedImages) else torch.as_tensor(x)  # streamed: read per batch
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    modules = model.representation_modules()
    for name in layers:
        if name in (PENULTIMATE, LOGITS):
            continue
        module = modules.get(name)
        if module is None:
            raise KeyError(f"layer {name!r} is not a module of the model; known: {model.representation_layers()}")
        hooks.append(module.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out)))
    out: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    try:
        starts = range(0, len(x), batch_size)
        for step, start in enumerate(tqdm(starts, desc=desc, disable=not progress, mininterval=1.0)):
            xb = x[start : start + batch_size].to(device).contiguous(memory_format=layout)
            with autocast(device, precision):
                features = model.forward_features(xb)
                captured[PENULTIMATE] = features
                captured[LOGITS] = model.head(features)
            for name in layers:
                values = reduce_spatial(captured[name], spatial).float()
                if not bool(torch.isfinite(values).all()):
                    bad = int((~torch.isfinite(values)).sum())
                    raise NonFiniteActivationError(
                        f"{f'model {model_id}' if model_id else desc}: layer {name} has {bad} NaN/Inf activation values at "
                        f"step {step + 1} of {len(starts)} (batch of samples {start}..{start + len(xb) - 1}); "
                        f"no store is written. Check the model's checkpoint and the probe images."
                    )
                out[name].append(values.cpu().numpy())
    finally:
        for hook in hooks:
            hook.remove()
        model.to(memory_format=torch.contiguous_format)
    return {name: np.concatenate(chunks) for name, chunks in out.items()}


def activations_dataset(activations: dict[str, np.ndarray], labels: np.ndarray) -> xr.Dataset:
    """The xarray layout of a store: one variable per layer, dims (sample, <layer>_unit)."""
    n = len(labels)
    data_vars = {}
    for name, values in activations.items():
        if values.shape[0] != n:
            raise ValueError(f"layer {name}: {values.shape[0]} samples, labels have {n}")
        data_vars[name] = (("sample", f"{name}_unit"), values)
    return xr.Dataset(data_vars, coords={"sample": np.arange(n), "label": ("sample", np.asarray(labels))})


def write_target_stores(
    targets: dict[str, tuple[torch.nn.Module, dict]],
    images: np.ndarray,
    labels: np.ndarray,
    directory: str,
    *,
    activations: dict,
    device: torch.device | str = "cpu",
    progress: bool = True,
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict:
    """Activations of every target model on the same probe images, one store per target
    (``<directory>/<target>.zarr`` with its manifest), written into a temporary directory that
    is renamed into place at the end. ``targets`` maps id -> (model, provenance);
    ``precision``, ``channels_last``: as in :func:`extract_activations`.
    Returns an index: target id -> the store's checksum."""
    final = Path(directory)
    remove_stale_temporaries(final)  # what a killed earlier job left behind
    tmp = temporary_path(final)
    tmp.mkdir(parents=True)
    index = {}
    try:
        for target, (model, prov) in targets.items():
            acts = extract_activations(
                model, images, activations["layers"], spatial=activations["spatial"],
                batch_size=activations["batch_size"], device=device, progress=progress,
                desc=f"extract {target}", model_id=target, precision=precision, channels_last=channels_last,
            )
            manifest = write_store(activations_dataset(acts, labels), tmp / f"{target}.zarr", prov, activations["layers"])
            index[target] = manifest["checksum"]
        remove_path(final)
        tmp.rename(final)
    except BaseException:
        remove_path(tmp)
        raise
    return index
