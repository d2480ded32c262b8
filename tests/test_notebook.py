"""The Colab notebook runs headless on CPU (tiny config), so it cannot rot."""

import importlib.metadata
import importlib.util
import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
NOTEBOOK = os.path.join(ROOT, "notebooks", "sdpal_colab.ipynb")

pytestmark = pytest.mark.slow  # installs the checkout and runs every cell: minutes


def _offline_pip_args() -> str:
  """``pip install`` arguments that install the checkout cheaply, offline where possible.

  ``--no-deps``: the test's interpreter already has every dependency. Without
  build isolation and an index when this interpreter can build an editable
  wheel itself (setuptools >= 70.1 has ``bdist_wheel``; older needs ``wheel``);
  otherwise pip fetches the small build backend (a fresh venv's setuptools 65
  cannot).
  """
  try:
    major, minor = (int(x) for x in importlib.metadata.version("setuptools").split(".")[:2])
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return "--no-deps"
  if (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None:
    return "--no-deps --no-build-isolation --no-index"
  return "--no-deps"


def test_colab_notebook_installs_trains_evaluates_and_plots_in_smoke_mode(tmp_path, monkeypatch):
  pytest.importorskip("ipykernel")
  workdir = tmp_path / "work"
  monkeypatch.setenv("SDPAL_NOTEBOOK_SMOKE", "1")
  # The install cell runs as on Colab, on this checkout (already there: no clone).
  monkeypatch.setenv("SDPAL_REPO_DIR", ROOT)
  monkeypatch.setenv("SDPAL_REPO_URL", "https://example.invalid/not-cloned-when-REPO_DIR-exists")
  monkeypatch.setenv("SDPAL_PIP_ARGS", _offline_pip_args())
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
  assert f"installed sdpal_jax from {ROOT} with" in outputs
  assert "--no-deps" in outputs
  assert "step 2 validation" in outputs and "pixel_auc" in outputs
  assert (workdir / "config.json").exists()
  assert (workdir / "evaluation" / "results.md").exists()
  assert (workdir / "predictions.png").stat().st_size > 1000
