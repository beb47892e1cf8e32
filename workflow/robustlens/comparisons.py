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


def similarity_rows(store_a: xr.Dataset, store_b: xr.Dataset, layers: list[str], measures: list[str], context: dict) -> list[dict]:
    """One row per (layer, measure): the representational similarity of two models' layers."""
    from robustlens.similarity import validate_representation

    probe = context.get("probe", "?")
    _check_aligned(store_a, store_b, f"probe {probe}, models {context.get('model_a')} and {context.get('model_b')}")
    rows = []
    for layer in layers:
        X = store_a[layer].values.astype(np.float64)
        Y = store_b[layer].values.astype(np.float64)
        validate_representation(X, f"model {context.get('model_a')}, layer {layer}, probe {probe}")
        validate_representation(Y, f"model {context.get('model_b')}, layer {layer}, probe {probe}")
        for name in measures:
            value = get_function(name)(X, Y)
            rows.append({**context, "layer": layer, "measure": name, "value": float(value)})
    return rows


def predictive_rows(stores: dict[str, xr.Dataset], pairs: list[tuple[str, str]], context: dict, layer: str = "logits") -> list[dict]:
    """One row per (pair, predictive measure), with each model's accuracy on the probe."""
    from robustlens.predictive import accuracy

    rows = []
    for a, b in pairs:
        _check_aligned(stores[a], stores[b], f"probe {context.get('probe')}, models {a} and {b}")
        la, lb = stores[a][layer].values, stores[b][layer].values
        labels = stores[a]["label"].values
        acc = {"accuracy_a": accuracy(la, labels), "accuracy_b": accuracy(lb, labels)}
        for name, measure in MEASURES.items():
            if measure.kind != "predictive":
                continue
            fn = get_function(name)
            value = fn(la, lb, labels) if measure.needs_labels else fn(la, lb)
            rows.append({**context, "model_a": a, "model_b": b, "measure": name, "value": float(value), **acc})
    return rows
