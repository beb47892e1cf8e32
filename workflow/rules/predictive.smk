rule compare_predictive:
    """Agreement, JSDSim, Cohen's kappa and error consistency of every pair on one probe, with
    the original heads (the stored logits) and with every retrained head seed."""
    input:
        stores=lambda wc: probe_files(wc.probe, models_of_pairs()),
        heads=[f"results/heads/{m}.npz" for m in models_of_pairs()],
    output:
        "results/comparisons/predictive/{probe}.csv",
    params:
        pairs=PAIRS,
        stores=lambda wc: {f"{a}__{b}": pair_stores(wc.probe, a, b) for a, b in PAIRS},
        heads={m: f"results/heads/{m}.npz" for m in models_of_pairs()},
        version=VERSION,
    log:
        "logs/compare_predictive/{probe}.log",
    threads: 1
    resources:
        **resources_of("compare_predictive"),
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/compare_predictive.py"


rule predictive_table:
    """The tidy predictive table: one row per (probe, source, head, head seed, pair, measure)."""
    input:
        [f"results/comparisons/predictive/{probe}.csv" for probe in PROBES],
    output:
        "results/tables/predictive.csv",
    params:
        study=STUDY,
        models=MODELS,
        version=VERSION,
    log:
        "logs/predictive_table/predictive_table.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/predictive_table.py"


rule universality_table:
    """The headline table: per probe and head setting, Pearson r of eps vs each predictive
    measure over same-eps pairs, permutation p-value, bootstrap-over-seeds CI, and the partial
    correlation controlling for the pair's mean clean accuracy."""
    input:
        predictive="results/tables/predictive.csv",
    output:
        "results/tables/universality.csv",
    params:
        study=STUDY,
        models=MODELS,
        statistics=config["statistics"],
        version=VERSION,
    log:
        "logs/universality_table/universality_table.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/universality_table.py"


#: The predictive stage's figures: name -> the table it plots.
PREDICTIVE_FIGURES = {
    "agreement_vs_eps": "predictive",
    "heads_agreement": "predictive",
    "universality": "universality",
}


rule figure_predictive:
    """One figure of the predictive stage from its table: agreement of the compared pairs vs eps,
    with Pearson r and the universality table's p-value (agreement_vs_eps); agreement vs eps
    before and after retraining the heads, per probe (heads_agreement); the headline figure, r of
    eps vs every predictive measure, per probe and head setting (universality)."""
    input:
        table=lambda wc: f"results/tables/{PREDICTIVE_FIGURES[wc.figure]}.csv",
    output:
        png=report("results/figures/{figure}.png", category="Universality", caption="../report/predictive.rst"),
        pdf="results/figures/{figure}.pdf",
    wildcard_constraints:
        figure=one_of(PREDICTIVE_FIGURES),
    params:
        figure=lambda wc: config["figures"][wc.figure],
        # agreement_vs_eps prints the universality table's p-value; no other figure reads them
        statistics=lambda wc: config["statistics"] if wc.figure == "agreement_vs_eps" else None,
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_predictive/{figure}.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_predictive.py"
