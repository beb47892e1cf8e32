# Robustness transfer (Salman et al. 2020; Nern et al.): every selected model is transferred to
# every downstream task by LP, FT and LP-FT; one job per model computes, for each task, the
# transfer accuracy, the AS score and both bounds; one job gathers the tables.
from robustlens.config import dataset_task_images
from robustlens.tasks import DATASET_TASKS, TASK_CHANNELS, TASK_REGEX, dataset_task_spec, parse_task

TRANSFER = config["transfer"]
TRANSFER_MODELS = [m for m, spec in MODELS.items() if spec["seed"] in TRANSFER["seeds"]]
TRANSFER_TASKS = list(TRANSFER["tasks"])


rule transfer_task:
    """One downstream task with its own train/test split (held-out images, a dataset source's
    own splits at their own resolution, corrupted copies, procedural sprites), written atomically."""
    input:
        unpack(transfer_task_input),
    output:
        "results/tasks/{task}.npz",
    wildcard_constraints:
        task=TASK_REGEX,
    params:
        task=lambda wc: wc.task,
        settings=lambda wc: task_settings(wc.task),
        image_size=config["dataset"]["image_size"],
        root=DATASETS_DIR,
        version=VERSION,
    log:
        "logs/transfer_task/{task}.log",
    threads: 1
    resources:
        **resources_of("transfer_task", runtime=10),
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/transfer_task.py"


rule transfer:
    """LP, FT and LP-FT of one model on every task (its images resized to the model's input on the
    device: transfer.input); clean and robust accuracy (MSE), the AS
    score (L2 and Linf; transfer.attacks.as_method), Lemma 1 (lhs, rhs_as, rhs_best) and Thm 2
    (transfer.thm2_label; AS(x) from the AS attack and the largest change tried) of each
    transferred model.
    One job per model: its tasks share the job's start-up (torch import, checkpoint check).
    While it runs, resumable state is kept in resume/transfer/ (outside the outputs; every
    training.resume_minutes and after each fit and each evaluated method): a killed job rerun
    continues where it was."""
    input:
        tasks=[f"results/tasks/{t}.npz" for t in TRANSFER_TASKS],
        checkpoint=lambda wc: checkpoint_path(wc.model),
        metrics=lambda wc: metrics_path(wc.model),
    output:
        "results/transfer/{model}.json",
    params:
        spec=lambda wc: MODELS[wc.model],
        tasks=TRANSFER_TASKS,
        input_size=config["dataset"]["image_size"],
        settings={k: v for k, v in TRANSFER.items() if k not in ("seeds", "tasks", "task_settings")},
        resume=lambda wc: f"resume/transfer/{wc.model}",
        device=DEVICE,
        compute=COMPUTE,
        progress=PROGRESS,
        version=VERSION,
    log:
        "logs/transfer/{model}.log",
    threads: THREADS
    resources:
        **resources_of("transfer", runtime=30, gpu=1),
    cache: True
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/transfer.py"


rule transfer_tables:
    """transfer.csv (accuracy / MSE per method and attack) and bounds.csv (AS score, Lemma 1,
    Thm 2, with the AS attack's method and Thm 2's label), tidy: one row per value."""
    input:
        [f"results/transfer/{m}.json" for m in TRANSFER_MODELS],
    output:
        transfer="results/tables/transfer.csv",
        bounds="results/tables/bounds.csv",
    params:
        study=STUDY,
        models=[MODELS[m] for m in TRANSFER_MODELS],
        tasks=TRANSFER_TASKS,
        version=VERSION,
    log:
        "logs/transfer_tables/transfer_tables.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/transfer_tables.py"


TRANSFER_FIGURES = {
    "transfer_accuracy": "transfer",
    "transfer_sensitivity": "bounds",
    "transfer_bounds": "bounds",
    "transfer_thm2": "bounds",
}


rule figure_transfer:
    """One figure of the transfer study: accuracy vs eps per task and method (Salman et al.),
    AS score vs relative loss gap (Nern et al., Table 4), Lemma 1's LHS and RHS per task, Thm 2's
    fulfilled inputs broken by the loss attack (AS attack alone vs largest change tried)."""
    input:
        table=lambda wc: f"results/tables/{TRANSFER_FIGURES[wc.figure]}.csv",
    output:
        png=report("results/figures/{figure}.png", category="Robustness transfer", caption="../report/transfer.rst"),
        pdf="results/figures/{figure}.pdf",
    wildcard_constraints:
        figure="|".join(TRANSFER_FIGURES),
    params:
        figure=lambda wc: config["figures"][wc.figure],
        dpi=config["figures"]["dpi"],
        version=VERSION,
    log:
        "logs/figure_transfer/{figure}.log",
    threads: 1
    resources:
        mem_mb=table_memory,
    conda:
        "../../envs/robustlens.yaml"
    script:
        "../scripts/figure_transfer.py"
