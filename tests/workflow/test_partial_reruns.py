"""Partial reruns: a target builds only what it needs, and a change reruns only what it affects.

(A changed figure setting reruns only that figure: test_workflow.py.)
"""

from __future__ import annotations

import re

from support import planned_job_details, planned_jobs

FIGURE = "results/figures/cka_by_layer.png"
# Rules the CKA figure cannot need: the predictive behaviour, heads, filters and transfer studies.
NOT_FOR_CKA = re.compile(r"predictive|universality|heads|filters|transfer|probes_table|models_table")


def test_one_figure_in_a_fresh_directory_builds_only_its_chain(tmp_path):
    jobs = planned_jobs(tmp_path, FIGURE)
    assert jobs["figure_similarity"] == 1
    assert [rule for rule in jobs if rule.startswith("figure_")] == ["figure_similarity"]
    assert {"prepare_dataset", "train_model", "extract_natural", "compare_similarity", "similarity_table"} <= set(jobs)
    assert not [rule for rule in jobs if NOT_FOR_CKA.search(rule)], jobs
    assert "all" not in jobs
    assert jobs["train_model"] == 4  # the tiny study's models, all compared


def test_one_missing_figure_of_a_finished_run_reruns_alone(tiny_copy):
    (tiny_copy / FIGURE).unlink()
    assert planned_jobs(tiny_copy, FIGURE) == {"figure_similarity": 1}
    assert planned_jobs(tiny_copy) == {"figure_similarity": 1, "all": 1}


def mentions(text: str, model: str) -> bool:
    return re.search(rf"(?<![\w.+-]){re.escape(model)}(?![\w.+-])", text) is not None


def test_retraining_one_model_reruns_its_chain_and_what_includes_it(tiny_copy, tmp_path):
    """One model's training changed (here forced; the config has no per-model setting): its own
    jobs rerun, the other models' do not, and so do the tables and figures that include it."""
    full = planned_job_details(tmp_path / "fresh")
    model = next(job["wildcards"]["model"] for job in full if job["rule"] == "train_model")
    checkpoint = f"results/models/{model}/checkpoint.pt"
    planned = planned_job_details(tiny_copy, "--forcerun", checkpoint)
    counts = {}
    for job in planned:
        counts[job["rule"]] = counts.get(job["rule"], 0) + 1

    # its chain, and no other model's
    assert counts["train_model"] == 1 and counts["extract_natural"] == 1
    assert "prepare_dataset" not in counts
    for job in planned:
        model_wildcards = [v for k, v in job["wildcards"].items() if k.startswith("model")]
        if model_wildcards:
            involved = model in model_wildcards or any(mentions(f, model) for f in job["input"])
            assert involved, f"{job['rule']} {job['wildcards']} does not involve {model}"

    # expected: the full plan's jobs downstream of the model's checkpoint, by their declared files
    expected, outputs = [], {checkpoint}
    for job in full:  # Snakemake prints jobs in topological order
        if job["rule"] == "train_model" and job["wildcards"]["model"] == model or set(job["input"]) & outputs:
            expected.append(job)
            outputs |= set(job["output"])
    key = lambda job: (job["rule"], tuple(sorted(job["output"])))  # noqa: E731
    assert sorted(map(key, planned)) == sorted(map(key, expected))

    # and, independently of the DAG: every finished table that contains the model reruns
    # (tables of statistics over models, e.g. correlations with eps, rerun without naming it)
    rerun_tables = {f for job in planned for f in job["output"] if f.startswith("results/tables/")}
    tables = (tiny_copy / "results/tables").glob("*.csv")
    containing = {f"results/tables/{table.name}" for table in tables if mentions(table.read_text(), model)}
    assert containing and containing <= rerun_tables
    assert {"results/tables/models.csv", "results/tables/similarity.csv"} <= containing
