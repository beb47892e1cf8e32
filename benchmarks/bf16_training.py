"""bf16 autocast training against fp32 on this CPU: clean and robust accuracy on >= 1,000 inputs.

The default study's model and recipe (config.yaml), trained on digits split 40/60 so that the
test split holds 1,079 images, at eps 0 and 1, seeds 0-4, once in fp32 and once with
``precision: bf16`` (autocast in the training step, the training attack included; evaluation
fp32). Prints per model the clean accuracy and the robust accuracy (L2 PGD-20, one restart,
eps 1), the bf16 - fp32 differences and their mean over seeds, the seed-to-seed spread of fp32 models for scale, and
the seconds per precision. Run: .venv/bin/python benchmarks/bf16_training.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from robustlens.config import load_config  # noqa: E402
from robustlens.data import prepare_dataset  # noqa: E402
from robustlens.runtime import configure_torch  # noqa: E402
from robustlens.train import train_and_evaluate  # noqa: E402


SEEDS = (0, 1, 2, 3, 4)


def main() -> None:
    configure_torch(1)
    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    data = prepare_dataset({**config["dataset"], "test_fraction": 0.6})
    n_test = len(data["y_test"])
    arch = {"name": "smallcnn", "in_channels": 1, "num_classes": 10, **{k: v for k, v in config["architecture"].items() if k != "name"}}
    evaluation = {**config["evaluation"], "eps": [1.0]}
    results, seconds = {}, {}
    for precision in ("fp32", "bf16"):
        start = time.perf_counter()
        for eps in (0.0, 1.0):
            for seed in SEEDS:
                spec = {"id": f"{precision}-{eps}-{seed}", "arch": arch, "eps": eps, "norm": "l2", "seed": seed}
                _, m = train_and_evaluate(spec, data, config["training"], evaluation, torch.device("cpu"), progress=False,
                                          compute={"precision": precision})
                results[precision, eps, seed] = (m["clean_accuracy"], m["robust_accuracy"]["1.0"])
        seconds[precision] = time.perf_counter() - start
    print(f"{n_test} test images; L2 PGD-20 + 1 restart at eps 1")
    print("eps seed  clean fp32  clean bf16  diff (pt)  robust fp32  robust bf16  diff (pt)")
    for eps in (0.0, 1.0):
        diffs = []
        for seed in SEEDS:
            (c32, r32), (c16, r16) = results["fp32", eps, seed], results["bf16", eps, seed]
            diffs.append((100 * (c16 - c32), 100 * (r16 - r32)))
            print(f"{eps:3.1f} {seed:4d}  {c32:10.4f}  {c16:10.4f}  {diffs[-1][0]:+9.2f}  {r32:11.4f}  {r16:11.4f}  {diffs[-1][1]:+9.2f}")
        d = np.array(diffs)
        seed_sd = 100 * np.array([results["fp32", eps, s] for s in SEEDS]).std(axis=0, ddof=1)
        print(f"{eps:3.1f} mean bf16 - fp32 over {len(SEEDS)} seeds: clean {d[:, 0].mean():+.2f} pt (se {d[:, 0].std(ddof=1) / np.sqrt(len(d)):.2f}), "
              f"robust {d[:, 1].mean():+.2f} pt (se {d[:, 1].std(ddof=1) / np.sqrt(len(d)):.2f}); "
              f"fp32 seed-to-seed sd: clean {seed_sd[0]:.2f} pt, robust {seed_sd[1]:.2f} pt")
    print(f"seconds: fp32 {seconds['fp32']:.1f}, bf16 {seconds['bf16']:.1f} (ratio fp32/bf16 {seconds['fp32'] / seconds['bf16']:.2f})")


if __name__ == "__main__":
    main()
