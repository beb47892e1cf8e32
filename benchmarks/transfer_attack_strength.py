"""Choose the transfer attacks' strength (PGD steps and restarts) on a validation split.

For the AS attack (PGD on ||g(x + d) - g(x)||_2) and the loss attack (PGD on the task loss of
a linear probe), under L2 and Linf, this reports the attack's objective averaged over
validation inputs for a grid of (steps, restarts), relative to the strongest setting of the
grid. The validation inputs are a part of each task's *training* split (the probe is fitted on
the rest); the test split is never touched, so the settings are not tuned on the inputs the
tables report. Pick the cheapest setting within a few per cent of the strongest.

    .venv/bin/python benchmarks/transfer_attack_strength.py RUN_DIR [--tasks heldout,shapes-factors]
        [--models smallcnn-l2-eps0-s0,smallcnn-l2-eps2-s0]

RUN_DIR: a working directory in which the workflow made results/tasks/<task>.npz and the
models' checkpoints (e.g. the directory of `snakemake results/tables/transfer.csv`).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from robustlens.config import expand_models, load_config
from robustlens.data import load_dataset
from robustlens.jobs import read_json
from robustlens.runtime import configure_torch
from robustlens.tasks import random_split
from robustlens.transfer import as_score, linear_probe, loss_attack_runs
from robustlens.zoo import load_model

REPO = Path(__file__).resolve().parents[1]
GRID_STEPS = (5, 10, 20, 40)
GRID_RESTARTS = (0, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tasks", default="heldout,shapes-factors")
    parser.add_argument("--models", default="smallcnn-l2-eps0-s0,smallcnn-l2-eps2-s0")
    parser.add_argument("--n-val", type=int, default=100, help="validation inputs taken from each task's training split")
    args = parser.parse_args()
    configure_torch(1)
    config = load_config(REPO / "config.yaml")
    specs, settings = expand_models(config), config["transfer"]
    rows = []
    for mid, task_name in itertools.product(args.models.split(","), args.tasks.split(",")):
        model_dir = args.run_dir / "results" / "models" / mid
        model = load_model(specs[mid], model_dir / "checkpoint.pt", sha256=read_json(model_dir / "metrics.json")["sha256"])
        task = load_dataset(args.run_dir / "results" / "tasks" / f"{task_name}.npz")
        kind = str(task["kind"])
        ytype = torch.long if kind == "classification" else torch.float32
        fit, val = random_split(len(task["x_train"]), min(0.5, args.n_val / len(task["x_train"])), seed=123)
        x_fit = torch.as_tensor(task["x_train"][fit])
        y_fit = torch.as_tensor(task["y_train"][fit], dtype=ytype)
        x_val = torch.as_tensor(task["x_train"][val])
        y_val = torch.as_tensor(task["y_train"][val], dtype=ytype)
        probe = linear_probe(model, x_fit, y_fit, kind, int(task["n_outputs"]), settings["lp"], seed=0)
        for bound in settings["attacks"]["bounds"]:
            for steps, restarts in itertools.product(GRID_STEPS, GRID_RESTARTS):
                start = time.perf_counter()
                as_value, _ = as_score(probe, x_val, eps=bound["eps"], norm=bound["norm"], steps=steps, restarts=restarts, seed=1)
                loss = loss_attack_runs(probe, x_val, y_val, kind, eps=bound["eps"], norm=bound["norm"], steps=steps, restarts=restarts, seed=2)
                rows.append({"model": mid, "task": task_name, "norm": bound["norm"], "eps": bound["eps"], "steps": steps,
                             "restarts": restarts, "as": as_value, "loss": float(loss["loss"].mean()),
                             "seconds": time.perf_counter() - start})
    import pandas as pd

    df = pd.DataFrame(rows)
    keys = ["model", "task", "norm"]
    for col in ("as", "loss"):
        df[f"{col}_rel"] = df[col] / df.groupby(keys)[col].transform("max")
    summary = df.groupby(["norm", "steps", "restarts"])[["as_rel", "loss_rel"]].min().reset_index()
    summary["cost"] = summary["steps"] * (1 + summary["restarts"])
    pd.set_option("display.width", 200)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\nworst case over models and tasks, relative to the strongest setting of the grid:")
    print(summary.sort_values(["norm", "cost"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
