from robustlens.data import DATASETS_DIR, TORCHVISION

DATASET_SOURCE = config["dataset"]["source"]


rule fetch_dataset:
    """A torchvision dataset (CIFAR-10, CIFAR-100, Fashion-MNIST), both splits, downloaded into
    data/datasets/<source> by torchvision (which verifies its md5 sums)."""
    output:
        directory(f"{DATASETS_DIR}/{{source}}"),
    wildcard_constraints:
        source="|".join(TORCHVISION),
    params:
        source=lambda wc: wc.source,
        version=VERSION,
    log:
        "logs/fetch_dataset/{source}.log",
    localrule: True
    threads: 1
    resources:
        **resources_of("fetch_dataset", mem_mb=2000, runtime=60),
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/fetch_dataset.py"


rule prepare_dataset:
    """The dataset cache: train/test arrays of the configured dataset in [0, 1]."""
    input:
        prepare_dataset_input,
    output:
        "results/data/{dataset}.npz",
    params:
        spec=config["dataset"],
        version=VERSION,
    log:
        "logs/prepare_dataset/{dataset}.log",
    threads: 1
    resources:
        **resources_of("prepare_dataset", runtime=10),
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/prepare_dataset.py"
