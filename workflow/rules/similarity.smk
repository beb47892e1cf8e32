rule compare_similarity:
    """Every configured representational measure, for every layer, of one model pair on one
    probe: both stores are read once."""
    input:
        a=lambda wc: store_path(wc.probe, wc.source, wc.model_a),
        b=lambda wc: store_path(wc.probe, wc.source, wc.model_b),
        ma=lambda wc: manifest_of(store_path(wc.probe, wc.source, wc.model_a)),
        mb=lambda wc: manifest_of(store_path(wc.probe, wc.source, wc.model_b)),
    output:
        "results/comparisons/similarity/{probe}/{source}/{model_a}__{model_b}.csv",
    params:
        measures=config["comparison"]["measures"],
        layers=config["activations"]["layers"],
        version=VERSION,
    log:
        "logs/compare_similarity/{probe}/{source}/{model_a}__{model_b}.log",
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/compare_similarity.py"


def similarity_parts(wildcards=None):
    return [
        f"results/comparisons/similarity/{probe}/{source}/{a}__{b}.csv"
        for probe in config["probes"]
        for source in probe_sources(probe)
        for a, b in PAIRS
    ]


rule similarity_table:
    """The tidy similarity table: one row per (probe, pair, measure, layer)."""
    input:
        similarity_parts(),
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
