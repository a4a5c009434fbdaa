"""Every notebook under notebooks/ runs top to bottom in its quick mode."""

import json
import pathlib
import sys

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# Seconds one cell may run. In quick mode the whole quick-start notebook took
# 10 to 16 seconds on two CPU cores, kernel start and compilation included.
CELL_TIMEOUT = 300

KERNEL_NAME = "shampoo-optax-tests"


@pytest.fixture
def kernel_for_this_python(tmp_path, monkeypatch):
    """Register a kernel that runs this interpreter, ahead of any other.

    A user-wide ``python3`` kernel spec may point at another Python, which
    would not have this checkout installed. ``JUPYTER_PATH`` comes first in
    Jupyter's search path, so the spec written here wins.
    """
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "shampoo_optax tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL_NAME


def test_notebooks_found():
    assert NOTEBOOKS, "no notebook under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch, kernel_for_this_python):
    monkeypatch.setenv("SHAMPOO_OPTAX_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    # Plots render into the notebook's outputs, never into a window.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    notebook = nbformat.read(path, as_version=4)

    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name=kernel_for_this_python,
        resources={"metadata": {"path": str(work_dir)}},
    )
    # A failing cell raises CellExecutionError with the cell's source and
    # traceback.
    client.execute()

    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]
    assert errors == []
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{path.name} showed no plot"
