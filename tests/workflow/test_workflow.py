"""The workflow end to end on the tiny study (run once per session, see conftest.tiny_run)."""

from __future__ import annotations

import filecmp
import json
import re

import numpy as np
import pandas as pd
import pytest

from support import REPO, TINY, planned_jobs, snakemake, write_config
from robustlens.store import open_store

TABLES = ["models.csv", "similarity.csv", "predictive.csv"]


def all_rules(workdir) -> set[str]:
    out = snakemake(workdir, "--list-rules").stdout
    # one line per rule, its name first (docstrings follow in parentheses, continued indented)
    return {m.group(1) for line in out.splitlines() if (m := re.match(r"^(\w+)(\s|$)", line))} - {"all"}


#: Rules for models and datasets from outside the workflow, which the embedded study does not
#: use: fetch_weights and zoo_model run in tests/workflow/test_zoo_workflow.py; fetch_dataset
#: needs the network.
EXTERNAL_SOURCE_RULES = {"fetch_weights", "zoo_model", "fetch_dataset"}


def test_every_rule_ran_and_wrote_a_log(tiny_run):
    rules = all_rules(tiny_run) - EXTERNAL_SOURCE_RULES
    assert {"train_model", "extract_natural", "compare_similarity", "compare_predictive"} <= rules
    summary = snakemake(tiny_run, "--summary").stdout
    ran = {line.split("\t")[2] for line in summary.splitlines()[1:] if line.count("\t") >= 3}
    assert rules <= ran, f"rules that made no output: {rules - ran}"
    logged = {p.parts[len((tiny_run / 'logs').parts)] for p in (tiny_run / "logs").rglob("*.log")}
    assert rules <= logged, f"rules without a log: {rules - logged}"


def test_finished_run_plans_nothing(tiny_run):
    assert planned_jobs(tiny_run) == {}


def test_similarity_table_matches_independent_cka(tiny_run):
    """Biased linear CKA recomputed from the stores with explicit centred Gram matrices."""
    table = pd.read_csv(tiny_run / "results/tables/similarity.csv")
    row = table[(table["measure"] == "cka") & (table["layer"] == "block3") & (table["probe"] == "natural")].iloc[0]
    a = open_store(tiny_run / f"results/activations/natural/digits/{row.model_a}.zarr")["block3"].values.astype(float)
    b = open_store(tiny_run / f"results/activations/natural/digits/{row.model_b}.zarr")["block3"].values.astype(float)
    n = len(a)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ a @ a.T @ h, h @ b @ b.T @ h
    expected = np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))
    assert row.value == pytest.approx(expected, rel=1e-9)
    # tidy: one row per (probe, pair, measure, layer); models carry eps and seed
    assert not table.duplicated(["probe", "source", "model_a", "model_b", "measure", "layer"]).any()
    assert (table["eps_a"] == table["eps_b"]).all() and (table["seed_a"] != table["seed_b"]).all()
    # per pair and input set: 4 layers x 4 measures + RTD on the penultimate layer only; the
    # natural probe is one input set, each made probe two (the images of both models)
    per_set = 4 * 4 + 1
    assert table.groupby("probe").size().to_dict() == {"natural": 2 * per_set, "adversarial": 4 * per_set, "inverted": 4 * per_set}
    # every value beats its permutation baseline (the tiny models still learn structure)
    with_baseline = table.dropna(subset=["baseline_mean"])
    assert (with_baseline["value"] > with_baseline["baseline_mean"]).mean() > 0.9


def test_predictive_table_matches_stored_logits(tiny_run):
    table = pd.read_csv(tiny_run / "results/tables/predictive.csv")
    row = table[(table["measure"] == "agreement") & (table["probe"] == "natural") & (table["head"] == "original")].iloc[0]
    a = open_store(tiny_run / f"results/activations/natural/digits/{row.model_a}.zarr")["logits"].values
    b = open_store(tiny_run / f"results/activations/natural/digits/{row.model_b}.zarr")["logits"].values
    assert row.value == pytest.approx(np.mean(a.argmax(1) == b.argmax(1)))


def test_models_table_has_clean_and_robust_accuracy(tiny_run):
    table = pd.read_csv(tiny_run / "results/tables/models.csv")
    assert set(table["model"]) == {f"smallcnn-l2-eps{e}-s{s}" for e in (0, 1) for s in (0, 1)}
    assert set(table["metric"]) == {"clean_accuracy", "robust_accuracy"}
    assert table["value"].between(0, 1).all()
    # clean accuracy is the accuracy of the logits stored for the natural probe (the test split)
    clean = table[table["metric"] == "clean_accuracy"].set_index("model")["value"]
    for model, value in clean.items():
        store = open_store(tiny_run / f"results/activations/natural/digits/{model}.zarr")
        assert value == pytest.approx(np.mean(store["logits"].values.argmax(1) == store["label"].values), abs=1e-9), model


def test_training_curves_beside_each_checkpoint_hold_its_history(tiny_run):
    """training.csv: one row per epoch with the metrics file's history; the tiny study keeps
    the last epoch (select: last), validates every epoch on round(0.1 * 1437) = 144 held
    training images (so accuracies are multiples of 1/144), and leaves no resumable state."""
    for model in (f"smallcnn-l2-eps{e}-s{s}" for e in (0, 1) for s in (0, 1)):
        curves = pd.read_csv(tiny_run / f"results/models/{model}/training.csv")
        history = json.loads((tiny_run / f"results/models/{model}/metrics.json").read_text())["history"]
        assert curves["epoch"].tolist() == [row["epoch"] for row in history] == [1, 2, 3]
        assert np.allclose(curves["loss"], [row["loss"] for row in history], rtol=0, atol=0)
        assert curves["selected"].tolist() == [False, False, True]
        for column in ("val_clean_accuracy", "val_robust_accuracy"):
            assert np.allclose(curves[column] * 144, np.round(curves[column] * 144), atol=1e-9)
        assert (curves["val_robust_accuracy"] <= curves["val_clean_accuracy"]).all()
        assert curves["lr"].iloc[0] == pytest.approx(0.05 / 25)  # OneCycleLR starts at max_lr / div_factor
    assert not list((tiny_run / "resume").glob("**/*.pt"))


def unbiased_cka(a, b):
    """Unbiased linear CKA from the unbiased HSIC estimator (Song et al. 2012, Eq. 5) on Gram
    matrices with zeroed diagonals, written out here."""
    def hsic(k, l):
        n = len(k)
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        one = np.ones(n)
        return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))

    k, l = a @ a.T, b @ b.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_one_value_of_every_table_behind_a_figure_recomputed_from_the_artifacts(tiny_run):
    """heads.csv from the stored heads and features, probes.csv from the logits on the probe's
    own images, similarity_matrix.csv by the unbiased HSIC written out, filters_quality.csv
    (Gavrikov & Keuper Eq. 7) from the checkpoint's weights."""
    import torch

    tables = tiny_run / "results/tables"
    model = "smallcnn-l2-eps1-s0"
    natural = open_store(tiny_run / f"results/activations/natural/digits/{model}.zarr")
    labels = natural["label"].values

    heads = pd.read_csv(tables / "heads.csv").query("model == @model and split == 'test'")
    stored = np.load(tiny_run / f"results/heads/{model}.npz")
    for k, seed in enumerate(stored["seeds"]):
        logits = natural["penultimate"].values.astype(float) @ stored["weight"][k].T + stored["bias"][k]
        value = heads.query("head == 'retrained' and head_seed == @seed")["value"].item()
        assert value == pytest.approx(np.mean(logits.argmax(1) == labels), abs=1e-12)
    original = heads.query("head == 'original'")["value"].item()
    assert original == pytest.approx(np.mean(natural["logits"].values.argmax(1) == labels), abs=1e-12)

    probes = pd.read_csv(tables / "probes.csv").query("probe == 'adversarial' and metric == 'robust_accuracy'")
    for m, value in probes.set_index("model")["value"].items():
        own = open_store(tiny_run / f"results/activations/adversarial/{m}/{m}.zarr")
        assert value == pytest.approx(np.mean(own["logits"].values.argmax(1) == own["label"].values), abs=1e-12), m
    assert probes["value"].max() > 0  # the robust models keep some accuracy: the check is not 0 == 0

    matrix = pd.read_csv(tables / "similarity_matrix.csv")
    row = matrix[(matrix["measure"] == "cka_unbiased") & (matrix["layer"] == "block3") & (matrix["probe"] == "natural")].iloc[0]
    a = open_store(tiny_run / f"results/activations/natural/digits/{row.model_a}.zarr")["block3"].values.astype(float)
    b = open_store(tiny_run / f"results/activations/natural/digits/{row.model_b}.zarr")["block3"].values.astype(float)
    assert row.value == pytest.approx(unbiased_cka(a, b), rel=1e-8)

    quality = pd.read_csv(tables / "filters_quality.csv")
    weights = torch.load(tiny_run / f"results/models/{model}/checkpoint.pt", weights_only=True)["block2.0.weight"].double()
    filter_max = weights.abs().amax(dim=(2, 3))
    expected = (filter_max <= weights.abs().max() / 100).double().mean().item()
    row = quality.query("model == @model and layer == 'block2.0' and metric == 'sparsity'")
    assert row["value"].item() == pytest.approx(expected, abs=1e-12)
    assert row["n_filters"].item() == filter_max.numel()


FIGURES = [
    "agreement_vs_eps", "cka_by_layer", "similarity_vs_eps", "similarity_heatmaps", "heads_agreement",
    "universality", "inversions", "filters_kl_by_depth", "filters_basis", "filters_quality_by_depth",
    "filters_first_layer", "training_curves",
]


def test_figures_exist(tiny_run):
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (tiny_run / f"results/figures/{name}.{ext}").stat().st_size > 1000, name


def test_retrained_heads_agree_on_made_probes_of_both_sources(tiny_run):
    """Pairs are compared on the images of both of their models, with every head."""
    table = pd.read_csv(tiny_run / "results/tables/predictive.csv")
    adv = table[(table["probe"] == "adversarial") & (table["measure"] == "agreement")]
    for (a, b), group in adv.groupby(["model_a", "model_b"]):
        assert set(group["source"]) == {a, b}
        assert set(group["head"]) == {"original", "retrained"}
    assert table["value"].between(-1, 1).all()


def test_changing_a_figure_setting_reruns_only_that_figure(tiny_copy, tmp_path):
    config = write_config(tmp_path / "c.yaml", {"figures": {"cka_by_layer": {"width": 7}}})
    assert planned_jobs(tiny_copy, configfiles=(config,)) == {"figure_similarity": 1, "all": 1}


def test_extending_the_eps_grid_trains_only_the_new_models(tiny_copy, tmp_path):
    config = write_config(tmp_path / "c.yaml", {"model_grid": {"eps": [0, 1, 0.5]}})
    jobs = planned_jobs(tiny_copy, configfiles=(config,))
    assert jobs["train_model"] == 2 and jobs["extract_natural"] == 2 and jobs["extract_filters"] == 2
    assert jobs["make_probe"] == 2 * 2  # adversarial and inverted probes of the new models only
    assert jobs["compare_similarity"] == 1  # the one new same-eps pair (all probes in one job)
    assert "prepare_dataset" not in jobs


def test_bad_config_stops_before_any_job(tmp_path):
    config = write_config(tmp_path / "bad.yaml", {"training": {"epochs": "many"}})
    proc = snakemake(tmp_path, "--cores", "1", configfiles=(config,), check=False)
    assert proc.returncode != 0
    assert "training.epochs" in proc.stderr and "'many'" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_two_runs_give_byte_identical_tables(tiny_run, tmp_path):
    snakemake(tmp_path, "--cores", "2")
    for name in TABLES:
        assert filecmp.cmp(tiny_run / "results/tables" / name, tmp_path / "results/tables" / name, shallow=False), name
