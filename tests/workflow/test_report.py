"""`snakemake --report results/report.html` on the finished tiny run: one self-contained HTML
file with every figure embedded, captioned with the config values that made it, grouped by study."""

from __future__ import annotations

import base64
import json
import re

import pytest

from support import snakemake


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    """The report of a copy of the finished tiny run: (working directory, html text)."""
    import shutil

    workdir = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    snakemake(workdir, "--report", "results/report.html")
    return workdir, (workdir / "results/report.html").read_text()


def script_data(html: str, name: str):
    """The JSON object Snakemake's report keeps in ``<script id="name">var name = {...};``."""
    match = re.search(rf'<script id="{name}">\s*var {name} = (.*?);?\s*</script>', html, re.S)
    assert match, f"no {name} in the report"
    return json.loads(match.group(1))


def test_report_is_self_contained(report):
    _, html = report
    # no script, style sheet or image fetched from elsewhere (URLs in bundled licences are text)
    assert not re.search(r"<(script|img|iframe|link)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", html, re.I)  # every script inline
    assert not re.search(r"<link\b[^>]*rel=[\"']?stylesheet", html, re.I)  # every style inline


def test_report_embeds_every_figure(report):
    workdir, html = report
    results = script_data(html, "results")
    figures = sorted(f"results/figures/{p.name}" for p in (workdir / "results/figures").glob("*.png"))
    assert len(figures) >= 6
    assert sorted(name for name in results if name.startswith("results/figures/")) == figures
    for figure in figures:
        header, data = results[figure]["data_uri"].split(",", 1)
        assert header.startswith("data:image/png") and header.endswith(";base64")
        assert base64.b64decode(data) == (workdir / figure).read_bytes(), figure


def test_every_figure_is_captioned_with_its_config(report):
    _, html = report
    for figure, entry in script_data(html, "results").items():
        caption = entry["caption"]
        assert len(re.sub(r"<[^>]+>", "", caption)) > 100, f"{figure}: no real caption"
        assert "{{" not in caption and "snakemake.config" not in caption, f"{figure}: unrendered template"
        # each caption names the settings that made it, e.g. the study name of the tiny config
        assert re.search(r"<tt[^>]*>", caption), f"{figure}: no config values in its caption"
    cka = script_data(html, "results")["results/figures/cka_by_layer.png"]["caption"]
    assert ">tiny<" in cka


def test_figures_are_grouped_by_study(report):
    _, html = report
    categories = script_data(html, "categories")
    grouped = {
        figure: category for category, subcategories in categories.items()
        for figures in subcategories.values() for figure in figures
    }
    assert set(grouped) == set(script_data(html, "results"))
    assert grouped["results/figures/cka_by_layer.png"] == grouped["results/figures/agreement_vs_eps.png"] == "Universality"
    assert grouped["results/figures/filters_basis.png"] == "Convolution filters"
    assert "Other" not in categories  # no figure left without a study
