"""Model zoos offline: for every source the real loader reads a checkpoint this test writes where
the loader looks (a randomly initialised network of the exact architecture), and the loaded
model computes what the original computes; broken files are rejected; downloads resume,
verify and fail offline with a message naming the file."""

from __future__ import annotations

import http.server
import threading

import pytest
import torch

from robustlens.checkpoints import ChecksumError, save_state_dict, sha256_file
from robustlens.config import representation_layers, resolve_entry
from robustlens.download import DownloadError, fetch
from robustlens.zoo import build_model, load_model
from support import madry_checkpoint

TRAIN_CONFIG = {
    "architecture": {"name": "resnet18_cifar", "widths": [8, 16, 32, 64], "convs_per_block": 2},
    "dataset": {"source": "cifar10"},
}


def resolved(entry: dict) -> dict:
    return resolve_entry(entry, TRAIN_CONFIG)


def check_interface(model, spec, x):
    """forward = head(forward_features); block layers as config.representation_layers says."""
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(model.forward_features(x)), rtol=0, atol=0)
    assert isinstance(model.head, torch.nn.Linear)
    assert model.representation_layers() == representation_layers(spec)
    assert list(model.representation_modules()) == model.block_names


def assert_round_trip(model, spec, tmp_path, x):
    """The workflow's checkpoint of a model (its state dict) loads into an equal model."""
    sha = save_state_dict(model.state_dict(), tmp_path / "checkpoint.pt")
    again = load_model(spec, tmp_path / "checkpoint.pt", sha256=sha)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path: zoo weights live under data/ relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- train: CIFAR ResNet-18


def test_cifar_resnet18_interface_and_checkpoint(tmp_path):
    spec = resolved({"id": "r", "source": "train", "eps": 0.5, "seed": 0})
    torch.manual_seed(0)
    model = build_model(spec).eval()
    x = torch.rand(2, 3, 32, 32)
    check_interface(model, spec, x)
    assert model.representation_layers() == ["layer1", "layer2", "layer3", "layer4", "penultimate", "logits"]
    # layer4 output is (n, 64, 4, 4): stride 2 in stages 2..4 of a 32x32 input
    out = {}
    model.layer4.register_forward_hook(lambda m, i, o: out.setdefault("l4", o))
    model(x)
    assert out["l4"].shape == (2, 64, 4, 4)
    assert_round_trip(model, spec, tmp_path, x)


# --------------------------------------------------------------------------- RobustBench


@pytest.fixture(scope="module")
def robustbench_net():
    from robustlens.sources import import_robustbench

    rb = import_robustbench()  # first: it installs the autoattack shim robustbench needs
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    zoo = rb.all_models[BenchmarkDataset("cifar10")][ThreatModel("L2")]
    torch.manual_seed(1)
    return zoo["Sehwag2021Proxy_R18"]["model"]().eval()


def test_robustbench_loader_reads_robustbench_checkpoint(in_tmp, robustbench_net):
    entry = {"id": "rb", "source": "robustbench", "name": "Sehwag2021Proxy_R18", "dataset": "cifar10",
             "threat_model": "L2", "eps": 0.5, "layers": ["layer1", "layer4"]}
    spec = resolved(entry)
    assert spec["weights"] == "data/robustbench/cifar10/L2/Sehwag2021Proxy_R18.pt"
    (in_tmp / spec["weights"]).parent.mkdir(parents=True)
    # robustbench's own checkpoint layout: {"state_dict": ...} with a DataParallel prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in robustbench_net.state_dict().items()}}, spec["weights"])
    model = load_model({**spec, "sha256": sha256_file(spec["weights"])})
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), robustbench_net(x))
    check_interface(model, spec, x)
    assert_round_trip(model, spec, in_tmp, x)


def test_robustbench_tampered_or_missing_checkpoint_is_rejected(in_tmp, robustbench_net):
    spec = resolved({"id": "rb", "source": "robustbench", "name": "Sehwag2021Proxy_R18", "dataset": "cifar10",
                     "threat_model": "L2", "eps": 0.5})
    with pytest.raises(FileNotFoundError, match="Sehwag2021Proxy_R18.pt"):
        load_model(spec)
    (in_tmp / spec["weights"]).parent.mkdir(parents=True)
    torch.save(robustbench_net.state_dict(), spec["weights"])
    sha = sha256_file(spec["weights"])
    data = bytearray((in_tmp / spec["weights"]).read_bytes())
    data[len(data) // 2] ^= 0x01
    (in_tmp / spec["weights"]).write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="does not match"):
        load_model({**spec, "sha256": sha})


# --------------------------------------------------------------------------- timm


def timm_spec():
    return resolved({"id": "t", "source": "timm", "name": "resnet18", "tag": "a1_in1k", "eps": 0,
                     "layers": ["layer1", "layer2", "layer3", "layer4"]})


def test_timm_loader_reads_local_weights_through_pretrained_cfg_overlay(in_tmp):
    import safetensors.torch
    import timm

    spec = timm_spec()
    assert spec["weights"] == "data/timm/resnet18.a1_in1k.safetensors"
    torch.manual_seed(2)
    original = timm.create_model("resnet18.a1_in1k", pretrained=False).eval()
    (in_tmp / "data/timm").mkdir(parents=True)
    safetensors.torch.save_file(original.state_dict(), spec["weights"])
    model = load_model(spec)
    x = torch.rand(2, 3, 64, 64)
    cfg = original.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), original((x - mean) / std), rtol=1e-5, atol=1e-6)
    check_interface(model, spec, x)
    assert_round_trip(model, spec, in_tmp, x)


def test_timm_truncated_weights_are_rejected(in_tmp):
    import timm

    spec = {**timm_spec(), "weights": "data/timm/resnet18.a1_in1k.pth"}
    (in_tmp / "data/timm").mkdir(parents=True)
    torch.save(timm.create_model("resnet18.a1_in1k", pretrained=False).state_dict(), spec["weights"])
    path = in_tmp / spec["weights"]
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ChecksumError, match="cannot be read"):
        load_model(spec)


# --------------------------------------------------------------------------- url: robustness-library checkpoints


def url_spec():
    return resolved({"id": "u", "source": "url", "arch": "resnet18", "eps": 3, "url": "https://example.org/models/resnet18_l2_eps3.ckpt"})


def test_url_loader_reads_robustness_library_checkpoint(in_tmp):
    import torchvision

    spec = url_spec()
    assert spec["weights"] == "data/checkpoints/resnet18_l2_eps3.ckpt"
    torch.manual_seed(3)
    net = torchvision.models.resnet18(num_classes=1000).eval()
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    (in_tmp / "data/checkpoints").mkdir(parents=True)
    torch.save(madry_checkpoint(net, mean, std), spec["weights"])
    model = load_model({**spec, "sha256": sha256_file(spec["weights"])})
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)), rtol=0, atol=0)
    check_interface(model, spec, x)
    assert_round_trip(model, spec, in_tmp, x)


def test_url_truncated_or_tampered_checkpoint_is_rejected(in_tmp):
    import torchvision

    spec = url_spec()
    (in_tmp / "data/checkpoints").mkdir(parents=True)
    path = in_tmp / spec["weights"]
    torch.save(madry_checkpoint(torchvision.models.resnet18(), torch.zeros(3), torch.ones(3)), path)
    sha = sha256_file(path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ChecksumError, match="does not match"):
        load_model({**spec, "sha256": sha})
    with pytest.raises(ChecksumError, match="cannot be read"):
        load_model(spec)


# --------------------------------------------------------------------------- downloads


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    ranges: list = []

    def do_GET(self):
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            type(self).ranges.append(start)
            self.send_response(206)
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    payload = bytes(range(256)) * 1000
    handler = type("Handler", (_RangeHandler,), {"payload": payload, "ranges": []})
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/weights.ckpt", payload, handler
    httpd.shutdown()


def test_download_resumes_with_range_and_verifies(tmp_path, server):
    import hashlib

    url, payload, handler = server
    dest = tmp_path / "w.ckpt"
    (tmp_path / "w.ckpt.part").write_bytes(payload[:100_000])  # an interrupted download
    fetch(url, dest, hashlib.sha256(payload).hexdigest())
    assert dest.read_bytes() == payload
    assert handler.ranges == [100_000]
    assert not (tmp_path / "w.ckpt.part").exists()


def test_download_with_wrong_sha256_leaves_nothing(tmp_path, server):
    url, _, _ = server
    with pytest.raises(ChecksumError, match="does not match"):
        fetch(url, tmp_path / "w.ckpt", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_url_model_without_sha256_downloads_and_records_its_sha256(tmp_path, server, capsys):
    """The ImageNet configs pin no sha256: the fetch must work and print and record the file's
    sha256 beside it (``sha256sum -c`` format) so the user can pin it."""
    import hashlib

    from robustlens.sources import fetch_weights

    url, payload, _ = server
    spec = resolved({"id": "m", "source": "url", "arch": "resnet18", "eps": 3, "url": url})
    assert "sha256" not in spec
    dest = tmp_path / "w.ckpt"
    fetch_weights(spec, dest)
    digest = hashlib.sha256(payload).hexdigest()
    assert dest.read_bytes() == payload
    assert (tmp_path / "w.ckpt.sha256").read_text() == f"{digest}  w.ckpt\n"
    assert f"sha256: {digest}" in capsys.readouterr().out


def test_offline_download_names_the_file_to_place(tmp_path):
    dest = tmp_path / "data" / "checkpoints" / "resnet50_l2_eps3.ckpt"
    with pytest.raises(DownloadError, match=f"place the file at {dest}"):
        fetch("http://127.0.0.1:9/resnet50_l2_eps3.ckpt", dest, "a" * 64, timeout=5)


def test_preplaced_file_is_accepted_without_network(tmp_path):
    import hashlib

    dest = tmp_path / "w.ckpt"
    dest.write_bytes(b"placed by hand")
    fetch("http://127.0.0.1:9/w.ckpt", dest, hashlib.sha256(b"placed by hand").hexdigest())
    assert dest.read_bytes() == b"placed by hand"
    with pytest.raises(ChecksumError, match="does not match"):
        fetch("http://127.0.0.1:9/w.ckpt", dest, "b" * 64)


# --------------------------------------------------------------------------- AutoAttack column


def test_autoattack_column_through_pyautoattack():
    """evaluation.autoattack adds AutoAttack robust accuracy next to PGD's: with labels the
    model's own predictions, clean accuracy is 1; in a huge L2 ball every prediction flips (0);
    models_table writes it as autoattack_accuracy rows."""
    from robustlens.tables import models_table
    from robustlens.train import evaluate_with_settings
    from robustlens.zoo import build_architecture

    torch.manual_seed(0)
    model = build_architecture({"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [4, 8], "convs_per_block": 1}).eval()
    x = torch.rand(8, 1, 16, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    evaluation = {"norm": "l2", "eps": [50.0], "steps": 20, "restarts": 1, "seed": 0,
                  "autoattack": {"eps": [50.0], "version": "standard", "n_samples": 8}}
    metrics = evaluate_with_settings(model, {"x_test": x.numpy(), "y_test": y.numpy()}, evaluation, torch.device("cpu"), progress=False)
    assert metrics["clean_accuracy"] == 1.0
    assert metrics["autoattack_accuracy"] == {"50.0": 0.0}
    table = models_table("s", [{"id": "m", "eps": 0.0, "seed": 0, "norm": "l2"}], [metrics])
    row = table[table.metric == "autoattack_accuracy"]
    assert (row.attack_eps.tolist(), row.value.tolist(), row.attack_norm.tolist()) == ([50.0], [0.0], ["l2"])


def test_autoattack_iterations_shrink_every_attack_and_default_to_autoattacks_own():
    """evaluation.autoattack.iterations sets the iterations of APGD-CE, APGD-T and FAB-T and
    Square's queries (a rehearsal's shrink); without it the standard version keeps AutoAttack's
    100 iterations and 5000 queries."""
    from robustlens.autoattack_eval import make_autoattack
    from robustlens.sources import import_robustbench

    import_robustbench()  # registers pyautoattack as autoattack where needed
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 10))
    settings = {"eps": [0.5], "version": "standard", "n_samples": 4}
    own = make_autoattack(model, settings, "l2", 0.5, torch.device("cpu"))
    shrunk = make_autoattack(model, {**settings, "iterations": 3}, "l2", 0.5, torch.device("cpu"))
    parts = lambda a: (a.apgd.n_iter, a.apgd_targeted.n_iter, a.fab.n_iter, a.square.n_queries)
    assert parts(own) == (100, 100, 100, 5000)
    assert parts(shrunk) == (3, 3, 3, 3)
    assert own.attacks_to_run == shrunk.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
