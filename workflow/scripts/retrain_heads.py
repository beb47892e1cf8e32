"""Retrain linear heads of one model on its frozen penultimate features (thin entry point)."""
from robustlens.jobs import redirect_output

redirect_output(snakemake.log[0])
import numpy as np

from robustlens.augment import centre_crop
from robustlens.data import load_dataset
from robustlens.head_training import retrain_heads
from robustlens.heads import save_heads
from robustlens.npz_rows import NpzRows
from robustlens.runtime import configure_torch, resolve_device
from robustlens.streaming import StreamedImages
from robustlens.zoo import load_workflow_model

p = snakemake.params
configure_torch(snakemake.threads, snakemake.params.compute["deterministic"])
device = resolve_device(p.device, snakemake.resources.get("gpu", 0))
model = load_workflow_model(p.spec, snakemake.input.checkpoint, snakemake.input.metrics)
dataset = load_dataset(snakemake.input.dataset, "test" if p.stream else None)
# the training split as the model sees it: read per batch when streamed, its centre crop at the
# model's input size when stored larger (dataset.train_image_size)
dataset["x_train"] = (StreamedImages(NpzRows(snakemake.input.dataset, "x_train"), np.arange(len(dataset["y_train"])), device, crop=p.image_size)
                      if p.stream else centre_crop(dataset["x_train"], p.image_size))
heads = retrain_heads(model, dataset, p.heads, device, p.progress, p.spec["id"])
print({k: v for k, v in heads.items() if "accuracy" in k})
save_heads(heads, snakemake.output[0])
