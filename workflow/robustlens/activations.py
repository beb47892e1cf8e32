"""Layer activations: forward hooks, spatial reduction, and the xarray layout of a store.

A store holds one variable per layer, dims ``(sample, <layer>_unit)``, plus the ``label`` of
each sample as a coordinate. Convolutional feature maps are reduced over space by global
average pooling (``spatial="avgpool"``, the default) or kept whole (``spatial="flatten"``).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from robustlens.zoo import LOGITS, PENULTIMATE

SPATIAL = ("avgpool", "flatten")


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
) -> dict[str, np.ndarray]:
    """Activations of ``model`` at ``layers`` for inputs ``x``, as float32 arrays (n, features).

    Block layers are read with forward hooks on the module of the same name; ``penultimate``
    is ``model.forward_features`` and ``logits`` the head's output.
    """
    model = model.to(device).eval()
    x = torch.as_tensor(x)
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for name in layers:
        if name in (PENULTIMATE, LOGITS):
            continue
        module = dict(model.named_modules()).get(name)
        if module is None:
            raise KeyError(f"layer {name!r} is not a module of the model; known: {model.representation_layers()}")
        hooks.append(module.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out)))
    out: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    try:
        for start in tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress, mininterval=1.0):
            xb = x[start : start + batch_size].to(device)
            features = model.forward_features(xb)
            captured[PENULTIMATE] = features
            captured[LOGITS] = model.head(features)
            for name in layers:
                out[name].append(reduce_spatial(captured[name], spatial).float().cpu().numpy())
    finally:
        for hook in hooks:
            hook.remove()
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
) -> dict:
    """Activations of every target model on the same probe images, one store per target
    (``<directory>/<target>.zarr`` with its manifest), written into a temporary directory that
    is renamed into place at the end. ``targets`` maps id -> (model, provenance).
    Returns an index: target id -> the store's checksum."""
    import os
    import shutil
    from pathlib import Path

    from robustlens.store import write_store

    final = Path(directory)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index = {}
    for target, (model, prov) in targets.items():
        acts = extract_activations(
            model, images, activations["layers"], spatial=activations["spatial"],
            batch_size=activations["batch_size"], device=device, progress=progress, desc=f"extract {target}",
        )
        manifest = write_store(activations_dataset(acts, labels), tmp / f"{target}.zarr", prov, activations["layers"])
        index[target] = manifest["checksum"]
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return index
