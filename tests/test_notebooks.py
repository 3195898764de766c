"""Every notebook in notebooks/ runs from top to bottom, and none is stored with outputs.

The notebooks read real recordings from ``../shared/data`` beside the repository (or from
``BAYESNEURO_DATA``); the execution test skips when neither exists. They run with
``BAYESNEURO_FAST=1``: fewer neurons and trials and short sampler runs.

When ``BAYESNEURO_EXECUTED_NOTEBOOKS`` names a folder, each notebook that ran without error is
also written there, outputs included (CI sets it; ``docs/build.py`` renders those copies, so the
documentation build never executes a notebook again).
"""

import os
from pathlib import Path

import nbformat
import pytest

from .helpers import REPO

NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
DEFAULT_DATA = REPO.parent / "shared" / "data"


def _data_dir() -> Path:
    return Path(os.environ.get("BAYESNEURO_DATA", DEFAULT_DATA))


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.slow  # each notebook runs in a fresh kernel: minutes
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    if not _data_dir().is_dir():
        pytest.skip(f"shared data folder not found at {_data_dir()}")
    # the kernel inherits this process's environment
    monkeypatch.setenv("BAYESNEURO_FAST", "1")
    monkeypatch.setenv("BAYESNEURO_PROGRESS", "0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # cwd of the kernel
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    executed = os.environ.get("BAYESNEURO_EXECUTED_NOTEBOOKS")
    if executed:
        out = Path(executed)
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stored = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not stored, (
        f"{path.name} has stored outputs or execution counts in cells {stored}; clear them "
        "(e.g. `jupyter nbconvert --clear-output --inplace`) before committing"
    )
