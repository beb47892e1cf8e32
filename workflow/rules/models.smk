rule train_model:
    """Standard (eps = 0) or PGD adversarial training of one model, then its robust accuracy
    on the shared attack grid. The checkpoint's sha256 goes into the metrics file, the training
    curves into training.csv. While it trains, resumable state is kept in resume/ (outside the
    outputs): a killed job rerun continues from its last saved epoch."""
    input:
        dataset=f"results/data/{DATASET}.npz",
    output:
        checkpoint="results/models/{model}/checkpoint.pt",
        metrics="results/models/{model}/metrics.json",
        curves="results/models/{model}/training.csv",
    wildcard_constraints:
        model=one_of(TRAIN_MODELS),
    params:
        spec=lambda wc: MODELS[wc.model],
        resume=lambda wc: f"resume/train_model/{wc.model}.pt",
        training=config["training"],
        evaluation=config["evaluation"],
        image_size=config["dataset"]["image_size"],
        device=DEVICE,
        compute=COMPUTE,
        progress=PROGRESS,
        version=VERSION,
    log:
        "logs/train_model/{model}.log",
    threads: THREADS
    resources:
        **resources_of("train_model", runtime=120, gpu=1),
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/train_model.py"


rule fetch_weights:
    """A zoo model's own weights file (RobustBench: Google Drive through robustbench; timm: the
    pinned tag's file; url: the checkpoint), downloaded resumably, verified by sha256 where
    known and renamed into place. A file placed there by hand with the right sha256 is used as
    it is; offline, the job fails at once naming the file to place."""
    output:
        "data/{weights}",
    wildcard_constraints:
        weights=one_of([path[len("data/"):] for path in WEIGHTS]),
    params:
        spec=lambda wc: WEIGHTS[f"data/{wc.weights}"],
        version=VERSION,
    log:
        "logs/fetch_weights/{weights}.log",
    localrule: True
    threads: 1
    resources:
        **resources_of("fetch_weights", mem_mb=2000, runtime=60),
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/fetch_weights.py"


rule zoo_model:
    """A RobustBench, timm or url model loaded from its own weights file through its source's
    loader, evaluated like a trained model (clean and PGD robust accuracy on the shared grid),
    and written in the same two files as train_model, so every later rule treats it alike."""
    input:
        dataset=f"results/data/{DATASET}.npz",
        weights=lambda wc: MODELS[wc.model]["weights"],
    output:
        checkpoint="results/models/{model}/checkpoint.pt",
        metrics="results/models/{model}/metrics.json",
    wildcard_constraints:
        model=one_of(ZOO_MODELS),
    params:
        spec=lambda wc: MODELS[wc.model],
        evaluation=config["evaluation"],
        device=DEVICE,
        compute=COMPUTE,
        progress=PROGRESS,
        version=VERSION,
    log:
        "logs/zoo_model/{model}.log",
    threads: THREADS
    resources:
        **resources_of("zoo_model", runtime=60, gpu=1),
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/zoo_model.py"


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
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/models_table.py"


rule figure_training_curves:
    """Training curves of the models trained in the workflow: loss, learning rate, clean and
    robust validation accuracy per epoch, the kept epoch marked."""
    input:
        curves=[f"results/models/{m}/training.csv" for m in TRAIN_MODELS],
    output:
        png=report("results/figures/training_curves.png", category="Models", caption="../report/training_curves.rst"),
        pdf="results/figures/training_curves.pdf",
    params:
        figure=config["figures"]["training_curves"],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_training_curves/figure.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_training_curves.py"
