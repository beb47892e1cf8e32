"""Fixtures and hooks only (shared helpers live in support.py): the tiny end-to-end workflow
run, made once per session and reused, and the markers every test gets from its folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from robustlens.data import prepare_dataset
from support import snakemake

TESTS = Path(__file__).resolve().parent
#: The folders of tests/ that hold test files; each names the marker its tests get (registered
#: in pyproject.toml): ``pytest -m unit`` runs tests/unit only, the fast tests.
FOLDERS = ("unit", "workflow", "faults")


def pytest_collection_modifyitems(config, items):
    """Mark each test by its folder; a test file elsewhere in tests/ is an error."""
    for item in items:
        path = Path(item.path).resolve()
        if not path.is_relative_to(TESTS):
            continue
        folder = path.relative_to(TESTS).parts[0]
        if folder not in FOLDERS:
            raise pytest.UsageError(f"{item.nodeid}: test files belong in tests/{{{','.join(FOLDERS)}}}/")
        item.add_marker(folder)


@pytest.fixture(scope="module")
def digits():
    """The digits dataset at 16 px, 80/20 split (a fresh dict per test module)."""
    return prepare_dataset({"source": "sklearn_digits", "image_size": 16, "test_fraction": 0.2, "split_seed": 0})


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny study run end to end once; its working directory (do not modify it)."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture
def tiny_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the finished tiny run, for tests that change configs or files."""
    dest = tmp_path / "run"
    shutil.copytree(tiny_run, dest, symlinks=True)
    return dest
