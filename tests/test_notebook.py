"""The Colab notebook runs headless on CPU (tiny config), so it cannot rot."""

import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
NOTEBOOK = os.path.join(ROOT, "notebooks", "sdpal_colab.ipynb")


def test_colab_notebook_trains_evaluates_and_plots_in_smoke_mode(tmp_path, monkeypatch):
  pytest.importorskip("ipykernel")
  workdir = tmp_path / "work"
  monkeypatch.setenv("SDPAL_NOTEBOOK_SMOKE", "1")
  monkeypatch.setenv("SDPAL_REPO_DIR", ROOT)
  monkeypatch.setenv("SDPAL_WORKDIR", str(workdir))
  # The kernel is this interpreter, so it sees the same installed packages.
  monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(
    notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  )
  client.execute()
  outputs = "".join(
    out.get("text", "")
    for cell in notebook.cells
    if cell.cell_type == "code"
    for out in cell.outputs
  )
  assert "step 2 validation" in outputs and "pixel_auc" in outputs
  assert (workdir / "config.json").exists()
  assert (workdir / "evaluation" / "results.md").exists()
  assert (workdir / "predictions.png").stat().st_size > 1000
