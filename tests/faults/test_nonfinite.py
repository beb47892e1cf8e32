"""NaN or Inf in the training loss or in activations: the job stops, naming the model, the layer
and the step where it happened (computed independently here), and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlens.activations import NonFiniteActivationError, extract_activations, write_target_stores
from robustlens.runtime import generator
from robustlens.fitting import batch_order
from robustlens.train import NonFiniteLossError, train_model
from robustlens.zoo import build_architecture

ARCH = {"name": "smallcnn", "in_channels": 1, "num_classes": 10, "widths": [4, 8, 8], "convs_per_block": 1}
LAYERS = ["block1", "block2", "block3", "penultimate", "logits"]


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, n)


def model(seed=0):
    torch.manual_seed(seed)
    return build_architecture(ARCH).eval()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_training_stops_at_the_step_with_a_nonfinite_loss(bad):
    x, y = data()
    sample, batch_size, seed = 50, 16, 3
    x[sample, 0, 2, 2] = bad
    # the step of epoch 1 whose batch holds the bad sample, from the training's own batch order
    order = batch_order(len(x), batch_size, generator(seed))
    step = next(i for i, idx in enumerate(order) if sample in idx.tolist()) + 1
    with pytest.raises(NonFiniteLossError) as err:
        train_model(
            model(), x, y, eps=0.0, norm="l2", epochs=2, batch_size=batch_size, lr=0.01, momentum=0.9,
            weight_decay=0.0, attack_steps=1, seed=seed, device=torch.device("cpu"), model_id="grid-eps0-s3",
            progress=False,
        )
    message = str(err.value)
    assert "model grid-eps0-s3" in message and f"epoch 1, step {step}" in message
    assert "training loss is nan" in message or "training loss is inf" in message


def test_activations_stop_at_the_first_layer_and_batch_with_nan():
    x, _ = data()
    x[70, 0, 0, 0] = float("nan")  # batch 3 of 32 (samples 64..95)
    with pytest.raises(NonFiniteActivationError) as err:
        extract_activations(model(), x, LAYERS, batch_size=32, progress=False, model_id="m-nan")
    message = str(err.value)
    assert "model m-nan" in message and "layer block1" in message and "step 3 of 3" in message
    assert "samples 64..95" in message


def test_activations_name_the_layer_where_inf_appears():
    net = model()
    with torch.no_grad():
        net.block3[0].weight[0, 0, 1, 1] = float("inf")  # finite up to block2
    x, _ = data(40)
    with pytest.raises(NonFiniteActivationError) as err:
        extract_activations(net, x, LAYERS, batch_size=32, progress=False, model_id="m-inf")
    message = str(err.value)
    assert "model m-inf" in message and "layer block3" in message and "step 1 of 2" in message
    # sanity: the layers before it are finite
    acts = extract_activations(net, x, ["block1", "block2"], batch_size=32, progress=False)
    assert all(np.isfinite(v).all() for v in acts.values())


def test_no_store_is_written_from_nonfinite_activations(tmp_path):
    x, y = data(40)
    x[5] = float("nan")
    targets = {"good": (model(0), {"spec": "good"}), "bad": (model(1), {"spec": "bad"})}
    settings = {"layers": LAYERS, "spatial": "avgpool", "batch_size": 32}
    with pytest.raises(NonFiniteActivationError, match="model good"):
        write_target_stores(targets, x, y, str(tmp_path / "stores"), activations=settings, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the directory nor its temporary
