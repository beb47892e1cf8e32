"""What each paper config costs at full scale: jobs per rule (a dry run of the real workflow),
disk of its artifacts, the memory the rules declare, and an *estimate* of GPU hours.

Disk and memory come from the same functions the rules use (robustlens.resources, the config's
image counts and sizes); GPU hours are forward FLOPs per image (published counts, below) times
the passes each stage makes, divided by an assumed sustained float32 throughput. They are an
estimate until measured on a GPU (this code has not run on one yet).

Usage: .venv/bin/python benchmarks/paper_scale.py > benchmarks/paper-scale.md
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from robustlens import resources as rs
from robustlens.config import dataset_shape, dataset_task_images, deep_update, expand_models, n_test_images, n_train_images, select_pairs
from robustlens.tasks import DATASET_TASKS, parse_task

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["cifar10-universality", "imagenet-universality", "imagenet-transfer", "robustbench-filters", "imagenet100-universality"]
#: Forward GFLOPs (multiply-adds x 2) per image at the config's image size: torchvision's model
#: docs (ResNet-18 1.82 GFLOPS, ResNet-50 4.09 at 224 px), He et al. 2016's CIFAR ResNet-18
#: (0.56 at 32 px), Zagoruyko & Komodakis 2016 (WRN-28-10 5.25 at 32 px), Gowal et al. 2020
#: (WRN-70-16 38.8), PreAct/ResNet-18 as ResNet-18, ResNet-50 at 32 px scaled by pixels.
GFLOPS = {"resnet18_cifar": 0.56, "resnet18": 1.82 * 2, "resnet50": 4.09 * 2,
          "robustbench:Standard": 5.25 * 2, "robustbench:Rebuffi2021Fixing_28_10_cutmix_ddpm": 5.25 * 2,
          "robustbench:Gowal2020Uncovering": 38.8 * 2, "robustbench:Engstrom2019Robustness": 1.3 * 2,
          "robustbench:Augustin2020Adversarial": 1.3 * 2, "robustbench:Rice2020Overfitting": 0.56 * 2,
          "robustbench:Sehwag2021Proxy_R18": 0.56 * 2}
#: Assumed sustained float32 throughput of one A100-class GPU: half of its 19.5 TFLOPS peak
#: (deterministic float32, no TF32), in FLOP/s.
THROUGHPUT = 0.5 * 19.5e12
#: A backward pass (to the input and the weights) costs about twice a forward pass.
FWD_BWD = 3
#: Measured on one NVIDIA H200 (2026-12-04, benchmarks/gpu_throughput.py, batch 128): TFLOP/s
#: of a forward and backward pass in robustlens' settings (float32, deterministic, no TF32).
#: Architectures not measured there keep THROUGHPUT.
MEASURED_H200 = {"resnet18_cifar": 9.7e12, "resnet18": 24.8e12, "resnet50": 18.3e12}
#: The same H200 run's "plain" settings (cuDNN autotuning, TF32 products), forward and backward
#: images/s (resnet18_cifar 15781, resnet18 4779, resnet50 2051) as FLOP/s.
MEASURED_H200_TF32 = {"resnet18_cifar": 15781 * 0.56e9 * 3, "resnet18": 4779 * 3.64e9 * 3, "resnet50": 2051 * 8.18e9 * 3}
#: Mixed precision over TF32 for ResNet-50 training on one A100 80GB: 2470 against 938 img/s
#: (NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md at
#: 291f0d0, "Training performance: NVIDIA DGX A100", 1 GPU; fp16 AMP, taken for bf16, which runs
#: on the same tensor cores at the same peak).
AMP_OVER_TF32 = 2470 / 938
#: TF32 over robustlens' deterministic float32 for networks not measured: the H200 run's
#: smallest ratio of the three measured (resnet50 2051 / 747 img/s is 2.7, resnet18 2.1).
TF32_OVER_FP32 = 2.1
#: Stages that run under bf16 autocast with ``precision: bf16`` (training and extraction forward
#: passes); evaluation attacks, probes and transfer stay float32.
BF16_STAGES = ("train", "activations")


def merged(name: str) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    return deep_update(config, yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text()))


def planned_jobs(name: str) -> tuple[dict[str, int], dict[str, int]]:
    """(jobs per rule, largest declared mem_mb per rule) of a dry run of the full config."""
    with tempfile.TemporaryDirectory() as workdir:
        out = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-n", "--snakefile", str(REPO / "Snakefile"),
                              "--directory", workdir, "--configfile", str(REPO / "configs" / f"{name}.yaml")],
                             capture_output=True, text=True, check=True).stdout
    jobs, memory, rule = {}, {}, None
    for line in out.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = m.group(1)
        elif rule and (m := re.search(r"\bmem_mb=(\d+)", line)):
            memory[rule] = max(memory.get(rule, 0), int(m.group(1)))
    for line in out.split("Job stats:", 1)[1].splitlines()[3:]:
        if not (m := re.match(r"^(\w+)\s+(\d+)$", line.strip())):
            break
        jobs[m.group(1)] = int(m.group(2))
    jobs.pop("total", None)
    return jobs, memory


def gflops(spec: dict, size: int) -> float:
    """Forward GFLOPs (FLOPs / 1e9) of one image; torchvision ResNets scale with pixels."""
    name = spec["arch"]["name"]
    base = GFLOPS[name]
    return base * (size / 224) ** 2 if name in ("resnet18", "resnet50") else base


def task_sizes(task: str, transfer: dict, n_test: int) -> tuple[int, int]:
    """(training, test) images of a transfer task: a dataset source's own splits (capped); the
    held-out split (both counted whole, an upper bound) for held-out and sprite tasks."""
    source = parse_task(task)["source"]
    if source not in DATASET_TASKS:
        return n_test, n_test
    return dataset_task_images(source, transfer["task_settings"].get(source, {}))


def estimate(name: str) -> dict:
    config = merged(name)
    models = expand_models(config)
    pairs = select_pairs(models, config["comparison"]["pairs"])
    in_pairs = {m for p in pairs for m in p}
    size, channels = config["dataset"]["image_size"], dataset_shape(config["dataset"])["in_channels"]
    n_train, n_test = n_train_images(config["dataset"]), n_test_images(config["dataset"])
    ev, probes, tr = config["evaluation"], config["probes"], config["transfer"]
    flops = {"train": 0.0, "evaluate": 0.0, "probes": 0.0, "activations": 0.0, "transfer": 0.0}
    h200_seconds = dict.fromkeys(flops, 0.0)
    bf16_seconds = dict.fromkeys(flops, 0.0)
    n_inverted = min(n_test, probes["inverted"]["n_samples"])
    for mid, spec in models.items():
        before = dict(flops)
        f = gflops(spec, size) * 1e9
        if spec["source"] == "train":
            t = config["training"]
            val = t.get("validation") or {}
            n_val = max(1, round(val["fraction"] * n_train)) if val else 0
            flops["train"] += t["epochs"] * (n_train - n_val) * (1 + t["attack_steps"] * (spec["eps"] > 0)) * FWD_BWD * f
            if val:  # clean and robust validation (the training attack) every `every` epochs and at the last
                every = val.get("every", 1)
                validations = t["epochs"] // every + (t["epochs"] % every != 0)
                flops["train"] += validations * n_val * (1 + t["attack_steps"] * FWD_BWD * (spec["eps"] > 0)) * f
        flops["evaluate"] += n_test * (1 + len(ev["eps"]) * ev["steps"] * ev["restarts"]) * FWD_BWD * f
        flops["activations"] += n_test * f
        if mid in in_pairs:
            flops["probes"] += (n_test * probes["adversarial"]["steps"] + n_inverted * probes["inverted"]["iterations"]) * FWD_BWD * f
            flops["activations"] += (n_train + n_test) * f  # retrained heads: features of both splits
        if spec["seed"] in tr["seeds"]:
            attacks = sum(b["as_attack"]["steps"] * (1 + b["as_attack"]["restarts"]) + b["loss_attack"]["steps"] * (1 + b["loss_attack"]["restarts"])
                          for b in tr["attacks"]["bounds"]) + tr["attacks"]["robust_accuracy"]["steps"]
            for task in tr["tasks"]:
                n_fit, n_eval = task_sizes(task, tr, n_test)
                # FT and LP-FT train every weight; LP extracts the features once; at the model's
                # input size (tasks are resized to it on the device); LP, FT and LP-FT attacked
                per_task = (tr["ft"]["epochs"] + tr["lp_ft"]["epochs"]) * n_fit * FWD_BWD + n_fit
                per_task += 3 * n_eval * attacks * FWD_BWD
                flops["transfer"] += per_task * f
        rate = MEASURED_H200.get(spec["arch"]["name"], THROUGHPUT)
        bf16_rate = AMP_OVER_TF32 * MEASURED_H200_TF32.get(spec["arch"]["name"], TF32_OVER_FP32 * rate)
        for stage in flops:
            h200_seconds[stage] += (flops[stage] - before[stage]) / rate
            bf16_seconds[stage] += (flops[stage] - before[stage]) / (bf16_rate if stage in BF16_STAGES else rate)
    checkpoints_gb = sum(rs.model_mb(s["arch"]) if s["source"] == "train" else 4 * 1e3 * gflops(s, 224) / 8 for s in models.values()) / 1e3
    return {"config": name, "models": len(models), "pairs": len(pairs), "n_train": n_train, "n_test": n_test,
            "dataset_gb": (n_train * (config["dataset"].get("train_image_size") or size) ** 2 + n_test * size * size) * channels / 1e9,  # uint8
            "probe_images_gb": len(in_pairs) * (n_test + n_inverted) * channels * size * size * 4 / 1e9,
            "gpu_hours": {k: v / THROUGHPUT / 3600 for k, v in flops.items()},
            "h200_hours": {k: v / 3600 for k, v in h200_seconds.items()},
            "bf16_hours": {k: v / 3600 for k, v in bf16_seconds.items()}, "jobs": planned_jobs(name)}


#: Rules whose declared memory grows with the size of inputs that a dry run does not have yet
#: (stores, checkpoints, task files): the dry run shows their floor.
INPUT_SIZED = {"compare_similarity", "similarity_matrix", "compare_predictive", "filters_tables", "transfer",
               "extract_natural", "make_probe", "retrain_heads", "extract_filters", "zoo_model"}


def main() -> None:
    print("# Paper-scale cost of each config\n")
    print("Made by `benchmarks/paper_scale.py` (see its docstring for the arithmetic and the cited FLOP")
    print("counts). GPU hours are **estimates**: forward FLOPs x passes / 9.75 TFLOP/s sustained float32 on")
    print("one A100-class GPU, and, in the second column, / the TFLOP/s measured for the same networks on")
    print("one H200 in robustlens' deterministic float32 (benchmarks/gpu_throughput.py; architectures not")
    print("measured there keep 9.75). No paper config has run at full scale. Checkpoint sizes of")
    print("zoo models are not estimated here (download sizes: ResNet-18 45 MB, ResNet-50 98 MB (robustness")
    print("library files hold two copies: about twice that), WRN-28-10 146 MB, WRN-70-16 1.07 GB).")
    print("The third column is `precision: bf16, deterministic: false` on the same H200: training and")
    print("extraction at the H200's measured TF32 rate times NVIDIA's mixed-precision speed-up over TF32 for")
    print("ResNet-50 training (2470 / 938 img/s on an A100, DeepLearningExamples; see the script), the other")
    print("stages at the float32 rate; an estimate twice over (the speed-up is another card's and fp16's).\n")
    for name in CONFIGS:
        e = estimate(name)
        hours = e["gpu_hours"]
        print(f"## {name}\n")
        print(f"{e['models']} models, {e['pairs']} compared pairs, {e['n_train']} training and {e['n_test']} test images.\n")
        h200, bf16 = e["h200_hours"], e["bf16_hours"]
        print("| stage | GPU hours at 9.75 TFLOP/s (estimate) | H200 hours at measured TFLOP/s, fp32 (estimate) | H200 hours, bf16 (estimate) |\n|---|---|---|---|")
        for stage, h in hours.items():
            print(f"| {stage} | {h:.1f} | {h200[stage]:.1f} | {bf16[stage]:.1f} |")
        print(f"| **total** | **{sum(hours.values()):.1f}** | **{sum(h200.values()):.1f}** | **{sum(bf16.values()):.1f}** |\n")
        print(f"Disk: dataset cache {e['dataset_gb']:.2f} GB (uint8); probe images {e['probe_images_gb']:.2f} GB (float32).\n")
        jobs, memory = e["jobs"]
        print("| rule | jobs | declared mem_mb per job |\n|---|---|---|")
        for rule, n in sorted(jobs.items()):
            mem = memory.get(rule)
            text = "-" if mem is None else (f"{mem} + inputs" if rule in INPUT_SIZED else str(mem))
            print(f"| {rule} | {n} | {text} |")
        print()


if __name__ == "__main__":
    main()
