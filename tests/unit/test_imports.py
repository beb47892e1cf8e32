"""Table and figure jobs must start fast: the modules they import never import torch. torch is
kept out by module boundaries, never by imports inside functions: no robustlens module is
imported inside a function."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

WORKFLOW = Path(__file__).resolve().parents[2] / "workflow"
PACKAGE = WORKFLOW / "robustlens"
SCRIPTS = WORKFLOW / "scripts"

LIGHT_MODULES = [
    "robustlens.config",
    "robustlens.tasks",
    "robustlens.sprites",
    "robustlens.splits",
    "robustlens.atomic",
    "robustlens.store",
    "robustlens.jobs",
    "robustlens.tables",
    "robustlens.measures",
    "robustlens.predictive",
    "robustlens.stats",
    "robustlens.filters",
    "robustlens.universality",
    "robustlens.similarity_tables",
    "robustlens.comparisons",
    "robustlens.heads",
    "robustlens.download",
    "robustlens.data",
    # every plotting module: figure jobs import them
    "robustlens.plots",
    *sorted(f"robustlens.plots.{path.stem}" for path in (PACKAGE / "plots").glob("*.py") if path.stem != "__init__"),
]


def test_table_and_figure_modules_do_not_import_torch():
    code = "import sys\n" + "".join(f"import {m}\n" for m in LIGHT_MODULES) + "print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


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


def _imports_robustlens(node: ast.AST, in_package: bool) -> bool:
    """Whether an import statement imports a robustlens module (a relative import counts inside
    the package)."""
    if isinstance(node, ast.Import):
        return any(alias.name == "robustlens" or alias.name.startswith("robustlens.") for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        return (in_package and node.level > 0) or module == "robustlens" or module.startswith("robustlens.")
    return False


def function_local_robustlens_imports(path: Path) -> list[int]:
    """Lines of ``path`` where a function (or lambda) body imports a robustlens module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    in_package = PACKAGE in path.parents
    lines = set()
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lines.update(node.lineno for node in ast.walk(function) if _imports_robustlens(node, in_package))
    return sorted(lines)


def test_no_robustlens_module_is_imported_inside_a_function():
    """Imports run one way at module level: a function-local import of a robustlens module hides
    a cycle or a heavy dependency that belongs behind a module boundary (third-party imports
    inside functions, e.g. of torch, timm or robustbench, stay allowed)."""
    files = sorted(PACKAGE.rglob("*.py")) + sorted(SCRIPTS.glob("*.py"))
    assert len(files) > 40
    found = [f"{path.relative_to(WORKFLOW.parent)}:{line}" for path in files for line in function_local_robustlens_imports(path)]
    assert found == [], "robustlens modules imported inside functions: " + ", ".join(found)


def test_the_check_finds_function_local_imports(tmp_path):
    source = (
        "import robustlens.jobs\n"
        "def f():\n    import numpy\n    from robustlens.data import load_dataset\n"
        "    def g():\n        import robustlens.store as s\n"
        "class C:\n    def m(self):\n        from robustlens import tables\n"
    )
    (tmp_path / "script.py").write_text(source)
    assert function_local_robustlens_imports(tmp_path / "script.py") == [4, 6, 9]


def table_and_figure_scripts() -> list[Path]:
    """The scripts of the table and figure rules: rules named ``*_table``, ``*_tables`` or
    ``figure_*`` in workflow/rules, and the scripts named so."""
    scripts = {path for path in SCRIPTS.glob("*.py") if path.stem.startswith("figure_") or path.stem.endswith(("_table", "_tables"))}
    for rules in sorted((WORKFLOW / "rules").glob("*.smk")):
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t]+\S.*\n|[ \t]*\n)*)", rules.read_text(), re.M):
            script = re.search(r"script:\s*f?[\"']([^\"']+\.py)[\"']", body)
            if script and (name.endswith(("_table", "_tables")) or name.startswith("figure_")):
                pattern = re.sub(r"\{[^}]*\}", "*", script.group(1))
                scripts.update(path.resolve() for path in rules.parent.glob(pattern))
    return sorted(scripts)


def module_level_imports(path: Path) -> str:
    """The import statements a script runs at module level, as source (the rest of a script
    needs Snakemake's ``snakemake`` object)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return "\n".join(ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))


def test_table_and_figure_scripts_are_found():
    names = {path.name for path in table_and_figure_scripts()}
    assert {"models_table.py", "heads_table.py", "transfer_tables.py", "figure_transfer.py"} <= names
    assert len(names) >= 10


@pytest.mark.parametrize("script", table_and_figure_scripts(), ids=lambda path: path.stem)
def test_table_and_figure_jobs_do_not_import_torch(script):
    """A table or figure job's imports (every module-level import of its script) leave torch
    out of ``sys.modules``: these jobs start in a fraction of a second."""
    code = module_level_imports(script) + "\nimport sys\nprint('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=WORKFLOW.parent)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False", f"{script.name}'s imports import torch"
