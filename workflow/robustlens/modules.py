"""Building blocks every architecture of the zoo shares: the input normalisation, the names of
the two representation layers every model has, and the wrapper that gives any backbone (a
RobustBench, timm or torchvision network) the interface the pipeline uses.

The interface (what ``zoo.SmallCNN`` has and every other model must have): inputs in [0, 1]
with the normalisation inside the model; ``forward_features(x)``, the penultimate
representation g(x); ``head``, the final ``nn.Linear`` (so ``forward(x) = head(g(x))``, and
heads can be replaced, as in Nern et al.'s linear probing); ``block_names`` and
``representation_layers()``; ``representation_modules()``, the module whose output is each
block layer.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from robustlens.augment import CROPPING_AUGMENTS, augment_batch, resize, resize_center_crop

#: Names of the representation layers every model exposes, besides its block layers.
PENULTIMATE = "penultimate"
LOGITS = "logits"


class InputNormalization(nn.Module):
    """(x - mean) / std per channel, with mean and std stored as buffers in the checkpoint."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class RepresentationModel(nn.Module):
    """Base of every architecture of the zoo: ``forward(x) = head(forward_features(x))``, and the
    representation layers ``block_names`` + penultimate + logits. Subclasses define
    ``forward_features``, ``head`` and ``block_names``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def representation_layers(self) -> list[str]:
        """Layers whose outputs the activation store records, in forward order."""
        return [*self.block_names, PENULTIMATE, LOGITS]

    def block_module(self, name: str) -> nn.Module:
        return self.get_submodule(name)

    def representation_modules(self) -> dict[str, nn.Module]:
        """The module whose output is each block layer."""
        return {name: self.block_module(name) for name in self.block_names}


def find_head(backbone: nn.Module, head: str | None = None) -> str:
    """Module path of the backbone's classifier: ``head`` when given, else the last
    ``nn.Linear`` in registration order (``fc`` of ResNets, ``linear``/``logits`` of RobustBench
    networks)."""
    if head is not None:
        if not isinstance(backbone.get_submodule(head), nn.Linear):
            raise ValueError(f"head {head!r} is not an nn.Linear")
        return head
    linears = [name for name, m in backbone.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the backbone has no nn.Linear classifier")
    return linears[-1]


class WrappedModel(RepresentationModel):
    """Any classifier ``backbone`` whose last operation is the linear layer at ``head_path``,
    with that layer moved out as ``self.head`` (replaced by ``nn.Identity`` inside the backbone),
    so ``forward_features`` is exactly the classifier's input and ``forward`` is unchanged.

    ``layers``: module paths inside the backbone recorded as block layers (e.g. ``layer1``).
    ``mean``/``std``: the input normalisation, when the backbone does not normalise itself
    (RobustBench models do; timm and torchvision models do not).
    """

    def __init__(
        self,
        backbone: nn.Module,
        layers: list[str],
        head_path: str | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ):
        super().__init__()
        self.normalize = InputNormalization(mean, std) if mean is not None else nn.Identity()
        head_path = find_head(backbone, head_path)
        self.head = backbone.get_submodule(head_path)
        backbone.set_submodule(head_path, nn.Identity())
        self.backbone = backbone
        self.block_names = list(layers)
        for name in self.block_names:
            backbone.get_submodule(name)  # fails early, naming the layer

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation g(x): the input of the classifier, flattened."""
        return self.backbone(self.normalize(x)).flatten(1)

    def block_module(self, name: str) -> nn.Module:
        return self.backbone.get_submodule(name)


#: How a task's images are brought to a model's input resolution at test time (and for the
#: frozen features of linear probing): ``resize`` (bilinear, to the model's size) or
#: ``resize_center_crop`` (torchvision's Resize(size / 0.875) then CenterCrop(size): Salman et
#: al.'s TEST_TRANSFORMS, microsoft/robust-models-transfer src/utils/constants.py).
INPUT_RESIZES = ("resize", "resize_center_crop")


class TaskInputModel(RepresentationModel):
    """``model`` fed a downstream task's images at the task's own resolution and channels: each
    input is brought to the model's ``size`` on the device (``resize``: one of INPUT_RESIZES),
    and 1-channel images are repeated to the model's ``channels``, inside the forward pass, so
    attacks perturb (and their eps measures) the task's own pixels and no upscaled copy of a
    dataset is ever stored. The head is moved out to ``self.head`` (``body`` keeps the feature
    extractor), so it can be replaced as on any model. Inputs already at ``size`` with
    ``resize="resize"`` pass unchanged (the model behaves exactly as ``model``)."""

    def __init__(self, model: RepresentationModel, size: int, channels: int, resize: str = "resize"):
        super().__init__()
        if resize not in INPUT_RESIZES:
            raise ValueError(f"input resize must be one of {INPUT_RESIZES}, got {resize!r}")
        body = copy.deepcopy(model)
        self.head = body.head
        body.head = nn.Identity()
        self.body = body
        self.size, self.channels, self.resize = int(size), int(channels), resize
        self.block_names = []

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.channels:
            return x
        if x.shape[1] == 1:
            return x.expand(-1, self.channels, -1, -1)
        raise ValueError(f"task images have {x.shape[1]} channels; the model takes {self.channels}")

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` at the model's resolution and channels (the test-time transform)."""
        x = self._channels(x)
        if self.resize == "resize":
            return x if x.shape[-2:] == (self.size, self.size) else resize(x, self.size)
        return resize_center_crop(x, self.size)

    def training_input(self, x: torch.Tensor, augment: str, gen: torch.Generator) -> torch.Tensor:
        """``x`` augmented for a training step: ``resized_crop_flip`` crops and resizes straight
        to the model's size (Salman et al.'s TRAIN_TRANSFORMS: RandomResizedCrop(size) and a
        flip); the other recipes augment at the task's size, then :meth:`model_input`."""
        x = self._channels(x)
        if augment in CROPPING_AUGMENTS:  # random resized crops, cut at the model's size
            return augment_batch(x, augment, gen, size=self.size)
        return self.model_input(augment_batch(x, augment, gen))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(self.model_input(x))

    def forward_training(self, x: torch.Tensor, augment: str, gen: torch.Generator) -> torch.Tensor:
        """Outputs on ``x`` augmented by :meth:`training_input` (fine-tuning steps)."""
        return self.head(self.body.forward_features(self.training_input(x, augment, gen)))
