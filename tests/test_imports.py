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
    "robustlens.download",
    "robustlens.data",
]


def test_table_and_figure_modules_do_not_import_torch():
    code = "import sys\n" + "".join(f"import {m}\n" for m in LIGHT_MODULES) + "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_robustbench_and_autoattack_are_imported_only_by_their_loaders():
    """robustbench (and the autoattack shim it needs) stay out of every module that the
    workflow imports for other models, so its pins and packaging faults never touch them."""
    modules = ["robustlens.zoo", "robustlens.sources", "robustlens.train", "robustlens.activations",
               "robustlens.probes", "robustlens.transfer", "robustlens.autoattack_eval"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules)
    code += "print(sorted(m for m in ('robustbench', 'autoattack', 'pyautoattack', 'pkg_resources') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_robustbench_loader_registers_pyautoattack_as_autoattack():
    code = (
        "import sys\nfrom robustlens.sources import import_robustbench\nimport_robustbench()\n"
        "import autoattack, pyautoattack\nprint(autoattack.AutoAttack is pyautoattack.AutoAttack, 'robustbench.eval' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    assert out == "True True"


def test_configure_torch_makes_torch_deterministic_without_importing_the_compiler():
    """Every job calls configure_torch: it must switch on torch's deterministic algorithms
    (warn-only) exactly as torch.use_deterministic_algorithms does for eager code, without the
    2.7 s import of inductor and dynamo that the public function triggers."""
    code = (
        "import sys, torch\n"
        "from robustlens.runtime import configure_torch\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "configure_torch(1)\n"
        "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),\n"
        "      torch.get_num_threads(), 'torch._dynamo' in sys.modules, 'torch._inductor' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "1", "False", "False"]
