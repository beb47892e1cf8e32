"""Model files for the config rehearsals, each in its source's real on-disk format with its own
random weights (nothing here can be downloaded):

- robustness-library checkpoints (Engstrom et al. 2019; the robust ImageNet models of Salman et
  al. 2020): ``{"model": <AttackerModel state dict under DataParallel>, "epoch", "args"}`` with
  ``module.model.``, ``module.attacker.model.`` and normaliser prefixes;
- RobustBench checkpoints: ``{"state_dict": <DataParallel state dict>}`` at
  ``<model_dir>/<dataset>/<threat_model>/<name>.pt``, where ``robustbench.utils.load_model``
  looks;
- a timm safetensors file at the path robustlens' timm loader reads.

Each network's batch-norm running statistics are set from its own activations on random inputs
(:func:`calibrate_batch_norm`), as training leaves them: with the default statistics (mean 0,
variance 1) a random ResNet-50's activations grow block by block until its logits overflow, and
fine-tuning it gives NaN losses, a property of the stand-in that no trained checkpoint has.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


@torch.no_grad()
def calibrate_batch_norm(net: torch.nn.Module, image_size: int = 32, batches: int = 4, batch_size: int = 16) -> torch.nn.Module:
    """Running means and variances of every batch-norm layer set to the averages over
    ``batches`` random normal batches (momentum None: a cumulative average); weights unchanged."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    for _ in range(batches):
        net(torch.randn(batch_size, 3, image_size, image_size))
    for m in norms:
        m.momentum = 0.1
    return net.eval()


def robustness_library_checkpoint(net: torch.nn.Module, arch: str, eps: float, seed: int) -> dict:
    """The dict the robustness library saves: classifier and attacker copies, normaliser
    buffers (ImageNet's mean and std), epoch and its argparse options."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    state = {"module.normalizer.new_mean": mean, "module.normalizer.new_std": std,
             "module.attacker.normalize.new_mean": mean, "module.attacker.normalize.new_std": std}
    for key, value in net.state_dict().items():
        state[f"module.model.{key}"] = value
        state[f"module.attacker.model.{key}"] = value.clone()
    return {"model": state, "epoch": 90, "args": argparse.Namespace(arch=arch, eps=eps, constraint="2", seed=seed)}


def make_url_checkpoint(path: str | Path, arch: str, eps: float, seed: int) -> Path:
    """A robustness-library checkpoint of a torchvision ``arch`` (1000 classes) at ``path``."""
    import torchvision

    torch.manual_seed(seed)
    net = calibrate_batch_norm(getattr(torchvision.models, arch)(weights=None, num_classes=1000))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(robustness_library_checkpoint(net, arch, eps, seed), path)
    return path


def make_robustbench_checkpoint(model_dir: str | Path, name: str, dataset: str = "cifar10", threat_model: str = "L2", seed: int = 0) -> Path:
    """RobustBench's checkpoint of model ``name`` (its own architecture, random weights)."""
    from robustlens.sources import import_robustbench, robustbench_weights

    rb = import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(seed)
    net = calibrate_batch_norm(rb.all_models[BenchmarkDataset(dataset)][ThreatModel(threat_model)][name]["model"]())
    path = Path(robustbench_weights(str(model_dir), name, dataset, threat_model))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


def make_timm_safetensors(path: str | Path, name: str, tag: str, seed: int = 0) -> Path:
    """timm's ``name.tag`` with random weights, saved as safetensors."""
    import safetensors.torch
    import timm

    torch.manual_seed(seed)
    net = calibrate_batch_norm(timm.create_model(f"{name}.{tag}", pretrained=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(net.state_dict(), str(path))
    return path
