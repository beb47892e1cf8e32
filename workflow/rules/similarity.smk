rule compare_similarity:
    """Every configured representational measure, for every layer, of one model pair on one
    probe (for made probes: on the images of each of the two models); each store read once."""
    input:
        lambda wc: probe_files(wc.probe, [wc.model_a, wc.model_b]),
    output:
        "results/comparisons/similarity/{probe}/{model_a}__{model_b}.csv",
    params:
        stores=lambda wc: pair_stores(wc.probe, wc.model_a, wc.model_b),
        measures=config["comparison"]["measures"],
        layers=config["activations"]["layers"],
        version=VERSION,
    log:
        "logs/compare_similarity/{probe}/{model_a}__{model_b}.log",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/compare_similarity.py"


rule similarity_table:
    """The tidy similarity table: one row per (probe, source, pair, measure, layer)."""
    input:
        [f"results/comparisons/similarity/{probe}/{a}__{b}.csv" for probe in PROBES for a, b in PAIRS],
    output:
        "results/tables/similarity.csv",
    params:
        study=STUDY,
        models=MODELS,
        version=VERSION,
    log:
        "logs/similarity_table/similarity_table.log",
    threads: 1
    script:
        "../scripts/similarity_table.py"


ALL_TARGETS.append("results/tables/similarity.csv")
