"""Config validation, in-process: every bad config names the offending key and value."""

import copy

import pytest
import yaml

from robustlens.config import ConfigError, expand_models, load_config, select_pairs, validate_config
from robustlens.tasks import dataset_task_spec, parse_task
from support import REPO, TINY


@pytest.fixture(scope="module")
def default():
    return load_config(REPO / "config.yaml")


def test_default_and_tiny_configs_are_valid(default):
    validate_config(default)
    tiny = load_config(REPO / "config.yaml", yaml.safe_load(TINY.read_text()))
    validate_config(tiny)


def test_default_study_has_14_models_and_7_same_eps_pairs(default):
    models = expand_models(default)
    assert len(models) == 14
    pairs = select_pairs(models, "same_eps")
    # 7 eps x C(2, 2) seed pairs, each pair of equal eps and different seeds
    assert len(pairs) == 7
    assert all(models[a]["eps"] == models[b]["eps"] and models[a]["seed"] != models[b]["seed"] for a, b in pairs)


BAD = [
    ({"traning": {}}, "traning"),
    ({"training": {"epochs": "ten"}}, "training.epochs"),
    ({"training": {"norm": "l3"}}, "training.norm"),
    ({"model_grid": {"eps": [-1]}}, "model_grid.eps[0]"),
    ({"model_grid": {"eps": []}}, "model_grid.eps"),
    ({"model_grid": {"seeds": [0, 0]}}, "model_grid.seeds"),
    ({"activations": {"layers": ["block9"]}}, "activations.layers[0]"),
    ({"activations": {"spatial": "maxpool"}}, "activations.spatial"),
    ({"comparison": {"pairs": [["nope", "smallcnn-l2-eps0-s0"]]}}, "comparison.pairs[0][0]"),
    ({"comparison": {"measures": ["cka_fast"]}}, "comparison.measures[0]"),
    ({"dataset": {"source": "mnist_from_the_moon"}}, "dataset.source"),
    ({"evaluation": {"steps": 0}}, "evaluation.steps"),
    ({"figures": {"dpi": "high"}}, "figures.dpi"),
    ({"device": "tpu"}, "device"),
    ({"transfer": {"thm2_label": "true"}}, "transfer.thm2_label"),
    ({"transfer": {"thm2_label": True}}, "transfer.thm2_label"),
    ({"transfer": {"attacks": {"as_method": "paper"}}}, "transfer.attacks.as_method"),
    ({"comparison": {"knn_center": "yes"}}, "comparison.knn_center"),
    ({"filters": {"histogram_range": "local"}}, "filters.histogram_range"),
    ({"filters": {"zero_banks": "zero"}}, "filters.zero_banks"),
]


@pytest.mark.parametrize("override,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_names_the_key(default, override, key):
    config = load_config(REPO / "config.yaml", copy.deepcopy(override))
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert f"'{key}'" in str(err.value)


def test_authors_conventions_are_options_and_robustlens_defaults_are_the_defaults(default):
    assert default["comparison"]["knn_center"] is False
    assert default["filters"]["histogram_range"] == "pooled"
    assert default["filters"]["zero_banks"] == "drop"
    authors = {"comparison": {"knn_center": True}, "filters": {"histogram_range": "global", "zero_banks": "keep"}}
    validate_config(load_config(REPO / "config.yaml", authors))


def test_same_eps_needs_two_seeds(default):
    config = load_config(REPO / "config.yaml", {"model_grid": {"seeds": [0]}})
    with pytest.raises(ConfigError, match="comparison.pairs"):
        validate_config(config)


# --------------------------------------------------------------------------- models: entries and paper configs

RB = {"id": "rb", "source": "robustbench", "name": "Standard", "dataset": "cifar10", "threat_model": "L2", "eps": 0}
URL = {"id": "u", "source": "url", "arch": "resnet50", "eps": 3, "url": "https://example.org/r50.ckpt"}
BAD_MODELS = [
    ([{**RB, "source": "hub"}], "models[0].source"),
    ([{**URL, "sha256": "abc123"}], "models[0].sha256"),
    ([{**URL, "sha256": "g" * 64}], "models[0].sha256"),
    ([{**RB, "threat_model": "L3"}], "models[0].threat_model"),
    ([{**RB, "colour": "red"}], "models[0].colour"),
    ([{**URL, "arch": "vgg16"}], "models[0].arch"),
    ([RB, {**URL, "id": "rb"}], "models[1].id"),
    ([{**RB, "id": "smallcnn-l2-eps0-s0"}], "models[0].id"),
]


@pytest.mark.parametrize("models,key", BAD_MODELS, ids=[k + "-" + str(i) for i, (_, k) in enumerate(BAD_MODELS)])
def test_bad_model_entry_names_the_key(models, key):
    config = load_config(REPO / "config.yaml", {"models": copy.deepcopy(models)})
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert f"'{key}'" in str(err.value)


def test_duplicate_model_id_names_key_and_value():
    config = load_config(REPO / "config.yaml", {"models": [RB, {**URL, "id": "rb"}]})
    with pytest.raises(ConfigError, match=r"key 'models\[1\].id' = 'rb': duplicate model id \(also models\[0\].id\)"):
        validate_config(config)


def test_model_entries_resolve_next_to_the_grid():
    config = load_config(REPO / "config.yaml", {"models": [RB, URL], "activations": {"layers": ["penultimate", "logits"]}})
    validate_config(config)
    models = expand_models(config)
    assert list(models)[:14] == list(expand_models(load_config(REPO / "config.yaml")))  # grid ids unchanged
    assert models["rb"]["weights"] == "data/robustbench/cifar10/L2/Standard.pt"
    assert models["u"]["weights"] == "data/checkpoints/r50.ckpt"
    assert (models["u"]["arch"]["num_classes"], models["u"]["seed"], models["u"]["norm"]) == (1000, 0, "l2")


def test_layer_missing_from_a_zoo_model_is_named():
    config = load_config(REPO / "config.yaml", {"models": [RB]})  # default layers block1..4: not RB's
    with pytest.raises(ConfigError, match=r"activations.layers\[0\]' = 'block1': not a layer of model 'rb'"):
        validate_config(config)


def test_imagefolder_needs_root_and_caps():
    config = load_config(REPO / "config.yaml", {"dataset": {"source": "imagefolder"}})
    with pytest.raises(ConfigError, match="'dataset'.*'root' is a required property"):
        validate_config(config)


PAPER_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_the_five_paper_configs_exist():
    assert {p.name for p in PAPER_CONFIGS} >= {"cifar10-universality.yaml", "imagenet-universality.yaml", "imagenet-transfer.yaml",
                                               "robustbench-filters.yaml", "imagenet100-universality.yaml"}


#: The robustness library's training defaults (github.com/MadryLab/robustness at a954124):
#: robustness/defaults.py:14-19 (CIFAR), :26-31 (ImageNet; CustomImageNet :44-49 the same), lr
#: :71, momentum :73, step-lr-gamma :75, attack-steps :92, use-best :96, random-start :98;
#: plain SGD (train.py:82-83); data_augmentation.py:68-74 (CIFAR), :40-51 (ImageNet).
_STEP = {"kind": "step", "step_epochs": 50, "gamma": 0.1}
LIBRARY_CIFAR = {"epochs": 150, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
                 "schedule": _STEP, "attack_steps": 7, "attack_random_start": False, "attack_use_best": True, "augment": "cifar"}
LIBRARY_IMAGENET = {**LIBRARY_CIFAR, "epochs": 200, "batch_size": 256, "weight_decay": 1e-4, "augment": "imagenet"}
TRAINING_CONFIGS = {"cifar10-universality": LIBRARY_CIFAR, "robustbench-filters": LIBRARY_CIFAR,
                    "imagenet100-universality": LIBRARY_IMAGENET}


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
def test_paper_configs_that_train_use_the_robustness_librarys_recipe(name):
    training = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())["training"]
    assert {key: training.get(key) for key in TRAINING_CONFIGS[name]} == TRAINING_CONFIGS[name]
    assert training["validation"]["select"] == "best_robust_val"


# --------------------------------------------------------------------------- paper configs set their own image-dependent settings

#: Settings of config.yaml tuned for 16x16 one-channel digits (and the smallcnn): a paper config
#: must set each of them itself, since keys it leaves out come from config.yaml.
DIGITS_TUNED = [
    ("probes", "adversarial", "batch_size"),   # images attacked at once
    ("probes", "inverted", "batch_size"),      # images inverted at once
    ("evaluation", "batch_size"),              # robust-accuracy attack batch (code default 512)
    ("activations", "batch_size"),
    ("heads",),
    ("transfer", "lp"),                        # epochs / lr picked on digits and shapes-factors
    ("transfer", "ft"),
    ("transfer", "lp_ft"),
    ("transfer", "batch_size"),                # 512: ~60 GB for a ResNet-50 at 224 px
    ("transfer", "task_settings", "heldout"),
    ("transfer", "attacks", "robust_accuracy"),
    ("transfer", "attacks", "bounds"),         # Linf 1/16: the cube inside the L2 ball on 16x16
    ("figures", "dpi"),
    ("figures", "inversions"),                 # a grid of 16 px images
]
#: Nern et al., App. B.4: LP, FT and LP-FT (epochs, lr, batch) at CIFAR (32 px) and ImageNet
#: (resized, 224/256 px) resolution.
NERN_FIT = {
    32: {"lp": (20, 0.01, 128), "ft": (20, 0.001, 128), "lp_ft": (10, 0.001, 128)},
    224: {"lp": (10, 0.001, 32), "ft": (10, 0.001, 32), "lp_ft": (5, 0.001, 32)},
}
#: Salman et al. 2020, CIFAR-10 and CIFAR-100 from ImageNet ResNets (microsoft/robust-models-
#: transfer at cea2c37, best_params_per_dataset_per_arch.md): fixed-feature (LP) lr 0.01,
#: full-network (FT) lr 0.001, 150 epochs, batch 64; LP-FT half of FT's epochs.
SALMAN_FIT = {"lp": (150, 0.01, 64), "ft": (150, 0.001, 64), "lp_ft": (75, 0.001, 64)}
#: Salman et al. 2020: the Linf eps of their robust ImageNet models, in units of 1/255.
SALMAN_LINF_GRID = (0.5, 1, 2, 4, 8)


def _get(config: dict, path: tuple):
    for key in path:
        if not isinstance(config, dict) or key not in config:
            return KeyError
        config = config[key]
    return config


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=[p.stem for p in PAPER_CONFIGS])
def test_paper_config_sets_every_digits_tuned_setting_itself(path):
    overlay = yaml.safe_load(path.read_text())
    missing = [".".join(key) for key in DIGITS_TUNED if _get(overlay, key) is KeyError]
    assert not missing, f"{path.name} takes these from config.yaml (tuned for 16x16 digits): {missing}"


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=[p.stem for p in PAPER_CONFIGS])
def test_paper_config_transfer_attacks_fit_its_image_size(path, default):
    config = load_config(REPO / "config.yaml", yaml.safe_load(path.read_text()))
    validate_config(config)
    # attacks perturb the tasks' own pixels: the study's size for held-out tasks, a dataset
    # task's stored size (CIFAR: 32) for the others; one size for all of a config's tasks
    transfer = config["transfer"]
    sizes = {config["dataset"]["image_size"] if parse_task(t)["source"] == "heldout"
             else dataset_task_spec(parse_task(t)["source"], transfer["task_settings"].get(parse_task(t)["source"], {}))["image_size"]
             for t in transfer["tasks"]}
    assert len(sizes) == 1
    size = sizes.pop()
    assert size in (32, 224)
    dims = 3 * size * size
    bounds = config["transfer"]["attacks"]["bounds"]
    l2 = [b["eps"] for b in bounds if b["norm"] == "l2"]
    linf = [b["eps"] for b in bounds if b["norm"] == "linf"]
    assert len(l2) == 1 and len(linf) == 1
    digits_linf = next(b["eps"] for b in default["transfer"]["attacks"]["bounds"] if b["norm"] == "linf")
    assert digits_linf == 0.0625 and linf[0] != digits_linf
    # the Linf ball lies inside the L2 ball (its corner at L2 distance eps * sqrt(d)) and is the
    # largest of Salman et al.'s grid that does: 2/255 at 32 px (L2 0.5), 0.5/255 at 224 px (L2 1)
    inside = [k for k in SALMAN_LINF_GRID if k / 255 * dims ** 0.5 <= l2[0]]
    assert linf[0] == pytest.approx(max(inside) / 255, abs=1e-7)
    assert linf[0] * dims ** 0.5 <= l2[0]
    assert {32: 2, 224: 0.5}[size] == max(inside)
    recipe = SALMAN_FIT if path.stem == "imagenet-transfer" else NERN_FIT[size]
    for method, (epochs, lr, batch) in recipe.items():
        fit = config["transfer"][method]
        assert (fit["epochs"], fit["lr"], fit["batch_size"]) == (epochs, lr, batch), method
    if recipe is SALMAN_FIT:  # step_lr 50 (x 0.1), wd 5e-4, their train and test transforms
        assert [config["transfer"][m]["schedule"] for m in ("lp", "ft")] == [{"kind": "step", "step_epochs": 50, "gamma": 0.1}] * 2
        assert {config["transfer"][m]["weight_decay"] for m in SALMAN_FIT} == {0.0005}
        assert [config["transfer"][m].get("augment") for m in SALMAN_FIT] == [None, "resized_crop_flip", "resized_crop_flip"]
        assert config["transfer"]["input"]["resize"] == "resize_center_crop"
    # every attack batch is configured, and at 224 px well below the digits default of 512
    batches = [config["transfer"]["batch_size"], config["probes"]["adversarial"]["batch_size"],
               config["probes"]["inverted"]["batch_size"], config["evaluation"]["batch_size"]]
    assert max(batches) <= (256 if size == 32 else 128)
    assert config["figures"]["inversions"] != default["figures"]["inversions"]


# --------------------------------------------------------------------------- settings that waste work

WASTE = [
    # every RTD trial would draw all 24 inverted images of the tiny study
    ({"comparison": {"rtd": {"batch": 30}}}, "comparison.rtd.batch", "30"),
    # more inversion targets than the 360 test digits
    ({"probes": {"inverted": {"n_samples": 400}}, "comparison": {"rtd": {"batch": 20}}}, "probes.inverted.n_samples", "400"),
    # RTD only on the heatmaps' natural probe (360 images)
    ({"comparison": {"measures": ["cka"], "matrix": {"measures": ["rtd"]}, "rtd": {"batch": 400}}}, "comparison.rtd.batch", "400"),
    ({"probes": {"adversarial": {"batch_size": 0}}}, "probes.adversarial.batch_size", "0"),
]


def _tiny(override: dict) -> dict:
    from robustlens.config import deep_update

    return deep_update(load_config(REPO / "config.yaml", yaml.safe_load(TINY.read_text())), copy.deepcopy(override))


@pytest.mark.parametrize("override,key,value", WASTE, ids=[f"{k}={v}" for _, k, v in WASTE])
def test_wasteful_setting_is_refused_naming_key_and_value(override, key, value):
    with pytest.raises(ConfigError) as err:
        validate_config(_tiny(override))
    line = next((ln for ln in str(err.value).splitlines() if f"'{key}' = {value}" in ln), None)
    assert line is not None, str(err.value)


def test_rtd_batch_is_checked_only_where_rtd_runs():
    """No RTD layers, or RTD not among the measures: any batch is fine (it is never used); a
    batch below the smallest probe (the tiny study's 24 inverted images) is fine too."""
    validate_config(_tiny({"comparison": {"rtd": {"batch": 1000, "layers": []}}}))
    validate_config(_tiny({"comparison": {"measures": ["cka"], "rtd": {"batch": 1000}}}))
    validate_config(_tiny({"comparison": {"rtd": {"batch": 23}}}))
    with pytest.raises(ConfigError, match=r"'comparison.rtd.batch' = 25: larger than the 24 samples of the inverted probe"):
        validate_config(_tiny({"comparison": {"rtd": {"batch": 25}}}))


def test_probe_batch_sizes_are_required():
    for probe in ("adversarial", "inverted"):
        config = load_config(REPO / "config.yaml")
        del config["probes"][probe]["batch_size"]
        with pytest.raises(ConfigError, match=f"probes.{probe}.*'batch_size' is a required property"):
            validate_config(config)


# --------------------------------------------------------------------------- transfer tasks

TASK_ERRORS = [
    ({"tasks": ["digits", "shapes"]}, r"'transfer.tasks\[0\]' = 'digits': .*now called 'heldout'"),
    ({"tasks": ["heldout", "cifar10-fog-2"]}, r"'transfer.tasks\[1\]' = 'cifar10-fog-2': unknown task"),
    # the default study's smallcnn takes 1-channel images; CIFAR has 3
    ({"tasks": ["cifar100"]}, r"'transfer.tasks\[0\]' = 'cifar100': its images have 3 channels, a transferred model takes 1"),
    ({"task_settings": {"cifar10": {"max_train": 10}}}, r"'transfer.task_settings.cifar10': no task in transfer.tasks uses it"),
    ({"lp": {"augment": "crop_flip"}}, r"'transfer.lp.augment' = 'crop_flip': linear probing fits on fixed features"),
    ({"ft": {"augment": "mixup"}}, r"'transfer.ft.augment' = 'mixup'"),
    ({"ft": {"schedule": {"kind": "step"}}}, r"'transfer.ft.schedule'.*'step_epochs' is a required property"),
    ({"input": {"resize": "crop"}}, r"'transfer.input.resize' = 'crop'"),
    ({"tasks": ["imagefolder"], "task_settings": {"imagefolder": {"max_train": 10}}}, r"'transfer.task_settings.imagefolder'.*'root' is a required"),
    ({"seeds": [7]}, r"'transfer.seeds' = \[7\]: selects no model \(the models' seeds are \[0, 1\]\)"),
]


@pytest.mark.parametrize("transfer,message", TASK_ERRORS, ids=[m.split(":")[0][:40] for _, m in TASK_ERRORS])
def test_transfer_task_errors_name_their_key_before_any_job(transfer, message):
    config = load_config(REPO / "config.yaml", {"transfer": transfer})
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_one_channel_tasks_are_accepted_for_three_channel_models():
    overlay = yaml.safe_load((REPO / "configs" / "imagenet-transfer.yaml").read_text())
    overlay["transfer"]["tasks"] += ["fashion_mnist", "cifar10-zoom_blur-5"]
    validate_config(load_config(REPO / "config.yaml", overlay))
