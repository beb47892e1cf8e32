rule compare_predictive:
    """Agreement, JSDSim, Cohen's kappa and error consistency of every pair on one probe,
    from the logits in the stores."""
    input:
        stores=lambda wc: [store_path(wc.probe, wc.source, m) for m in models_of_pairs()],
        manifests=lambda wc: [manifest_of(store_path(wc.probe, wc.source, m)) for m in models_of_pairs()],
    output:
        "results/comparisons/predictive/{probe}/{source}.csv",
    params:
        models=lambda wc: models_of_pairs(),
        pairs=PAIRS,
        version=VERSION,
    log:
        "logs/compare_predictive/{probe}/{source}.log",
    threads: 1
    script:
        "../scripts/compare_predictive.py"


rule predictive_table:
    """The tidy predictive table: one row per (probe, pair, measure)."""
    input:
        [f"results/comparisons/predictive/{probe}/{source}.csv" for probe in config["probes"] for source in probe_sources(probe)],
    output:
        "results/tables/predictive.csv",
    params:
        study=STUDY,
        models=MODELS,
        version=VERSION,
    log:
        "logs/predictive_table/predictive_table.log",
    threads: 1
    script:
        "../scripts/predictive_table.py"


ALL_TARGETS.append("results/tables/predictive.csv")
