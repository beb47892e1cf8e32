"""A zoo model through the workflow: a robustness-library checkpoint at a file:// URL goes
through the real rules. (The zoo loaders offline are tested in tests/unit/test_zoo.py.)"""

from __future__ import annotations

import pytest
import torch

from robustlens.checkpoints import sha256_file
from support import madry_checkpoint, snakemake, write_config


# --------------------------------------------------------------------------- the workflow, end to end


def test_url_model_through_the_workflow(tmp_path):
    """A robustness-library checkpoint at a file:// URL goes through the real rules: fetch_weights
    copies it into data/ (sha256-verified), zoo_model evaluates it, extract_natural stores its
    activations. The clean accuracy in models.csv and the stored penultimate features equal
    what the original torchvision network computes on the prepared test images."""
    import numpy as np
    import pandas as pd
    import torchvision
    from PIL import Image

    from robustlens.data import load_dataset
    from robustlens.store import open_store

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 6)):
        for k, c in enumerate(("a", "b", "c")):
            (tmp_path / "images" / split / c).mkdir(parents=True)
            for i in range(n):  # brightness by class, so the network's predictions differ
                pixels = np.clip(rng.normal(60 + 60 * k + 10 * i, 40, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "images" / split / c / f"{i}.png")
    torch.manual_seed(4)
    net = torchvision.models.resnet18(num_classes=1000).eval()
    with torch.no_grad():  # predictions spread over the three folder classes, so accuracy is informative
        net.fc.bias[3:] = -1e4
    mean, std = torch.tensor([0.45, 0.45, 0.4]), torch.tensor([0.25, 0.25, 0.25])
    source = tmp_path / "published" / "resnet18_l2_eps3.ckpt"
    source.parent.mkdir()
    torch.save(madry_checkpoint(net, mean, std), source)

    run = tmp_path / "run"
    (classes := tmp_path / "classes.txt").write_text("a\nb\nc\n")  # labels 0, 1, 2 of the 1000-class head
    entry = {"id": "madry-r18-eps3", "source": "url", "arch": "resnet18", "eps": 3,
             "url": source.as_uri(), "sha256": sha256_file(source)}
    config = write_config(tmp_path / "zoo.yaml", {
        "study": "zoo", "model_grid": None, "models": [entry, {**entry, "id": "madry-r18-eps3-again", "seed": 1}],
        "dataset": {"name": "folder", "source": "imagefolder", "root": str(tmp_path / "images"), "classes": str(classes),
                    "image_size": 32, "max_train": 18, "max_test": 18},
        "evaluation": {"eps": [0.5], "steps": 20, "restarts": 1, "batch_size": 64},
        "activations": {"layers": ["layer1", "layer4", "penultimate", "logits"]},
        "probes": {"inverted": {"n_samples": 12}},  # at most the 18 test images
        "comparison": {"knn_k": 5, "rtd": {"batch": 10}},
    })
    targets = ["results/tables/models.csv", "results/activations/natural/folder/madry-r18-eps3.zarr"]
    snakemake(run, *targets, "--cores", "2", configfiles=(config,))
    assert sha256_file(run / "data/checkpoints/resnet18_l2_eps3.ckpt") == entry["sha256"]

    # the test images made independently: torchvision's ImageFolder with ImageNet's evaluation
    # transform (short side to round(32 * 256 / 224) = 37, centre crop 32, ToTensor)
    from torchvision import datasets, transforms

    folder = datasets.ImageFolder(tmp_path / "images" / "val", transform=transforms.Compose(
        [transforms.Resize(37), transforms.CenterCrop(32), transforms.ToTensor()]))
    x = torch.stack([image for image, _ in folder])
    y = torch.tensor([label for _, label in folder])
    test = load_dataset(run / "results/data/folder.npz", "test")
    np.testing.assert_array_equal(test["x_test"], x.numpy())  # the workflow's stored split, bit for bit
    np.testing.assert_array_equal(test["y_test"], y.numpy())
    with torch.no_grad():
        normalized = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        logits = net(normalized)
        features = torch.flatten(net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(
            net.maxpool(net.relu(net.bn1(net.conv1(normalized))))))))), 1)
    expected_accuracy = (logits.argmax(1) == y).double().mean().item()
    assert 0 < expected_accuracy < 1 and len(set(logits.argmax(1).tolist())) > 1
    table = pd.read_csv(run / "results/tables/models.csv")
    clean = table[(table["model"] == "madry-r18-eps3") & (table["metric"] == "clean_accuracy")]["value"]
    assert clean.item() == pytest.approx(expected_accuracy, abs=1e-12)  # a float64 mean of 18 outcomes
    store = open_store(run / targets[1])
    np.testing.assert_allclose(store["penultimate"].values, features.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(store["logits"].values, logits.numpy(), rtol=1e-4, atol=1e-3)
