rule make_probe:
    """Adversarial examples (PGD) or inverted images (representation inversion) of one source
    model, and the activations of the source and each of its partners on them: one store per
    (probe, source, target), all written by this job into the source's activation directory."""
    input:
        dataset=f"results/data/{DATASET}.npz",
        checkpoints=lambda wc: [checkpoint_path(m) for m in probe_targets(wc.model)],
        metrics=lambda wc: [metrics_path(m) for m in probe_targets(wc.model)],
    output:
        probe=directory("results/probes/{probe}/{model}.zarr"),
        probe_manifest=ensure("results/probes/{probe}/{model}.zarr.manifest.json", non_empty=True),
        activations=directory("results/activations/{probe}/{model}"),
        index=ensure("results/activations/{probe}/{model}.index.json", non_empty=True),
    wildcard_constraints:
        probe="adversarial|inverted",
    params:
        source=lambda wc: MODELS[wc.model],
        targets=lambda wc: [MODELS[m] for m in probe_targets(wc.model)],
        settings=lambda wc: config["probes"][wc.probe],
        activations=config["activations"],
        device=DEVICE,
        compute=COMPUTE,
        progress=PROGRESS,
        version=VERSION,
    log:
        "logs/make_probe/{probe}/{model}.log",
    threads: THREADS
    resources:
        **resources_of("make_probe", runtime=60, gpu=1),
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/make_probe.py"


rule probes_table:
    """Per source model: the adversarial attack's success rate and robust accuracy, and the
    inversion's initial and final relative representation loss."""
    input:
        [f"results/probes/{p}/{m}.zarr" for p in MADE_PROBES for m in models_of_pairs()],
    output:
        "results/tables/probes.csv",
    params:
        study=STUDY,
        models=MODELS,
        probes=MADE_PROBES,
        sources=models_of_pairs(),
        version=VERSION,
    log:
        "logs/probes_table/probes_table.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/probes_table.py"


rule figure_inversions:
    """Example inversions: seed image, target image and the inverted image for one standard and
    the most robust model."""
    input:
        dataset=f"results/data/{DATASET}.npz",
        stores=lambda wc: [f"results/probes/inverted/{m}.zarr" for m in inversion_figure_models()],
    output:
        png=report("results/figures/inversions.png", category="Probes", caption="../report/inversions.rst"),
        pdf="results/figures/inversions.pdf",
    params:
        models=lambda wc: inversion_figure_models(),
        split=config["probes"].get("inverted", {}).get("split", "test"),
        figure=config["figures"]["inversions"],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_inversions/figure.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_inversions.py"

