"""Declared memory at paper scale (issue 12, item 7): every job of a dry run of the ImageNet
universality config declares its memory, and it covers the data a job holds (computed here by
hand from the config's image counts and sizes, not through robustlens.resources). (The
functions of robustlens.resources are tested in tests/unit/test_resources.py.)"""

from __future__ import annotations

import pytest
import yaml

from support import REPO, device_rules, planned_job_details

MB = 2**20


@pytest.fixture(scope="module")
def imagenet_jobs(tmp_path_factory) -> list[dict]:
    """Every job of a dry run of the full ImageNet universality config."""
    return planned_job_details(tmp_path_factory.mktemp("plan"), configfiles=(REPO / "configs" / "imagenet-universality.yaml",))


def test_every_job_declares_memory(imagenet_jobs):
    missing = sorted({j["rule"] for j in imagenet_jobs if "mem_mb" not in j["resources"] and j["rule"] != "all"})
    assert not missing


def test_imagenet_jobs_declare_the_images_they_hold(imagenet_jobs):
    """The config's 5,000 validation images (max_test) at 3 x 224 x 224 float32 are 2.9 GB; a
    job holding them (a model's evaluation, activations, a probe) declares at least that, and the
    transfer task (six copies: clean and corrupted, their splits) at least six times as much.
    Before item 7 every one of them declared the 16 GB or 4 GB of the config's resources block,
    whatever the image count."""
    config = yaml.safe_load((REPO / "configs" / "imagenet-universality.yaml").read_text())["dataset"]
    test_split_mb = config["max_test"] * 3 * config["image_size"] ** 2 * 4 / MB
    by_rule: dict[str, list[int]] = {}
    for job in imagenet_jobs:
        if "mem_mb" in job["resources"]:
            by_rule.setdefault(job["rule"], []).append(int(job["resources"]["mem_mb"]))
    for rule in ("zoo_model", "extract_natural", "retrain_heads"):
        assert min(by_rule[rule]) > test_split_mb, rule
    assert min(by_rule["make_probe"]) > 2 * test_split_mb  # the images and their perturbed copies
    assert min(by_rule["transfer_task"]) > 6 * test_split_mb


def saved_for_backward_mb_per_image(model, size: int) -> float:
    """MB autograd saves per image in a training step of ``model`` (the loss differentiated to
    the weights and the input), counted storage by storage at batches 1 and 2."""
    import torch
    import torch.nn.functional as F

    def saved(batch):
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        x = torch.rand(batch, 3, size, size, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long))
        loss.backward()
        return sum(storages.values())

    return (saved(2) - saved(1)) / MB


def test_imagenet_gpu_jobs_declare_what_a_batch_keeps_for_backward(imagenet_jobs):
    """Every job of a device rule declares gpu_mem_mb (or the local profile could not cap a
    shared card), and at paper scale it covers a CUDA context (0.3 GB at least) plus the
    tensors a torchvision ResNet-50 keeps for backward for each of the job's batch of 224-px
    images (measured here with autograd's hooks), for the rules that attack or extract in
    batches."""
    import torchvision

    undeclared = sorted({j["rule"] for j in imagenet_jobs if j["rule"] in device_rules() and "gpu_mem_mb" not in j["resources"]})
    assert not undeclared
    config = yaml.safe_load((REPO / "configs" / "imagenet-universality.yaml").read_text())
    per_image = saved_for_backward_mb_per_image(torchvision.models.resnet50(weights=None).train(), 224)
    assert 60 < per_image < 120  # the known ~80 MB of a ResNet-50 training step at 224 px
    batches = {"zoo_model": min(config["evaluation"].get("batch_size", 512), config["dataset"]["max_test"]),
               "extract_natural": config["activations"]["batch_size"]}
    for job in imagenet_jobs:
        if job["rule"] in batches:
            assert int(job["resources"]["gpu_mem_mb"]) >= 300 + batches[job["rule"]] * per_image, job
