"""Model sources and architectures.

``load_model(spec)`` turns one resolved ``models:`` entry of the config into a torch module in
eval mode. Sources: ``train`` (the in-workflow adversarial training: the SmallCNN of the
embedded study, the CIFAR-style ResNet-18 of the universality study of Klabunde, Caspari and
Lemmerich), ``robustbench``, ``timm`` and ``url`` (the robust ImageNet checkpoints of Salman et
al. 2020), the last three in :mod:`robustlens.sources`. Every architecture takes inputs in
[0, 1] and normalises them itself, exposes its penultimate representation through
``forward_features`` and its linear classifier as ``head`` (so heads can be retrained and
representations probed the same way for every source); see :mod:`robustlens.modules`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from robustlens.checkpoints import load_state_dict
from robustlens.jobs import read_json
from robustlens.modules import LOGITS, PENULTIMATE, InputNormalization, RepresentationModel  # noqa: F401 (re-exported)
from robustlens.resnet import CifarResNet18, ImageNetResNet
from robustlens.sources import BUILDERS, LOADERS


def conv_block(c_in: int, c_out: int, n_convs: int) -> nn.Sequential:
    """``n_convs`` times (3x3 conv, batch norm, ReLU); the first conv maps c_in to c_out."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=False),
        ]
    return nn.Sequential(*layers)


class SmallCNN(RepresentationModel):
    """A small all-3x3 CNN: blocks of 3x3 convolutions with 2x2 max pooling between blocks,
    global average pooling (the penultimate representation) and one linear head.

    With ``widths=[16, 32, 64, 64]`` and ``convs_per_block=2`` it has 8 convolution layers, so
    the filter analysis has enough depth for depth bins (Gavrikov & Keuper).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: list[int],
        convs_per_block: int = 2,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ):
        super().__init__()
        self.normalize = InputNormalization(mean or [0.5] * in_channels, std or [0.5] * in_channels)
        self.block_names = [f"block{i + 1}" for i in range(len(widths))]
        c_in = in_channels
        for name, width in zip(self.block_names, widths):
            self.add_module(name, conv_block(c_in, width, convs_per_block))
            c_in = width
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(c_in, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation g(x): globally average-pooled last block."""
        h = self.normalize(x)
        for i, name in enumerate(self.block_names):
            if i > 0:
                h = self.pool(h)
            h = getattr(self, name)(h)
        return h.mean(dim=(2, 3))


ARCHITECTURES = {
    "smallcnn": SmallCNN,
    "resnet18_cifar": CifarResNet18,
    "resnet18": functools.partial(ImageNetResNet, "resnet18"),
    "resnet50": functools.partial(ImageNetResNet, "resnet50"),
}


def build_architecture(arch: dict) -> nn.Module:
    """A freshly initialised network from an ``arch`` spec: ``{name: ..., **kwargs}``."""
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    try:
        cls = ARCHITECTURES[arch["name"]]
    except KeyError:
        raise ValueError(f"unknown architecture {arch['name']!r}; known: {sorted(ARCHITECTURES)}") from None
    return cls(**kwargs)


def build_model(spec: dict) -> nn.Module:
    """A freshly initialised network of any source's architecture (no weights are read)."""
    source = spec.get("source", "train")
    if source == "train":
        return build_architecture(spec["arch"])
    return _source_function(BUILDERS, spec)(spec)


def _source_function(table: dict, spec: dict):
    try:
        return table[spec["source"]]
    except KeyError:
        raise ValueError(f"model {spec.get('id')!r}: source {spec['source']!r} is not one of train, {', '.join(table)}") from None


def load_model(spec: dict, checkpoint: str | Path | None = None, sha256: str | None = None) -> nn.Module:
    """The network one resolved ``models:`` entry describes, in eval mode.

    With ``checkpoint`` (what the workflow's model rules write, for every source): the
    architecture is built and filled from that state dict, read with
    ``torch.load(weights_only=True)`` after verifying ``sha256`` when given. Without it:
    ``source: train`` reads ``spec["checkpoint"]``; the other sources read their own weights
    file at ``spec["weights"]`` through the source's loader (RobustBench's ``load_model``,
    timm's ``pretrained_cfg_overlay``, the robustness-library checkpoint format).
    """
    source = spec.get("source", "train")
    path = checkpoint or (spec.get("checkpoint") if source == "train" else None)
    if path is None and source == "train":
        raise ValueError(f"model {spec.get('id')!r}: no checkpoint path given")
    if path is None:
        return _source_function(LOADERS, spec)(spec).eval()
    model = build_model(spec)
    model.load_state_dict(load_state_dict(path, sha256=sha256))
    return model.eval()


def recorded_sha256(metrics: str | Path) -> str:
    """The sha256 of a workflow checkpoint, as its model rule (``train_model``, ``zoo_model``)
    recorded it in the model's metrics file when it wrote the checkpoint."""
    return read_json(metrics)["sha256"]


def load_workflow_model(spec: dict, checkpoint: str | Path, metrics: str | Path) -> nn.Module:
    """The model of ``spec`` from the checkpoint a model rule wrote, verified against the sha256
    that rule recorded in ``metrics`` (:func:`recorded_sha256`) before it is read: what every
    job downstream of the model rules loads."""
    return load_model(spec, checkpoint, sha256=recorded_sha256(metrics))
