rule train_model:
    """Standard (eps = 0) or PGD adversarial training of one model, then its robust accuracy
    on the shared attack grid. The checkpoint's sha256 goes into the metrics file."""
    input:
        dataset=f"results/data/{DATASET}.npz",
    output:
        checkpoint="results/models/{model}/checkpoint.pt",
        metrics="results/models/{model}/metrics.json",
    params:
        spec=lambda wc: MODELS[wc.model],
        training=config["training"],
        evaluation=config["evaluation"],
        device=DEVICE,
        progress=PROGRESS,
        version=VERSION,
    log:
        "logs/train_model/{model}.log",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1,
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/train_model.py"


rule models_table:
    """One row per (model, accuracy value): clean accuracy and robust accuracy per attack eps."""
    input:
        metrics=[metrics_path(m) for m in MODELS],
    output:
        "results/tables/models.csv",
    params:
        study=STUDY,
        models=list(MODELS.values()),
        version=VERSION,
    log:
        "logs/models_table/models_table.log",
    threads: 1
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/models_table.py"


ALL_TARGETS.append("results/tables/models.csv")
