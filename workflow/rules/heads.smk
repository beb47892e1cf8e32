rule retrain_heads:
    """New linear heads (one per head seed) on the frozen penultimate features of the training
    split; accuracy on the test split, never on the data they were fit on."""
    input:
        dataset=f"results/data/{DATASET}.npz",
        checkpoint=lambda wc: checkpoint_path(wc.model),
        metrics=lambda wc: metrics_path(wc.model),
    output:
        "results/heads/{model}.npz",
    params:
        spec=lambda wc: MODELS[wc.model],
        heads=config["heads"],
        stream=config["training"].get("stream", False),
        image_size=config["dataset"]["image_size"],
        device=DEVICE,
        compute=COMPUTE,
        progress=PROGRESS,
        version=VERSION,
    log:
        "logs/retrain_heads/{model}.log",
    threads: THREADS
    resources:
        **resources_of("retrain_heads", runtime=20, gpu=1),
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/retrain_heads.py"


rule heads_table:
    """Test accuracy of every model's original head and of each retrained head."""
    input:
        [f"results/heads/{m}.npz" for m in models_of_pairs()],
    output:
        "results/tables/heads.csv",
    params:
        study=STUDY,
        models=[MODELS[m] for m in models_of_pairs()],
        version=VERSION,
    log:
        "logs/heads_table/heads_table.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/heads_table.py"
