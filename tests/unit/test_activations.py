"""Block-layer activations are the outputs of the model's own stages: compared with a forward
pass written out stage by stage, for both spatial reductions, in batches that do not divide n."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlens.activations import extract_activations
from robustlens.runtime import generator
from robustlens.zoo import build_architecture


@pytest.fixture(scope="module")
def resnet():
    """A narrow CIFAR ResNet-18 in eval mode with random batch-norm statistics (eval-mode batch
    norm is then not the identity, so a hook on the wrong side of a layer shows)."""
    torch.manual_seed(0)
    model = build_architecture({"name": "resnet18_cifar", "in_channels": 3, "num_classes": 5, "widths": [4, 6, 8, 10]})
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def stage_outputs(model, x):
    """The stem, the four stages, the pooled features and the head, applied in order by hand."""
    with torch.no_grad():
        h = F.relu(model.bn1(model.conv1(model.normalize(x))))
        out = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(model, name)(h)
            out[name] = h
        out["penultimate"] = h.mean(dim=(2, 3))
        out["logits"] = out["penultimate"] @ model.head.weight.T + model.head.bias
    return out


@pytest.mark.parametrize("spatial", ["avgpool", "flatten"])
def test_block_activations_are_the_stage_outputs(resnet, spatial):
    x = torch.rand(11, 3, 16, 16, generator=generator(0))
    layers = ["layer1", "layer2", "layer3", "layer4", "penultimate", "logits"]
    acts = extract_activations(resnet, x.numpy(), layers, spatial=spatial, batch_size=4, progress=False)
    expected = stage_outputs(resnet, x)
    shapes = {"layer1": (4, 16), "layer2": (6, 8), "layer3": (8, 4), "layer4": (10, 2)}
    for name in layers:
        e = expected[name]
        if e.dim() == 4:
            e = e.mean(dim=(2, 3)) if spatial == "avgpool" else e.flatten(1)
            c, side = shapes[name]
            assert acts[name].shape == ((11, c) if spatial == "avgpool" else (11, c * side * side))
        np.testing.assert_allclose(acts[name], e.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
        assert acts[name].dtype == np.float32


def test_torchvision_blocks_are_the_backbone_stages():
    """A torchvision ResNet-18 wrapped for the zoo: layer1..layer4 are the backbone's stages
    and the penultimate layer is the pooled input of its fc layer."""
    import torchvision

    from robustlens.modules import WrappedModel

    torch.manual_seed(1)
    net = torchvision.models.resnet18(num_classes=7).eval()
    x = torch.rand(3, 3, 32, 32, generator=generator(1))
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        stages = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(net, name)(h)
            stages[name] = h.mean(dim=(2, 3))
        logits = net(x)
    model = WrappedModel(net, ["layer1", "layer2", "layer3", "layer4"], "fc")
    acts = extract_activations(model, x, [*stages, "penultimate", "logits"], progress=False)
    for name, value in stages.items():
        np.testing.assert_allclose(acts[name], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(acts["penultimate"], stages["layer4"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["logits"], logits.numpy(), rtol=1e-5, atol=1e-5)


def test_target_stores_hold_each_targets_stage_outputs_on_the_same_images(resnet, tmp_path):
    """One store per target, each the target's own stage outputs on the shared probe images,
    with the labels along ``sample`` (coordinates 0..n-1); the index gives each store's checksum."""
    import copy

    from robustlens.activations import write_target_stores
    from robustlens.store import open_store, read_manifest, verify_store

    other = copy.deepcopy(resnet)
    with torch.no_grad():
        other.conv1.weight.mul_(-1.0)
    x = torch.rand(7, 3, 16, 16, generator=generator(5))
    labels = np.array([3, 1, 4, 1, 0, 2, 2])
    settings = {"layers": ["layer2", "logits"], "spatial": "flatten", "batch_size": 3}
    stores = tmp_path / "probe" / "source" / "stores"  # parents made as needed
    index = write_target_stores({"a": (resnet, {"m": "a"}), "b": (other, {"m": "b"})}, x.numpy(), labels,
                                str(stores), activations=settings, progress=False)
    assert sorted(index) == ["a", "b"] and sorted(p.name for p in stores.glob("*.zarr")) == ["a.zarr", "b.zarr"]
    for name, model in (("a", resnet), ("b", other)):
        ds = open_store(stores / f"{name}.zarr")
        manifest = read_manifest(stores / f"{name}.zarr")
        assert manifest["provenance"] == {"m": name} and manifest["layers"] == ["layer2", "logits"]
        expected = stage_outputs(model, x)
        np.testing.assert_allclose(ds["layer2"].values, expected["layer2"].flatten(1).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ds["logits"].values, expected["logits"].numpy(), rtol=1e-5, atol=1e-5)
        assert ds["layer2"].dims == ("sample", "layer2_unit")
        np.testing.assert_array_equal(ds["sample"].values, np.arange(7))
        np.testing.assert_array_equal(ds["label"].values, labels)
        assert ds["label"].dims == ("sample",)
        assert verify_store(stores / f"{name}.zarr")["checksum"] == index[name]
    assert not np.allclose(open_store(stores / "a.zarr")["layer2"].values, open_store(stores / "b.zarr")["layer2"].values)


def test_bad_reduction_and_sample_count_are_named():
    from robustlens.activations import activations_dataset, reduce_spatial

    with pytest.raises(ValueError, match="spatial must be one of.*'maxpool'"):
        reduce_spatial(torch.zeros(2, 3, 4, 4), "maxpool")
    with pytest.raises(ValueError, match="layer block1: 5 samples, labels have 4"):
        activations_dataset({"block1": np.zeros((5, 3))}, np.zeros(4))


def test_bf16_extraction_runs_the_layers_in_bfloat16_and_channels_last_changes_nothing(resnet):
    """precision bf16: the stage outputs equal a hand-run forward pass in bfloat16 (the model's
    weights and the input cast by hand, the independent oracle) to bf16 rounding, differ from
    fp32, and are stored as float32; channels_last gives the fp32 values."""
    x = torch.rand(9, 3, 16, 16, generator=generator(1))
    layers = ["layer1", "layer3", "penultimate", "logits"]
    fp32 = extract_activations(resnet, x.numpy(), layers, batch_size=4, progress=False)
    bf16 = extract_activations(resnet, x.numpy(), layers, batch_size=4, progress=False, precision="bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = stage_outputs(resnet, x)
    for name in layers:
        e = expected[name].float()
        e = e.mean(dim=(2, 3)) if e.dim() == 4 else e
        scale = float(np.abs(fp32[name]).max())
        assert bf16[name].dtype == np.float32
        np.testing.assert_allclose(bf16[name], e.numpy(), atol=2e-2 * scale, err_msg=name)
        assert np.abs(bf16[name] - fp32[name]).max() > 1e-4 * scale, name  # bf16 really ran
        assert np.abs(bf16[name] - fp32[name]).max() < 5e-2 * scale, name
    last = extract_activations(resnet, x.numpy(), layers, batch_size=4, progress=False, channels_last=True)
    for name in layers:
        np.testing.assert_allclose(last[name], fp32[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert all(p.is_contiguous() for p in resnet.parameters())  # the model is left in the default layout


def test_configure_torch_switches_determinism_and_cudnn_autotuning():
    from robustlens.runtime import autocast, configure_torch

    try:
        configure_torch(1, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
        configure_torch(1, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    finally:
        configure_torch(1, deterministic=True)
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'bf16'\), got 'fp16'"):
        autocast(torch.device("cpu"), "fp16")
