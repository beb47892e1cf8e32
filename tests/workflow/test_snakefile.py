"""The Snakefile as Snakemake's own tools see it: `snakemake --lint` finds nothing, and the
workflow parses where robustlens is not installed (a checkout run with only Snakemake and the
injected parse environment, as with `--software-deployment-method conda`)."""

from __future__ import annotations

import os
import subprocess
import sys

from support import REPO, SNAKEMAKE, TINY


def test_snakemake_lint_finds_nothing(tmp_path):
    proc = subprocess.run([str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--lint"],
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Lints for" not in out and "good condition" in out


def test_the_workflow_parses_where_robustlens_is_not_installed(tmp_path):
    """Snakemake started with every path holding a robustlens package taken off ``sys.path``
    (the editable install's entry) and robustlens not imported: the Snakefile puts the checkout's
    ``workflow/`` first itself, and the dry run plans the tiny study."""
    code = (
        "import os, sys\n"
        "sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p or '.', 'robustlens'))]\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('robustlens') is None, 'robustlens is still importable'\n"
        "from snakemake.cli import main\n"
        f"sys.argv = ['snakemake', '--snakefile', {str(REPO / 'Snakefile')!r}, '--directory', {str(tmp_path)!r},\n"
        f"            '-n', '--quiet', 'rules', '--configfile', {str(TINY)!r}]\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "train_model" in out and "compare_similarity" in out
