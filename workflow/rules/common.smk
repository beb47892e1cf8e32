# Shared by every rule: the validated config, the resolved models and pairs, path helpers.
# Every setting reaches the rules that use it through `params:` (scripts never read `config`), and
# VERSION is in the params of every rule, since Snakemake does not track imported modules.
import math
import re
import sys

import robustlens
from robustlens.config import ConfigError, canonical, expand_models, select_pairs, validate_config

try:
    validate_config(config)
except ConfigError as err:
    sys.stderr.write(f"robustlens: {err}\n")
    sys.exit(1)
# Sorted keys everywhere: reordering keys in a config file must not rerun anything.
config.update(canonical(dict(config)))

VERSION = robustlens.__version__
STUDY = config["study"]
DATASET = config["dataset"]["name"]
MODELS = expand_models(config)
PAIRS = select_pairs(MODELS, config["comparison"]["pairs"])
THREADS = config.get("threads", 1)
DEVICE = config.get("device", "auto")
# How torch jobs compute (robustlens.runtime): bf16 autocast in training and extraction forward
# passes (attacks of the evaluation and similarity measures stay fp32/float64), channels-last
# memory layout, deterministic algorithms (cudnn.benchmark off) or not.
COMPUTE = {key: config.get(key, default) for key, default in (("precision", "fp32"), ("channels_last", False), ("deterministic", True))}
PROGRESS = config.get("progress", True)
SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"

TRAIN_MODELS = [m for m, spec in MODELS.items() if spec["source"] == "train"]
ZOO_MODELS = [m for m, spec in MODELS.items() if spec["source"] != "train"]
#: Each zoo model's own weights file (what the fetch rule writes), by path.
WEIGHTS = {spec["weights"]: spec for spec in MODELS.values() if "weights" in spec}
RESOURCES = config.get("resources", {})


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!)"


def resources_of(name, **defaults):
    """The resources of ``name`` (a rule): its computed memory (MEMORY and GPU_MEMORY,
    below) and its defaults, overridden by the config's ``resources.<name>``."""
    computed = {"mem_mb": memory(MEMORY[name])} if name in MEMORY else {}
    if name in GPU_MEMORY:
        computed["gpu_mem_mb"] = lambda wildcards, input: int(math.ceil(GPU_MEMORY[name](wildcards, input)))
    return {**computed, **defaults, **RESOURCES.get(name, {})}


wildcard_constraints:
    model=r"(?:(?!__)[A-Za-z0-9_.+-])+",
    model_a=r"(?:(?!__)[A-Za-z0-9_.+-])+",
    model_b=r"(?:(?!__)[A-Za-z0-9_.+-])+",
    probe=r"[a-z]+",
    source=r"[A-Za-z0-9_.+-]+",


def checkpoint_path(model):
    return f"results/models/{model}/checkpoint.pt"


def metrics_path(model):
    return f"results/models/{model}/metrics.json"


def store_path(probe, source, model):
    """Store of a model's activations on the images of ``source``: the dataset for the natural
    probe, a model for made probes (inside the source's activation directory, which one job
    writes)."""
    return f"results/activations/{probe}/{source}/{model}.zarr"


def manifest_of(store):
    return f"{store}.manifest.json"


MADE_PROBES = [p for p in ("adversarial", "inverted") if p in config["probes"]]
PROBES = ["natural", *MADE_PROBES]


FIGURE_FORMATS = ["png", "pdf"]


def all_targets():
    """The targets of the default target (`all`): every table and figure of the study. Each
    stage's figures that share one rule are named in its rule file (SIMILARITY_FIGURES,
    PREDICTIVE_FIGURES, FILTER_FIGURES, TRANSFER_FIGURES)."""
    tables = ["models", "heads", "similarity", "similarity_matrix", "correlations", "predictive", "universality",
              "filters_quality", "filters_shift", "filters_basis", "transfer", "bounds"]
    figures = [*SIMILARITY_FIGURES, *PREDICTIVE_FIGURES, *FILTER_FIGURES, "filters_first_layer", *TRANSFER_FIGURES]
    if TRAIN_MODELS:
        figures.append("training_curves")
    if MADE_PROBES:
        tables.append("probes")
    if "inverted" in MADE_PROBES:
        figures.append("inversions")
    return [f"results/tables/{t}.csv" for t in tables] + [f"results/figures/{f}.{ext}" for f in figures for ext in FIGURE_FORMATS]


def models_of_pairs():
    """Models that take part in at least one compared pair, in study order."""
    return sorted({m for pair in PAIRS for m in pair}, key=list(MODELS).index)


def probe_targets(source):
    """Models evaluated on the probe images a source model made: itself and its partners."""
    partners = {m for pair in PAIRS if source in pair for m in pair}
    return sorted(partners | {source}, key=list(MODELS).index)


def pair_stores(probe, a, b):
    """(source, store of a, store of b) for every probe input set the pair is compared on: the
    dataset for natural images; the images of each of the two models for made probes."""
    if probe == "natural":
        return [(DATASET, store_path(probe, DATASET, a), store_path(probe, DATASET, b))]
    return [(src, store_path(probe, src, a), store_path(probe, src, b)) for src in (a, b)]


def probe_files(probe, models):
    """The files a job needs to read the stores of ``models`` on ``probe``."""
    if probe == "natural":
        stores = [store_path(probe, DATASET, m) for m in models]
        return stores + [manifest_of(s) for s in stores]
    return [f"results/activations/{probe}/{m}" for m in models] + [
        f"results/activations/{probe}/{m}.index.json" for m in models
    ]


# Memory of each rule's jobs (mem_mb), computed from what the job reads: image counts and sizes
# of the splits it loads, the model's checkpoint, the configured batches, the stores it
# compares; every retry asks for more (robustlens.resources). A config's `resources.<rule>`
# still overrides any of them.
from robustlens import resources as rs
from robustlens.config import dataset_shape, n_test_images, n_train_images

CHANNELS = dataset_shape(config["dataset"])["in_channels"]
IMAGE_SIZE = config["dataset"]["image_size"]
N_TRAIN = n_train_images(config["dataset"])
N_TEST = n_test_images(config["dataset"])
# The dataset cache: 8-bit sources (CIFAR, Fashion-MNIST, image folders) stored as uint8, the
# others as float32 (robustlens.data); preparing it holds two copies (as read, as stored).
STORED_BYTES = 4 if config["dataset"]["source"] in ("sklearn_digits", "shapes") else 1
STORED_IMAGE_COPIES = 2
# A model job holds its splits as float32 beside the uint8 they were read as (1.25 copies: the
# rehearsal's growth check measured 51-78 MB for 4,500 more CIFAR test images, 53 MB each copy).
# Batches never hold more images than the split they run over.
EVAL_BATCH = min(config["evaluation"].get("batch_size", 512), N_TEST)
ACTIVATION_BATCH = min(config["activations"]["batch_size"], N_TEST)
TRAIN_BATCH = min(config["training"]["batch_size"], N_TRAIN)
# Training images a job holds: the whole split, or (training.stream) a batch read from the
# dataset cache (train_model: a training and a validation batch, robustlens.train.predict's
# 512; retrain_heads: extract_activations' batch of 256); stored at dataset.train_image_size.
STREAM = config["training"].get("stream", False)
TRAIN_IMAGE_SIZE = config["dataset"].get("train_image_size") or IMAGE_SIZE
TRAINING_IMAGES = TRAIN_BATCH + min(512, N_TRAIN) if STREAM else N_TRAIN
# In memory the split is read as stored and converted to float32 (1.25 copies) and, with a
# validation split, its training part is copied out (one more): the growth check measured
# +323 MB for 7,500 more CIFAR images (declared then: +115) before this and before the resume
# fingerprint stopped copying the split as well.
TRAINING_COPIES = 1.25 + (0 if STREAM or not config["training"].get("validation") else 1)
HEADS_TRAINING_IMAGES = min(256, N_TRAIN) if STREAM else N_TRAIN


def train_images_mb(n, copies=2):
    """``copies`` float32 copies of ``n`` images of the training split as stored."""
    return copies * rs.images_mb(n, CHANNELS, TRAIN_IMAGE_SIZE)


def memory(estimate):
    """A ``mem_mb`` callable: ``estimate(wildcards, input)`` MB, more for each retry."""
    return lambda wildcards, input, attempt: rs.with_attempt(estimate(wildcards, input), attempt)


def images_mb(n, copies=2):
    """``copies`` float32 copies of ``n`` images of the study's dataset."""
    return copies * rs.images_mb(n, CHANNELS, IMAGE_SIZE)


def weights_mb(model, path=None):
    """One float32 copy of a model's weights: its checkpoint's size when the file exists."""
    return rs.model_mb(MODELS[model]["arch"], rs.tree_bytes([path]) if path else None)


def activations_mb(model, batch):
    return rs.activation_mb(MODELS[model]["arch"], IMAGE_SIZE, batch)


def read_mb(input, factor):
    """``factor`` times the bytes of every input (stores: every file under them), in MB."""
    return factor * rs.tree_bytes(list(input)) / rs.MB


def torch_base(model):
    """A torch job's resident memory before it reads anything (robustbench imports more)."""
    return rs.TORCH_BASE_MB + (300 if MODELS[model]["source"] == "robustbench" else 0)


MEMORY = {
    "prepare_dataset": lambda wc, input: rs.TABLE_BASE_MB + STORED_IMAGE_COPIES * (rs.images_mb(N_TRAIN, CHANNELS, TRAIN_IMAGE_SIZE, STORED_BYTES)
                                                                                  + rs.images_mb(N_TEST, CHANNELS, IMAGE_SIZE, STORED_BYTES)),
    "train_model": lambda wc, input: torch_base(wc.model) + train_images_mb(TRAINING_IMAGES, copies=TRAINING_COPIES) + images_mb(N_TEST, copies=1.25) + 4 * weights_mb(wc.model)
    + activations_mb(wc.model, TRAIN_BATCH) + activations_mb(wc.model, EVAL_BATCH),
    "zoo_model": lambda wc, input: torch_base(wc.model) + images_mb(N_TEST) + 3 * weights_mb(wc.model, input.weights)
    + activations_mb(wc.model, EVAL_BATCH),
    # the split's images once, and their uint8 file while it is converted (0.25 of a copy)
    "extract_natural": lambda wc, input: torch_base(wc.model) + images_mb(N_TEST, copies=1.25) + 2 * weights_mb(wc.model, input.checkpoint)
    + activations_mb(wc.model, ACTIVATION_BATCH),
    "make_probe": lambda wc, input: torch_base(wc.model) + images_mb(N_TEST, copies=2)
    + sum(2 * weights_mb(m, checkpoint_path(m)) for m in probe_targets(wc.model))
    + activations_mb(wc.model, min(config["probes"][wc.probe].get("batch_size", EVAL_BATCH), N_TEST)),
    # and the penultimate features of the training split, twice (as extracted, standardised)
    "retrain_heads": lambda wc, input: torch_base(wc.model) + train_images_mb(HEADS_TRAINING_IMAGES) + images_mb(N_TEST) + 2 * weights_mb(wc.model, input.checkpoint)
    + 2 * rs.store_mb(N_TRAIN, rs.FEATURES_MAX)
    + activations_mb(wc.model, ACTIVATION_BATCH),
    # one task at a time: the largest task's images (as stored and float32) and LP's features
    "transfer": lambda wc, input: torch_base(wc.model) + max(map(rs.transfer_task_mb, input.tasks)) + 4 * weights_mb(wc.model, input.checkpoint)
    + activations_mb(wc.model, max(config["transfer"]["batch_size"], config["transfer"]["ft"]["batch_size"])),
    "transfer_task": lambda wc, input: rs.TABLE_BASE_MB + task_making_mb(wc.task),
    "compare_similarity": lambda wc, input: rs.TORCH_BASE_MB + read_mb(input, 4),
    "similarity_matrix": lambda wc, input: rs.TORCH_BASE_MB + read_mb(input, 4),
    "extract_filters": lambda wc, input: torch_base(wc.model)
    + rs.FILTER_EXTRACTION_PER_WEIGHT_BYTE * weights_mb(wc.model, input.checkpoint),
    "figure_first_layer_filters": lambda wc, input: rs.TABLE_BASE_MB + read_mb(input, rs.FILTER_TABLE_PER_STORE_BYTE),
}


def gpu_activations_mb(model, batch):
    return rs.gpu_activation_mb(MODELS[model]["arch"], IMAGE_SIZE, batch)


# GPU memory of the rules that run torch on the device (gpu_mem_mb): the CUDA context, the float32
# images a job moves to the device, the weights (training: weights, gradients, momentum and a
# copy), and the activations one step keeps for backward (robustlens.resources). The local
# profile caps the sum of concurrent jobs at one card's memory.
GPU_MEMORY = {
    "train_model": lambda wc, input: rs.CUDA_CONTEXT_MB + train_images_mb(TRAINING_IMAGES, copies=1) + images_mb(N_TEST, copies=1) + 4 * weights_mb(wc.model)
    + gpu_activations_mb(wc.model, TRAIN_BATCH),
    "zoo_model": lambda wc, input: rs.CUDA_CONTEXT_MB + images_mb(N_TEST, copies=1) + 2 * weights_mb(wc.model, input.weights)
    + gpu_activations_mb(wc.model, EVAL_BATCH),
    "extract_natural": lambda wc, input: rs.CUDA_CONTEXT_MB + weights_mb(wc.model, input.checkpoint)
    + gpu_activations_mb(wc.model, ACTIVATION_BATCH),
    "make_probe": lambda wc, input: rs.CUDA_CONTEXT_MB + sum(weights_mb(m, checkpoint_path(m)) for m in probe_targets(wc.model))
    + gpu_activations_mb(wc.model, max(min(config["probes"][wc.probe].get("batch_size", EVAL_BATCH), N_TEST), ACTIVATION_BATCH)),
    "retrain_heads": lambda wc, input: rs.CUDA_CONTEXT_MB + weights_mb(wc.model, input.checkpoint)
    + gpu_activations_mb(wc.model, ACTIVATION_BATCH),
    "transfer": lambda wc, input: rs.CUDA_CONTEXT_MB + max(map(rs.transfer_task_device_mb, input.tasks)) + 4 * weights_mb(wc.model, input.checkpoint)
    + gpu_activations_mb(wc.model, max(config["transfer"]["batch_size"], config["transfer"]["ft"]["batch_size"])),
    "compare_similarity": lambda wc, input: rs.CUDA_CONTEXT_MB + read_mb(input, 2),
    "similarity_matrix": lambda wc, input: rs.CUDA_CONTEXT_MB + read_mb(input, 2),
}


def table_memory(wildcards, input, attempt):
    """A table or figure job: pandas and matplotlib, and its inputs several times over."""
    return rs.with_attempt(rs.TABLE_BASE_MB + read_mb(input, 6), attempt)
MEMORY["compare_predictive"] = lambda wc, input: rs.TABLE_BASE_MB + read_mb(input.stores, 1.5) + read_mb(input.heads, 2)
MEMORY["filters_tables"] = lambda wc, input: rs.TABLE_BASE_MB + read_mb(input, rs.FILTER_TABLE_PER_STORE_BYTE)


# Input and resource functions of the stages' rules (Snakemake's convention, checked by
# `snakemake --lint`: functions here, rules in the stage files). They read globals that the
# stage files define (DATASET_SOURCE, TRANSFER, ...) when Snakemake calls them, after parsing.


# data.smk
def prepare_dataset_input(wildcards):
    """The downloaded torchvision dataset, for the sources that need one."""
    return [f"{DATASETS_DIR}/{DATASET_SOURCE}"] if DATASET_SOURCE in TORCHVISION else []


# probes.smk and filters.smk
def standard_and_most_robust(ids):
    """(the first standard model of ``ids``, else the first model; the most robust, the lowest
    seed first): the two models the inversion and first-layer figures show."""
    normal = next((m for m in ids if MODELS[m]["eps"] == 0), ids[0])
    robust = max(ids, key=lambda m: (MODELS[m]["eps"], -MODELS[m]["seed"]))
    return normal, robust


def inversion_figure_models():
    """The standard and the most robust model among those that take part in pairs."""
    normal, robust = standard_and_most_robust(models_of_pairs())
    return [normal, robust] if normal != robust else [normal]


def first_layer_models():
    """The most robust and the standard model of the study."""
    normal, robust = standard_and_most_robust(list(MODELS))
    return {"robust": robust, "normal": normal}


# transfer.smk
def transfer_task_input(wildcards):
    """The study's dataset for held-out tasks; the downloaded torchvision dataset for dataset
    tasks (an image folder is read from its root); nothing for the sprites."""
    source = parse_task(wildcards.task)["source"]
    if source == "heldout":
        return {"dataset": f"results/data/{DATASET}.npz"}
    if source in TORCHVISION:
        return {"downloaded": f"{DATASETS_DIR}/{source}"}
    return {}


def task_settings(task):
    """The ``transfer.task_settings`` block of a task's source (a dataset source's may be absent)."""
    source = parse_task(task)["source"]
    return TRANSFER["task_settings"].get(source, {})


def task_making_mb(task):
    """Memory of making one task: a dataset task's images read and stored (8-bit, 2 copies) and,
    corrupted, in float64 (3 copies: the images, the running sum, one zoomed copy); a held-out
    or sprite task: six float32 copies of the study's test split, as before."""
    parsed = parse_task(task)
    if parsed["source"] not in DATASET_TASKS:
        return images_mb(N_TEST, copies=6)
    settings = task_settings(task)
    n = sum(dataset_task_images(parsed["source"], settings))
    size = dataset_task_spec(parsed["source"], settings)["image_size"]
    return rs.images_mb(n, TASK_CHANNELS[parsed["source"]], size, 2 + (24 if parsed["corruption"] else 0))
