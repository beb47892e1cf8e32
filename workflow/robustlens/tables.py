"""Tidy result tables: one row per value, with the study, models (id, eps, seed) as columns.

No torch here: table scripts import this module and must start fast. Rows are sorted and
floats written in full precision, so equal results give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from robustlens.measures import MEASURES
from robustlens.tasks import parse_task


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write a table as CSV through a temporary file (floats round-trip exactly)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)


def read_parts(paths) -> pd.DataFrame:
    """Concatenate per-job CSV parts."""
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def models_table(study: str, models: list[dict], metrics: list[dict]) -> pd.DataFrame:
    """Clean accuracy and robust accuracy at each attack eps (PGD; and AutoAttack when the
    evaluation ran it), one row per value."""
    rows = []
    for spec, m in zip(models, metrics):
        base = {"study": study, "model": spec["id"], "eps": spec["eps"], "seed": spec["seed"], "norm": spec["norm"]}
        rows.append({**base, "metric": "clean_accuracy", "attack_norm": "none", "attack_eps": 0.0, "value": m["clean_accuracy"]})
        for attack_eps, value in m["robust_accuracy"].items():
            rows.append({**base, "metric": "robust_accuracy", "attack_norm": m["attack"]["norm"], "attack_eps": float(attack_eps), "value": value})
        for attack_eps, value in m.get("autoattack_accuracy", {}).items():  # optional (evaluation.autoattack)
            rows.append({**base, "metric": "autoattack_accuracy", "attack_norm": m["autoattack"]["norm"], "attack_eps": float(attack_eps), "value": value})
    return pd.DataFrame(rows)


#: Columns of a trained model's training curves (``results/models/<id>/training.csv``); the
#: validation columns are empty where the epoch was not validated or there is no validation split.
TRAINING_COLUMNS = ["model", "eps", "seed", "epoch", "lr", "loss", "train_accuracy", "val_clean_accuracy",
                    "val_robust_accuracy", "selected"]


def training_curves(spec: dict, history: list[dict]) -> pd.DataFrame:
    """One row per training epoch of the model ``spec``: the learning rate it started with, the
    mean training loss and accuracy on its (attacked) batches, clean and robust validation
    accuracy, and whether its weights are the ones kept (``selected``)."""
    df = pd.DataFrame(history).reindex(columns=TRAINING_COLUMNS[3:])
    df.insert(0, "seed", spec["seed"])
    df.insert(0, "eps", spec["eps"])
    df.insert(0, "model", spec["id"])
    return df


def pair_table(study: str, models: dict[str, dict], parts: pd.DataFrame) -> pd.DataFrame:
    """Add study, each model's eps and seed, and the measure's direction to pairwise rows."""
    df = parts.copy()
    df.insert(0, "study", study)
    for side in ("a", "b"):
        df[f"eps_{side}"] = df[f"model_{side}"].map(lambda m: models[m]["eps"])
        df[f"seed_{side}"] = df[f"model_{side}"].map(lambda m: models[m]["seed"])
    df["higher_is_similar"] = df["measure"].map(lambda m: MEASURES[m].higher_is_similar)
    keys = [c for c in ("probe", "source", "head", "head_seed", "measure", "layer", "model_a", "model_b") if c in df.columns]
    first = ["study", *keys, "eps_a", "eps_b", "seed_a", "seed_b", "value", "higher_is_similar"]
    df = df[first + [c for c in df.columns if c not in first]]
    return df.sort_values(keys, kind="mergesort").reset_index(drop=True)


def probes_table(study: str, models: dict[str, dict], probes: dict[str, dict]) -> pd.DataFrame:
    """Per (probe, source model): attack success rate and robust accuracy (adversarial), mean
    initial and final relative representation loss (inverted). ``probes`` maps
    (probe, model) -> {metric: value}."""
    rows = []
    for (probe, model), metrics in probes.items():
        spec = models[model]
        for metric, value in metrics.items():
            rows.append({"study": study, "probe": probe, "model": model, "eps": spec["eps"], "seed": spec["seed"],
                         "metric": metric, "value": float(value)})
    return pd.DataFrame(rows).sort_values(["probe", "model", "metric"], kind="mergesort").reset_index(drop=True)


def heads_table(study: str, models: list[dict], heads: list[dict]) -> pd.DataFrame:
    """Test accuracy of each model's original head and of every retrained head (and the
    retrained heads' training accuracy), one row per value."""
    rows = []
    for spec, h in zip(models, heads):
        base = {"study": study, "model": spec["id"], "eps": spec["eps"], "seed": spec["seed"]}
        rows.append({**base, "head": "original", "head_seed": -1, "split": "test", "value": float(h["original_test_accuracy"])})
        for seed, train, test in zip(h["seeds"], h["train_accuracy"], h["test_accuracy"]):
            rows.append({**base, "head": "retrained", "head_seed": int(seed), "split": "train", "value": float(train)})
            rows.append({**base, "head": "retrained", "head_seed": int(seed), "split": "test", "value": float(test)})
    df = pd.DataFrame(rows)
    df.insert(len(df.columns) - 1, "metric", "accuracy")
    return df


#: Columns of transfer.csv, in order (tidy: one row per value).
TRANSFER_COLUMNS = ["study", "model", "eps", "seed", "task", "task_kind", "method", "attack_norm", "attack_eps", "metric", "value"]
#: Columns of bounds.csv: those of transfer.csv and the AS attack's method and Thm 2's label.
BOUNDS_COLUMNS = TRANSFER_COLUMNS[:-2] + ["as_method", "thm2_label"] + TRANSFER_COLUMNS[-2:]


def transfer_tables(study: str, keys: list[tuple[dict, str]], results: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(transfer, bounds) DataFrames from the results of
    :func:`robustlens.transfer.transfer_study`, one per (model spec, task) in ``keys``: one row
    per value, with the study, the model's id, eps and seed, the task and its kind, the method
    (lp, ft, lp_ft), the attack's norm and eps ("none" and 0 for clean values), the metric and
    its value (:data:`TRANSFER_COLUMNS`); bounds.csv (:data:`BOUNDS_COLUMNS`) also the AS
    attack's method and Thm 2's label. Results written before these two columns existed get the
    defaults ("pgd", "true_label"; "none" for regression)."""
    tables = {"transfer": [], "bounds": []}
    for (spec, task), result in zip(keys, results):
        base = {"study": study, "model": spec["id"], "eps": float(spec["eps"]), "seed": int(spec["seed"]),
                "task": task, "task_kind": parse_task(task)["kind"]}
        for name in tables:
            tables[name] += [{**base, **row} for row in result[name]]
    for row in tables["bounds"]:
        row.setdefault("as_method", "pgd")
        row.setdefault("thm2_label", "true_label" if row["task_kind"] == "classification" else "none")
    return (pd.DataFrame(tables["transfer"], columns=TRANSFER_COLUMNS), pd.DataFrame(tables["bounds"], columns=BOUNDS_COLUMNS))
