FIGURE_FORMATS = ["png", "pdf"]


rule figure_agreement_vs_eps:
    """Agreement of the compared pairs vs eps, with Pearson r and the universality table's p-value."""
    input:
        predictive="results/tables/predictive.csv",
    output:
        png=report("results/figures/agreement_vs_eps.png", category="Universality", caption="../report/agreement_vs_eps.rst"),
        pdf="results/figures/agreement_vs_eps.pdf",
    params:
        figure=config["figures"]["agreement_vs_eps"],
        statistics=config["statistics"],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_agreement_vs_eps/figure.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_agreement_vs_eps.py"


rule figure_cka_by_layer:
    """Mean CKA across same-eps pairs by layer, one line per eps."""
    input:
        similarity="results/tables/similarity.csv",
    output:
        png=report("results/figures/cka_by_layer.png", category="Universality", caption="../report/cka_by_layer.rst"),
        pdf="results/figures/cka_by_layer.pdf",
    params:
        figure=config["figures"]["cka_by_layer"],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_cka_by_layer/figure.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_cka_by_layer.py"


ALL_TARGETS.extend(
    ["results/figures/agreement_vs_eps.png", "results/figures/agreement_vs_eps.pdf",
     "results/figures/cka_by_layer.png", "results/figures/cka_by_layer.pdf"]
)


rule figure_heads_agreement:
    """Agreement vs eps before and after retraining the heads, per probe."""
    input:
        predictive="results/tables/predictive.csv",
    output:
        png=report("results/figures/heads_agreement.png", category="Universality", caption="../report/heads_agreement.rst"),
        pdf="results/figures/heads_agreement.pdf",
    params:
        figure=config["figures"]["heads_agreement"],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_heads_agreement/figure.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_heads_agreement.py"


rule figure_universality:
    """The headline figure: r of eps vs every predictive measure, per probe and head setting."""
    input:
        table="results/tables/universality.csv",
    output:
        png=report("results/figures/universality.png", category="Universality", caption="../report/universality.rst"),
        pdf="results/figures/universality.pdf",
    params:
        figure=config["figures"]["universality"],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_universality/figure.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_universality.py"


ALL_TARGETS.extend(f"results/figures/{name}.{ext}" for name in ("heads_agreement", "universality") for ext in FIGURE_FORMATS)


rule figure_similarity_vs_eps:
    """Each representational measure vs eps per layer and probe: mean and range of the pair values."""
    input:
        similarity="results/tables/similarity.csv",
    output:
        png=report("results/figures/similarity_vs_eps.png", category="Representational similarity", caption="../report/similarity_vs_eps.rst"),
        pdf="results/figures/similarity_vs_eps.pdf",
    params:
        figure=config["figures"]["similarity_vs_eps"],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_similarity_vs_eps/figure.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_similarity_vs_eps.py"


rule figure_similarity_heatmaps:
    """Pairwise heatmaps of every model pair per measure and layer."""
    input:
        matrix="results/tables/similarity_matrix.csv",
    output:
        png=report("results/figures/similarity_heatmaps.png", category="Representational similarity", caption="../report/similarity_heatmaps.rst"),
        pdf="results/figures/similarity_heatmaps.pdf",
    params:
        figure=config["figures"]["similarity_heatmaps"],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_similarity_heatmaps/figure.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_similarity_heatmaps.py"


ALL_TARGETS.extend(f"results/figures/{name}.{ext}" for name in ("similarity_vs_eps", "similarity_heatmaps") for ext in FIGURE_FORMATS)
