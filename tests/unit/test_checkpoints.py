"""Checkpoints are verified by sha256 before they are unpickled, and read with weights_only."""

import pickle

import pytest
import torch

from robustlens.checkpoints import ChecksumError, load_state_dict, save_state_dict
from robustlens.zoo import build_architecture, load_model

ARCH = {"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [4, 8], "convs_per_block": 1}


def test_loaded_model_equals_saved(tmp_path):
    torch.manual_seed(0)
    model = build_architecture(ARCH).eval()
    sha = save_state_dict(model.state_dict(), tmp_path / "m.pt")
    loaded = load_model({"id": "m", "source": "train", "arch": ARCH}, tmp_path / "m.pt", sha256=sha)
    x = torch.rand(4, 1, 16, 16)
    assert torch.equal(model(x), loaded(x))


def test_tampered_checkpoint_is_rejected_before_loading(tmp_path):
    path = tmp_path / "m.pt"
    sha = save_state_dict(build_architecture(ARCH).state_dict(), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="does not match.*Delete it"):
        load_state_dict(path, sha256=sha)


def test_truncated_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "m.pt"
    save_state_dict(build_architecture(ARCH).state_dict(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ChecksumError, match="cannot be read"):
        load_state_dict(path)


class _Exploit:
    def __reduce__(self):
        return (print, ("this pickle executes code",))


def test_pickle_that_executes_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": _Exploit()}, path)
    with pytest.raises(ChecksumError, match="cannot be read"):
        load_state_dict(path)
