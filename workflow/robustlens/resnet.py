"""The ResNets trained in the workflow: the CIFAR-style ResNet-18 of the universality study
(Klabunde, Caspari, Lemmerich) at L2 eps 0, 0.25, 0.5, 1, 2, 3, and torchvision's ImageNet
ResNet-18 / ResNet-50 (:class:`ImageNetResNet`) for its ImageNet-100 models.

The architecture of the robustness library (Engstrom et al. 2019) the robust CIFAR-10 models
of Salman et al. 2020 and the universality paper come from: a 3x3 stem convolution (no max
pooling, for 32x32 inputs), four stages of two basic blocks (``layer1..layer4``, widths
64/128/256/512 by default, stride 2 from the second stage on), global average pooling (the
penultimate representation) and one linear ``head``. Inputs are in [0, 1]; the normalisation
is the model's first module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.modules import InputNormalization, RepresentationModel, WrappedModel


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(RepresentationModel):
    """ResNet-18 for 32x32 inputs (see the module docstring); ``widths`` are the four stage
    widths and ``convs_per_block`` must be 2 (a basic block has two convolutions)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: list[int] = (64, 128, 256, 512),
        convs_per_block: int = 2,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ):
        super().__init__()
        if len(widths) != 4 or convs_per_block != 2:
            raise ValueError(f"resnet18_cifar needs 4 stage widths and convs_per_block 2, got {list(widths)}, {convs_per_block}")
        self.normalize = InputNormalization(mean or [0.5] * in_channels, std or [0.5] * in_channels)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.block_names = [f"layer{i + 1}" for i in range(4)]
        c_in = widths[0]
        for i, (name, width) in enumerate(zip(self.block_names, widths)):
            stride = 1 if i == 0 else 2
            self.add_module(name, nn.Sequential(BasicBlock(c_in, width, stride), BasicBlock(width, width, 1)))
            c_in = width
        self.head = nn.Linear(c_in, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation g(x): globally average-pooled ``layer4``."""
        h = F.relu(self.bn1(self.conv1(self.normalize(x))))
        for name in self.block_names:
            h = getattr(self, name)(h)
        return h.mean(dim=(2, 3))


#: ImageNet's input normalisation (torchvision's and the robustness library's).
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
#: Stage widths of the torchvision ResNets (fixed: the ``architecture.widths`` a config gives
#: them must be these).
TORCHVISION_WIDTHS = (64, 128, 256, 512)


class ImageNetResNet(WrappedModel):
    """torchvision's ResNet-18 or ResNet-50 (7x7 stride-2 stem and max pooling, for ImageNet-size
    inputs), freshly initialised, as a model trained in the workflow (the ImageNet-100 models of
    the universality study): block layers ``layer1..layer4``, the ``fc`` classifier as ``head``,
    ImageNet's normalisation inside. The same modules as a ``url`` checkpoint of that
    architecture, so either loads into the other."""

    def __init__(self, depth: str, in_channels: int, num_classes: int, widths=TORCHVISION_WIDTHS, convs_per_block: int = 2,
                 mean: list[float] | None = None, std: list[float] | None = None):
        import torchvision

        if tuple(widths) != TORCHVISION_WIDTHS or in_channels != 3:
            raise ValueError(f"{depth} has stage widths {list(TORCHVISION_WIDTHS)} and 3 input channels, got {list(widths)}, {in_channels}")
        backbone = getattr(torchvision.models, depth)(weights=None, num_classes=num_classes)
        super().__init__(backbone, ["layer1", "layer2", "layer3", "layer4"], "fc", mean or IMAGENET_MEAN, std or IMAGENET_STD)
