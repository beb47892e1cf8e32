"""Pairwise comparisons of two models' stores: rows for the predictive tables (agreement and
the other predictive measures, for the original and the retrained heads). The rows of the
similarity tables come from :mod:`robustlens.similarity_comparisons`, which needs torch; this
module does not.

Both stores of a pair must hold the same probe inputs in the same order; this is checked on
the stored labels before anything is computed (:func:`check_aligned`).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from robustlens.heads import head_logits
from robustlens.measures import MEASURES, get_function


def check_aligned(a: xr.Dataset, b: xr.Dataset, where: str) -> None:
    """Raise ``ValueError`` (naming ``where``) unless the two stores hold the same probe inputs:
    equal sample counts and equal stored labels, in order."""
    if a.sizes["sample"] != b.sizes["sample"] or not np.array_equal(a["label"].values, b["label"].values):
        raise ValueError(f"{where}: the two stores do not hold the same probe inputs (sample counts or labels differ)")


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
    out = {("original", -1): store["logits"].values}
    if heads is not None:
        features = store["penultimate"].values
        for seed, w, b in zip(heads["seeds"], heads["weight"], heads["bias"]):
            out[("retrained", int(seed))] = head_logits(features, w, b)
    return out


def pair_predictive_rows(store_a: xr.Dataset, store_b: xr.Dataset, heads_a: dict | None, heads_b: dict | None, context: dict) -> list[dict]:
    """Predictive rows of one pair on one probe input set, for the original heads and for each
    retrained head seed (model a's head of seed s against model b's head of seed s)."""
    check_aligned(store_a, store_b, f"probe {context.get('probe')}, models {context.get('model_a')} and {context.get('model_b')}")
    labels = store_a["label"].values
    la, lb = logits_by_head(store_a, heads_a), logits_by_head(store_b, heads_b)
    rows = []
    for key in la:
        if key in lb:
            head, head_seed = key
            rows += predictive_rows(la[key], lb[key], labels, {**context, "head": head, "head_seed": head_seed})
    return rows
