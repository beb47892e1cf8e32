"""Table and figure jobs must start fast: the modules they import never import torch."""

import subprocess
import sys

LIGHT_MODULES = [
    "robustlens.config",
    "robustlens.jobs",
    "robustlens.tables",
    "robustlens.measures",
    "robustlens.predictive",
    "robustlens.stats",
    "robustlens.filters",
    "robustlens.plots.universality",
    "robustlens.plots.filters",
    "robustlens.plots.similarity",
    "robustlens.universality",
    "robustlens.comparisons",
    "robustlens.heads",
]


def test_table_and_figure_modules_do_not_import_torch():
    code = "import sys\n" + "".join(f"import {m}\n" for m in LIGHT_MODULES) + "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
