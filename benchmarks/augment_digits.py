"""Does augmentation help the default digits study at equal training time?

Trains the default study's smallcnn (config.yaml's recipe) with ``augment: none`` and with
``crop_flip`` (and ``cifar``) for the same epochs (the augmentation itself costs < 1 % of an
epoch), at eps 0 and 1, seeds 0 and 1, and prints clean and robust test accuracy (L2 PGD-20, one
restart, eps 1) and the seconds each recipe took. Run: .venv/bin/python benchmarks/augment_digits.py
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import torch  # noqa: E402

from robustlens.config import load_config  # noqa: E402
from robustlens.data import prepare_dataset  # noqa: E402
from robustlens.runtime import configure_torch  # noqa: E402
from robustlens.train import train_and_evaluate  # noqa: E402


def main() -> None:
    configure_torch(1)
    config = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    data = prepare_dataset(config["dataset"])
    arch = {"name": "smallcnn", "in_channels": 1, "num_classes": 10, **{k: v for k, v in config["architecture"].items() if k != "name"}}
    evaluation = {**config["evaluation"], "eps": [1.0]}
    print("augment    eps  clean (mean of 2 seeds)  robust@1   seconds")
    for augment in ("none", "crop_flip", "cifar"):
        for eps in (0.0, 1.0):
            clean, robust, start = [], [], time.perf_counter()
            for seed in (0, 1):
                spec = {"id": f"{augment}-{eps}-{seed}", "arch": arch, "eps": eps, "norm": "l2", "seed": seed}
                training = {**config["training"], "augment": augment}
                _, m = train_and_evaluate(spec, data, training, evaluation, torch.device("cpu"), progress=False)
                clean.append(m["clean_accuracy"])
                robust.append(m["robust_accuracy"]["1.0"])
            print(f"{augment:10s} {eps:3.1f}  {sum(clean) / 2:.3f}                    {sum(robust) / 2:.3f}     {time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    main()
