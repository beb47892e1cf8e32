rule extract_natural:
    """Activations of one model on the natural probe (the test split), every configured layer
    plus logits, into one zarr store written atomically, with its manifest."""
    input:
        dataset=f"results/data/{DATASET}.npz",
        checkpoint=lambda wc: checkpoint_path(wc.model),
        metrics=lambda wc: metrics_path(wc.model),
    output:
        store=directory("results/activations/natural/{source}/{model}.zarr"),
        manifest=ensure("results/activations/natural/{source}/{model}.zarr.manifest.json", non_empty=True),
    params:
        spec=lambda wc: MODELS[wc.model],
        probe=config["probes"]["natural"],
        activations=config["activations"],
        device=DEVICE,
        compute=COMPUTE,
        progress=PROGRESS,
        version=VERSION,
    log:
        "logs/extract_natural/{source}/{model}.log",
    threads: THREADS
    resources:
        **resources_of("extract_natural", runtime=30, gpu=1),
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/extract_natural.py"
