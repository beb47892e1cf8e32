rule compare_similarity:
    """Every configured representational measure, for every layer, of one model pair on every
    probe (for made probes: on the images of each of the two models); each store read once.
    One job per pair, not per (probe, pair): a job's start-up (torch, ripser) costs as much as
    the measures of one probe."""
    input:
        lambda wc: [f for probe in PROBES for f in probe_files(probe, [wc.model_a, wc.model_b])],
    output:
        "results/comparisons/similarity/{model_a}__{model_b}.csv",
    params:
        stores=lambda wc: [(probe, *stores) for probe in PROBES for stores in pair_stores(probe, wc.model_a, wc.model_b)],
        settings=config["comparison"],
        layers=config["activations"]["layers"],
        device=DEVICE,
        compute=COMPUTE,
        version=VERSION,
    log:
        "logs/compare_similarity/{model_a}__{model_b}.log",
    benchmark:
        "logs/compare_similarity/{model_a}__{model_b}.benchmark.tsv",
    threads: THREADS
    resources:
        **resources_of("compare_similarity", runtime=30, gpu=1),
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/compare_similarity.py"


rule similarity_table:
    """The tidy similarity table: one row per (probe, source, pair, measure, layer)."""
    input:
        [f"results/comparisons/similarity/{a}__{b}.csv" for a, b in PAIRS],
    output:
        "results/tables/similarity.csv",
    params:
        study=STUDY,
        models=MODELS,
        version=VERSION,
    log:
        "logs/similarity_table/similarity_table.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/similarity_table.py"


rule similarity_matrix:
    """Configured measures for every pair of models (not only the compared pairs) on one probe:
    the pairwise heatmaps."""
    input:
        probe_files(config["comparison"]["matrix"]["probe"], list(MODELS)),
    output:
        "results/tables/similarity_matrix.csv",
    params:
        study=STUDY,
        models=MODELS,
        stores={m: pair_stores(config["comparison"]["matrix"]["probe"], m, m)[0][1] for m in MODELS},
        settings=config["comparison"],
        layers=config["activations"]["layers"],
        device=DEVICE,
        compute=COMPUTE,
        version=VERSION,
    log:
        "logs/similarity_matrix/similarity_matrix.log",
    benchmark:
        "logs/similarity_matrix/similarity_matrix.benchmark.tsv",
    threads: THREADS
    resources:
        **resources_of("similarity_matrix", runtime=30, gpu=1),
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/similarity_matrix.py"


rule correlations_table:
    """Correlation of eps with every representational measure per probe and layer (Pearson r,
    permutation p-value over models, bootstrap-over-seeds CI, Benjamini-Hochberg q-value)."""
    input:
        similarity="results/tables/similarity.csv",
    output:
        "results/tables/correlations.csv",
    params:
        study=STUDY,
        models=MODELS,
        statistics=config["statistics"],
        version=VERSION,
    log:
        "logs/correlations_table/correlations_table.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/correlations_table.py"


#: The similarity stage's figures: name -> (table, report category).
SIMILARITY_FIGURES = {
    "cka_by_layer": ("similarity", "Universality"),
    "similarity_vs_eps": ("similarity", "Representational similarity"),
    "similarity_heatmaps": ("similarity_matrix", "Representational similarity"),
}


rule figure_similarity:
    """One figure of the similarity stage from its table: mean CKA across same-eps pairs by layer,
    one line per eps (cka_by_layer); each representational measure vs eps per layer and probe,
    mean and range of the pair values (similarity_vs_eps); pairwise heatmaps of every model pair
    per measure and layer (similarity_heatmaps)."""
    input:
        table=lambda wc: f"results/tables/{SIMILARITY_FIGURES[wc.figure][0]}.csv",
    output:
        png=report("results/figures/{figure}.png", category=lambda wc: SIMILARITY_FIGURES[wc.figure][1], caption="../report/similarity.rst"),
        pdf="results/figures/{figure}.pdf",
    wildcard_constraints:
        figure=one_of(SIMILARITY_FIGURES),
    params:
        figure=lambda wc: config["figures"][wc.figure],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_similarity/{figure}.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_similarity.py"
