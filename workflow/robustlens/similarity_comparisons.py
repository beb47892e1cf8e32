"""Pairwise comparisons of two models' stores: rows for the similarity tables (every configured
representational measure per layer, its permutation baseline, RTD's spread across trials) and
for the pairwise similarity matrices. Both stores of a pair must hold the same probe inputs in
the same order (:func:`robustlens.comparisons.check_aligned`).
"""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import xarray as xr

from robustlens.comparisons import check_aligned
from robustlens.measures import get_function
from robustlens.similarity import permutation_baseline, rtd_trials, validate_representation


def measure_kwargs(name: str, settings: dict, device: str | None = None) -> dict:
    """Keyword arguments of a representational measure from the ``comparison`` settings:
    ``k`` and ``center`` (``knn_k``, ``knn_center``) for k-NN Jaccard, trials/batch/seed for
    RTD, the device where the function takes one."""
    kwargs = {}
    if name == "knn_jaccard":
        kwargs["k"] = settings["knn_k"]
        kwargs["center"] = bool(settings.get("knn_center", False))
    if name == "rtd":
        kwargs.update({k: settings["rtd"][k] for k in ("n_trials", "batch", "seed")})
    if device is not None and "device" in inspect.signature(get_function(name)).parameters:
        kwargs["device"] = device
    return kwargs


def recorded_settings(name: str, kwargs: dict) -> dict:
    """Columns recording a measure's convention options beside its value: ``knn_center`` on
    k-NN Jaccard rows (absent, i.e. empty, on the other measures' rows)."""
    return {"knn_center": bool(kwargs["center"])} if name == "knn_jaccard" else {}


def measures_for_layer(layer: str, measures: list[str], settings: dict) -> list[str]:
    """The configured measures computed on ``layer``: RTD only on its configured layers (it
    costs seconds per trial where the others cost milliseconds)."""
    return [m for m in measures if m != "rtd" or layer in settings["rtd"]["layers"]]


def similarity_rows(store_a: xr.Dataset, store_b: xr.Dataset, layers: list[str], settings: dict, context: dict,
                    device: str | None = None) -> list[dict]:
    """One row per (layer, measure): the value, the mean and sd of its permutation baseline
    (shuffled sample correspondence) where configured, RTD's spread across trials, and
    ``knn_center`` on k-NN Jaccard rows (see :func:`recorded_settings`)."""
    probe = context.get("probe", "?")
    check_aligned(store_a, store_b, f"probe {probe}, models {context.get('model_a')} and {context.get('model_b')}")
    baseline = settings["baseline"]
    rows = []
    for layer in layers:
        X = store_a[layer].values.astype(np.float64)
        Y = store_b[layer].values.astype(np.float64)
        validate_representation(X, f"model {context.get('model_a')}, layer {layer}, probe {probe}, source {context.get('source')}")
        validate_representation(Y, f"model {context.get('model_b')}, layer {layer}, probe {probe}, source {context.get('source')}")
        for name in measures_for_layer(layer, settings["measures"], settings):
            kwargs = measure_kwargs(name, settings, device)
            row = {**context, "layer": layer, "measure": name, **recorded_settings(name, kwargs)}
            if name == "rtd":
                trials = rtd_trials(X, Y, **kwargs)
                row |= {"value": float(trials.mean()), "trial_sd": float(trials.std(ddof=1)) if len(trials) > 1 else 0.0}
            else:
                row["value"] = float(get_function(name)(X, Y, **kwargs))
            if name in baseline["measures"]:
                null = permutation_baseline(name, X, Y, n_permutations=baseline["n_permutations"], seed=baseline["seed"], measure_kwargs=kwargs)
                row |= {"baseline_mean": float(null.mean()), "baseline_sd": float(null.std(ddof=1)) if len(null) > 1 else 0.0}
            rows.append(row)
    return rows


def similarity_matrix_rows(stores: dict[str, xr.Dataset], layers: list[str], measures: list[str], settings: dict,
                           context: dict, device: str | None = None) -> list[dict]:
    """Every measure for every pair of models (each unordered pair once) and layer: the input
    of the pairwise heatmaps."""
    rows = []
    for layer in layers:
        values = {m: store[layer].values.astype(np.float64) for m, store in stores.items()}
        for a, b in itertools.combinations(stores, 2):
            for name in measures_for_layer(layer, measures, settings):
                kwargs = measure_kwargs(name, settings, device)
                value = get_function(name)(values[a], values[b], **kwargs)
                rows.append({**context, "layer": layer, "measure": name, "model_a": a, "model_b": b, "value": float(value),
                             **recorded_settings(name, kwargs)})
    return rows
