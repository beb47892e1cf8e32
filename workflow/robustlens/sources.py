"""Pretrained model sources: RobustBench, timm and checkpoint URLs (the robust ImageNet models of
Salman et al. 2020, "Do Adversarially Robust ImageNet Models Transfer Better?").

Each source has two functions: ``build_<source>(spec)``, the freshly initialised architecture
(no weights, no network: what a workflow checkpoint is loaded into), and
``load_<source>(spec)``, the model filled from the source's own weights file at
``spec["weights"]`` (placed there by the workflow's fetch rules or by hand). Every model comes
back wrapped in :class:`robustlens.modules.WrappedModel`: inputs in [0, 1], ``forward_features``,
``head``, block layers from ``spec["layers"]``.

robustbench is imported lazily, only by the RobustBench functions, through
:func:`import_robustbench`, which works around two packaging faults of robustbench 1.1.1: it
imports the module ``autoattack`` while its PyPI dependency ``pyautoattack`` installs the module
``pyautoattack`` (the shim registers ``pyautoattack`` under the name ``autoattack`` when no real
``autoattack`` is installed), and it imports ``pkg_resources`` (gone from setuptools 81 on).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from robustlens.checkpoints import ChecksumError, verify_sha256
from robustlens.config import URL_ARCHITECTURES
from robustlens.download import fetch, record_sha256
from robustlens.modules import WrappedModel

#: Input normalisation of each dataset the zoo's checkpoints were trained on.
NORMALIZATION = {
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
    "cifar100": ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
}
#: torchvision architectures a ``url`` checkpoint can hold, with their block layers.
TORCHVISION_LAYERS = {name: ["layer1", "layer2", "layer3", "layer4"] for name in URL_ARCHITECTURES}
#: Globals a ``url`` checkpoint may contain besides tensors, allowed when it is read with
#: ``weights_only=True``: the robustness library saves its argparse options with the weights.
ALLOWED_GLOBALS = [argparse.Namespace]
#: Key prefixes of the robustness library's checkpoints (Engstrom et al. 2019, used by Salman
#: et al.): ``module.model.`` holds the classifier, ``module.attacker.model.`` a second copy of
#: it inside the attacker, ``module.normalizer.`` / ``module.attacker.normalize.`` the input
#: normalisation (``new_mean``, ``new_std``).
MADRY_MODEL_PREFIXES = ("module.model.", "model.", "module.")
MADRY_NORMALIZER_PREFIXES = ("module.normalizer.", "normalizer.")


def missing_file_error(spec: dict, what: str) -> FileNotFoundError:
    path = Path(spec["weights"])
    check = f" (sha256 {spec['sha256']})" if spec.get("sha256") else ""
    return FileNotFoundError(
        f"model {spec['id']!r}: {what} not found at {path.resolve()}{check}. Run the workflow's fetch "
        f"rule with network access, or place the file there by hand."
    )


def _checked_weights(spec: dict, what: str) -> Path:
    path = Path(spec["weights"])
    if not path.is_file():
        raise missing_file_error(spec, what)
    if spec.get("sha256"):
        verify_sha256(path, spec["sha256"])
    return path


# --------------------------------------------------------------------------- RobustBench


def import_robustbench():
    """``robustbench.utils``, imported with the packaging workarounds (see the module docstring)."""
    try:
        importlib.import_module("autoattack")
    except ModuleNotFoundError:
        try:
            shim = importlib.import_module("pyautoattack")
            state = importlib.import_module("pyautoattack.state")
        except ModuleNotFoundError:
            raise ImportError(
                "robustbench needs AutoAttack: `pip install pyautoattack` (installs the module "
                "`pyautoattack`, which robustlens registers as `autoattack`)"
            ) from None
        sys.modules.setdefault("autoattack", shim)
        sys.modules.setdefault("autoattack.state", state)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("pkg_resources")
    except ModuleNotFoundError:
        raise ImportError("robustbench 1.1.1 imports pkg_resources: `pip install 'setuptools<81'`") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("robustbench.utils")


def robustbench_entry(spec: dict) -> dict:
    """RobustBench's model-zoo entry of ``spec`` (its constructor and Google Drive id)."""
    rb = import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    zoo = rb.all_models[BenchmarkDataset(spec["dataset"])][ThreatModel(spec["threat_model"])]
    if spec["name"] not in zoo:
        raise ValueError(f"model {spec['id']!r}: {spec['name']!r} is not in RobustBench's {spec['dataset']} {spec['threat_model']} zoo")
    return zoo[spec["name"]]


def robustbench_weights(model_dir: str, name: str, dataset: str, threat_model: str) -> str:
    """Where robustbench's ``load_model(model_dir=...)`` looks for a checkpoint."""
    return str(Path(model_dir) / dataset / threat_model / f"{name}.pt")


def build_robustbench(spec: dict) -> nn.Module:
    entry = robustbench_entry(spec)
    return WrappedModel(entry["model"](), spec.get("layers", []), spec.get("head"))


def load_robustbench(spec: dict) -> nn.Module:
    """Through robustbench's own ``load_model`` with ``model_dir`` = ``spec["model_dir"]``; the
    file must be there already (robustbench would otherwise try Google Drive)."""
    _checked_weights(spec, "RobustBench checkpoint")
    rb = import_robustbench()
    model = rb.load_model(spec["name"], model_dir=spec["model_dir"], dataset=spec["dataset"], threat_model=spec["threat_model"])
    return WrappedModel(model, spec.get("layers", []), spec.get("head"))


def fetch_robustbench(spec: dict) -> None:
    """Download a RobustBench checkpoint from Google Drive (robustbench's gdown), atomically."""
    gdrive_id = robustbench_entry(spec)["gdrive_id"]
    if not isinstance(gdrive_id, str):
        raise ValueError(f"model {spec['id']!r}: ensembles of RobustBench checkpoints are not supported")
    dest = Path(spec["weights"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        import gdown

        gdown.download(id=gdrive_id, output=str(part), resume=True)
    except Exception as err:
        raise missing_file_error(spec, f"RobustBench checkpoint (Google Drive id {gdrive_id}; download failed: {err})") from err
    if spec.get("sha256"):
        verify_sha256(part, spec["sha256"])
    part.replace(dest)


# --------------------------------------------------------------------------- timm


def _timm_name(spec: dict) -> str:
    return f"{spec['name']}.{spec['tag']}"


def _timm_wrap(model: nn.Module, spec: dict) -> nn.Module:
    cfg = model.pretrained_cfg
    head = [name for name, m in model.named_modules() if m is model.get_classifier()]
    return WrappedModel(model, spec.get("layers", []), head[0] if head else None, list(cfg["mean"]), list(cfg["std"]))


def build_timm(spec: dict) -> nn.Module:
    import timm

    return _timm_wrap(timm.create_model(_timm_name(spec), pretrained=False), spec)


def load_timm(spec: dict) -> nn.Module:
    """``timm.create_model(name.tag, pretrained=True)`` reading the local file through timm's
    ``pretrained_cfg_overlay=dict(file=...)``. A ``.safetensors`` file is safe by format; any
    other file is first read with ``weights_only=True`` (timm itself reads it without)."""
    import timm

    path = _checked_weights(spec, "timm weights")
    if path.suffix != ".safetensors":
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ChecksumError(f"{path}: cannot be read as a checkpoint with weights_only=True ({type(exc).__name__}: {exc})") from exc
    model = timm.create_model(_timm_name(spec), pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    return _timm_wrap(model, spec)


def timm_url(spec: dict) -> str:
    """The download address of a timm model's pinned pretrained tag (Hugging Face hub or URL)."""
    if spec.get("url"):
        return spec["url"]
    import timm

    cfg = timm.models.get_pretrained_cfg(_timm_name(spec))
    if cfg is None:
        raise ValueError(f"model {spec['id']!r}: timm knows no pretrained tag {_timm_name(spec)!r}")
    if cfg.hf_hub_id:
        return f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
    return cfg.url


# --------------------------------------------------------------------------- checkpoint URL


def build_url(spec: dict) -> nn.Module:
    import torchvision

    arch = spec["arch"]["name"]
    if arch not in TORCHVISION_LAYERS:
        raise ValueError(f"model {spec['id']!r}: architecture {arch!r} is not one of {sorted(TORCHVISION_LAYERS)}")
    if arch == "wide_resnet50_4":
        from torchvision.models.resnet import Bottleneck, ResNet

        backbone = ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=64 * 4, num_classes=spec["arch"]["num_classes"])
    else:
        backbone = getattr(torchvision.models, arch)(weights=None, num_classes=spec["arch"]["num_classes"])
    mean, std = NORMALIZATION.get(spec.get("dataset", "imagenet"), NORMALIZATION["imagenet"])
    return WrappedModel(backbone, TORCHVISION_LAYERS[arch], "fc", mean, std)


def read_url_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path`` read with ``weights_only=True`` and :data:`ALLOWED_GLOBALS`."""
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, or a global outside the allow-list
        raise ChecksumError(
            f"{path}: cannot be read as a checkpoint with weights_only=True ({type(exc).__name__}: {exc}). "
            f"A truncated download: delete it and fetch again."
        ) from exc


def split_madry_checkpoint(checkpoint: dict) -> tuple[dict, dict]:
    """(classifier state dict, normaliser buffers) of a robustness-library checkpoint, or of a
    plain state dict: takes ``model`` or ``state_dict`` when present, keeps the keys under the
    first prefix of :data:`MADRY_MODEL_PREFIXES` found (stripped), drops the attacker's copy."""
    state = checkpoint
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    normalizer = {}
    for prefix in MADRY_NORMALIZER_PREFIXES:
        for buffer in ("new_mean", "new_std"):
            if prefix + buffer in state:
                normalizer[buffer] = state[prefix + buffer]
    keys = [k for k in state if "attacker." not in k and not k.startswith(MADRY_NORMALIZER_PREFIXES)]
    for prefix in MADRY_MODEL_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return {k[len(prefix):]: state[k] for k in keys}, normalizer
    return {k: state[k] for k in keys}, normalizer


def load_url(spec: dict) -> nn.Module:
    """A torchvision architecture filled from a downloaded checkpoint (robustness-library
    format or plain state dict), with its own normalisation buffers when it has them."""
    path = _checked_weights(spec, "checkpoint")
    weights, normalizer = split_madry_checkpoint(read_url_checkpoint(path))
    model = build_url(spec)
    head = {k[len("fc."):]: v for k, v in weights.items() if k.startswith("fc.")}
    body = {k: v for k, v in weights.items() if not k.startswith("fc.")}
    try:
        model.backbone.load_state_dict(body)
        model.head.load_state_dict(head)
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a {spec['arch']['name']} checkpoint: {exc}") from exc
    if normalizer:
        model.normalize.mean.copy_(normalizer["new_mean"].reshape(model.normalize.mean.shape))
        model.normalize.std.copy_(normalizer["new_std"].reshape(model.normalize.std.shape))
    return model


# --------------------------------------------------------------------------- dispatch


def fetch_weights(spec: dict, dest: str | Path) -> Path:
    """Make ``dest`` hold a zoo model's own weights file: RobustBench through its Google Drive
    id, timm from its pinned tag's address, ``url`` from the configured address. A configured
    ``sha256`` is verified; without one, the file's sha256 is printed and written beside it."""
    if spec["source"] == "robustbench":
        fetch_robustbench(spec)
        if not spec.get("sha256"):
            record_sha256(spec["weights"])
        return Path(spec["weights"])
    url = timm_url(spec) if spec["source"] == "timm" else spec["url"]
    return fetch(url, dest, spec.get("sha256"))

BUILDERS = {"robustbench": build_robustbench, "timm": build_timm, "url": build_url}
LOADERS = {"robustbench": load_robustbench, "timm": load_timm, "url": load_url}
