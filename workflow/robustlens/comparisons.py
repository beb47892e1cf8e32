"""Pairwise comparisons of two models' stores: rows for the similarity and predictive tables.

Both stores of a pair must hold the same probe inputs in the same order; this is checked on
the stored labels before anything is computed.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from robustlens.measures import MEASURES, get_function


def _check_aligned(a: xr.Dataset, b: xr.Dataset, where: str) -> None:
    if a.sizes["sample"] != b.sizes["sample"] or not np.array_equal(a["label"].values, b["label"].values):
        raise ValueError(f"{where}: the two stores do not hold the same probe inputs (sample counts or labels differ)")


def measure_kwargs(name: str, settings: dict, device: str | None = None) -> dict:
    """Keyword arguments of a representational measure from the ``comparison`` settings:
    ``k`` and ``center`` (``knn_k``, ``knn_center``) for k-NN Jaccard, trials/batch/seed for
    RTD, the device where the function takes one."""
    import inspect

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
    from robustlens.similarity import permutation_baseline, rtd_trials, validate_representation

    probe = context.get("probe", "?")
    _check_aligned(store_a, store_b, f"probe {probe}, models {context.get('model_a')} and {context.get('model_b')}")
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
    import itertools

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


def predictive_rows(logits_a: np.ndarray, logits_b: np.ndarray, labels: np.ndarray, context: dict) -> list[dict]:
    """One row per predictive measure of the registry, with each model's accuracy on the probe."""
    acc = {"accuracy_a": float(np.mean(np.argmax(logits_a, 1) == labels)),
           "accuracy_b": float(np.mean(np.argmax(logits_b, 1) == labels))}
    rows = []
    for name, measure in MEASURES.items():
        if measure.kind != "predictive":
            continue
        fn = get_function(name)
        value = fn(logits_a, logits_b, labels) if measure.needs_labels else fn(logits_a, logits_b)
        rows.append({**context, "measure": name, "value": float(value), **acc})
    return rows


def logits_by_head(store: xr.Dataset, heads: dict | None) -> dict[tuple[str, int], np.ndarray]:
    """The model's logits on a probe with its original head, ``("original", -1)``, and with
    every retrained head, ``("retrained", seed)``, applied to the stored penultimate features."""
    from robustlens.heads import head_logits

    out = {("original", -1): store["logits"].values}
    if heads is not None:
        features = store["penultimate"].values
        for seed, w, b in zip(heads["seeds"], heads["weight"], heads["bias"]):
            out[("retrained", int(seed))] = head_logits(features, w, b)
    return out


def pair_predictive_rows(store_a: xr.Dataset, store_b: xr.Dataset, heads_a: dict | None, heads_b: dict | None, context: dict) -> list[dict]:
    """Predictive rows of one pair on one probe input set, for the original heads and for each
    retrained head seed (model a's head of seed s against model b's head of seed s)."""
    _check_aligned(store_a, store_b, f"probe {context.get('probe')}, models {context.get('model_a')} and {context.get('model_b')}")
    labels = store_a["label"].values
    la, lb = logits_by_head(store_a, heads_a), logits_by_head(store_b, heads_b)
    rows = []
    for key in la:
        if key in lb:
            head, head_seed = key
            rows += predictive_rows(la[key], lb[key], labels, {**context, "head": head, "head_seed": head_seed})
    return rows
