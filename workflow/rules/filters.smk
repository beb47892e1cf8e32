rule extract_filters:
    """Every 3x3 convolution filter of one model, with its layer, depth and normalised depth,
    into a zarr store (Gavrikov & Keuper); other kernel sizes are skipped and counted."""
    input:
        checkpoint=lambda wc: checkpoint_path(wc.model),
        metrics=lambda wc: metrics_path(wc.model),
    output:
        store=directory("results/filters/{model}.zarr"),
        manifest=ensure("results/filters/{model}.zarr.manifest.json", non_empty=True),
    params:
        spec=lambda wc: MODELS[wc.model],
        image_size=config["dataset"]["image_size"],
        version=VERSION,
    log:
        "logs/extract_filters/{model}.log",
    threads: 1
    resources:
        **resources_of("extract_filters", runtime=10),
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/extract_filters.py"


rule filters_tables:
    """Per-layer quality (sparsity, variance entropy, orthogonality), the PCA filter bases and
    the coefficient shift robust vs normal by depth, with seed-half and permutation nulls."""
    input:
        stores=[f"results/filters/{m}.zarr" for m in MODELS],
        manifests=[f"results/filters/{m}.zarr.manifest.json" for m in MODELS],
    output:
        quality="results/tables/filters_quality.csv",
        shift="results/tables/filters_shift.csv",
        basis="results/tables/filters_basis.csv",
    params:
        study=STUDY,
        settings=config["filters"],
        version=VERSION,
    log:
        "logs/filters_tables/filters_tables.log",
    benchmark:
        "logs/filters_tables/filters_tables.benchmark.tsv",
    threads: 1
    resources:
        **resources_of("filters_tables", runtime=30),
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/filters_tables.py"


FILTER_FIGURES = {
    "filters_kl_by_depth": "shift",
    "filters_basis": "basis",
    "filters_quality_by_depth": "quality",
}


rule figure_filters:
    """One figure of the filter analysis from its table."""
    input:
        table=lambda wc: f"results/tables/filters_{FILTER_FIGURES[wc.figure]}.csv",
    output:
        png=report("results/figures/{figure}.png", category="Convolution filters", caption="../report/filters.rst"),
        pdf="results/figures/{figure}.pdf",
    wildcard_constraints:
        figure="|".join(FILTER_FIGURES),
    params:
        figure=lambda wc: config["figures"][wc.figure],
        settings=config["filters"],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_filters/{figure}.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_filters.py"


rule figure_first_layer_filters:
    """The first-layer 3x3 filters of one robust and one normal model side by side."""
    input:
        robust=lambda wc: f"results/filters/{first_layer_models()['robust']}.zarr",
        normal=lambda wc: f"results/filters/{first_layer_models()['normal']}.zarr",
    output:
        png=report("results/figures/filters_first_layer.png", category="Convolution filters", caption="../report/filters.rst"),
        pdf="results/figures/filters_first_layer.pdf",
    params:
        models=first_layer_models(),
        figure=config["figures"]["filters_first_layer"],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_first_layer_filters/figure.log",
    threads: 1
    resources:
        **resources_of("figure_first_layer_filters"),
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_first_layer_filters.py"
