rule prepare_dataset:
    """The dataset cache: train/test arrays of the configured dataset in [0, 1]."""
    output:
        "results/data/{dataset}.npz",
    params:
        spec=config["dataset"],
        version=VERSION,
    log:
        "logs/prepare_dataset/{dataset}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/prepare_dataset.py"
