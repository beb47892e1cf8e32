"""Checkpoints are never unpickled with arbitrary code: a pickle that would run code when loaded
is refused by every loader of the workflow, and the code never runs."""

from __future__ import annotations

import os

import pytest
import torch

from robustlens.checkpoints import ChecksumError, load_state_dict, save_state_dict, sha256_file
from robustlens.zoo import build_architecture, load_model

ARCH = {"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [4, 8], "convs_per_block": 1}


class WritesMarker:
    """Unpickling this calls os.mkdir(marker): code execution, made visible."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def evil(tmp_path):
    """A checkpoint that looks like a state dict and carries the exploit; its marker path."""
    marker = tmp_path / "pwned"
    state = build_architecture(ARCH).state_dict()
    state["exploit"] = WritesMarker(marker)
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    return path, marker


def test_the_exploit_is_real(evil):
    """Control: an unsafe load does run the code (so the refusals below mean something)."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_evil_checkpoint_with_matching_sha256_is_refused(evil):
    """Even a file whose recorded sha256 matches (an attacker who wrote both) is not unpickled
    with arbitrary code: weights_only=True refuses it."""
    path, marker = evil
    with pytest.raises(ChecksumError) as err:
        load_state_dict(path, sha256=sha256_file(path))
    assert str(path) in str(err.value) and "Delete it" in str(err.value)
    assert not marker.exists()


def test_evil_checkpoint_is_refused_by_load_model(evil):
    path, marker = evil
    with pytest.raises(ChecksumError):
        load_model({"id": "m", "source": "train", "arch": ARCH}, path)
    assert not marker.exists()


def test_evil_checkpoint_swapped_for_a_good_one_fails_its_sha256_before_unpickling(evil, tmp_path):
    path, marker = evil
    good = tmp_path / "good.pt"
    recorded = save_state_dict(build_architecture(ARCH).state_dict(), good)
    path.replace(good)  # the evil file now sits where the good one was recorded
    with pytest.raises(ChecksumError, match="does not match the recorded"):
        load_state_dict(good, sha256=recorded)
    assert not marker.exists()
