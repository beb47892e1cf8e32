"""What building a fit's optimiser costs a job: robustlens' MomentumSGD against torch.optim.SGD.

Each measurement is a fresh interpreter (as every Snakemake job is) that imports torch and
robustlens.fitting, builds a small model and its gradients, then times building the optimiser
(SGD, momentum 0.9, Nesterov, weight decay 5e-4), fitting's OneCycleLR schedule and one step:
the work a train_model, retrain_heads or transfer job does before its first batch. Baseline in
the same run: the same with ``torch.optim.SGD``, whose methods import ``torch._dynamo`` on
their first call. Reported: the median over ``--repeats`` processes of each, alternating, and
whether torch._dynamo was imported.

    .venv/bin/python benchmarks/optimizer_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys, time, torch
from robustlens.fitting import lr_schedule
from robustlens.momentum_sgd import MomentumSGD
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 10))
model(torch.randn(4, 3, 32, 32)).square().mean().backward()
start = time.perf_counter()
optimizer = {"MomentumSGD": MomentumSGD, "torch.optim.SGD": torch.optim.SGD}[sys.argv[1]]
opt = optimizer(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
sched, _ = lr_schedule(opt, {"kind": "onecycle"}, epochs=2, steps_per_epoch=5)
opt.step()
sched.step()
print(json.dumps({"seconds": time.perf_counter() - start, "dynamo": "torch._dynamo" in sys.modules}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "workflow"))
    results: dict[str, list[dict]] = {"torch.optim.SGD": [], "MomentumSGD": []}
    for _ in range(args.repeats):
        for name in results:
            out = subprocess.run([sys.executable, "-c", CHILD, name], env=env, check=True, capture_output=True, text=True).stdout
            results[name].append(json.loads(out.splitlines()[-1]))
    base = statistics.median(r["seconds"] for r in results["torch.optim.SGD"])
    print("| optimiser | optimiser + schedule + step (median) | torch._dynamo imported | baseline / this |")
    print("|---|---:|---|---:|")
    for name, runs in results.items():
        median = statistics.median(r["seconds"] for r in runs)
        print(f"| {name} | {median * 1e3:.1f} ms | {'yes' if runs[0]['dynamo'] else 'no'} | {base / median:.0f}x |")


if __name__ == "__main__":
    main()
