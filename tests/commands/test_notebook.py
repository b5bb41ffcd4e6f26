"""experiments/colab_tpu.ipynb runs headless on CPU with a tiny config (its parameters overridden
the way papermill does: a cell right after the one tagged "parameters")."""

import json

import numpy as np
import pytest

from helpers import REPO

NOTEBOOK = REPO / "experiments" / "colab_tpu.ipynb"


def code_cells(notebook: dict) -> list[tuple[list, str]]:
  """(tags, source) of every code cell, with IPython magics and shell lines removed."""
  cells = []
  for cell in notebook["cells"]:
    if cell["cell_type"] != "code":
      continue
    lines = [line for line in cell["source"] if not line.lstrip().startswith(("%", "!"))]
    cells.append((cell.get("metadata", {}).get("tags", []), "".join(lines)))
  return cells


def test_the_notebook_has_setup_parameters_and_install_cells():
  notebook = json.loads(NOTEBOOK.read_text())
  tags = [tag for tags, _ in code_cells(notebook) for tag in tags]
  assert tags.count("parameters") == 1 and tags.count("setup") == 1
  sources = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
  assert any("%pip install" in s and "[plots]" in s for s in sources)
  assert all(c.get("outputs", []) == [] for c in notebook["cells"] if c["cell_type"] == "code")


def test_the_notebook_trains_reports_and_plots_on_cpu(tmp_path, monkeypatch):
  pytest.importorskip("matplotlib")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.chdir(tmp_path)
  overrides = (f"REPO_DIR = {str(REPO)!r}\nFOLDS = [1]\nEPOCHS = 1\nUTTERANCES_PER_SPEAKER = 6\n"
               f"CLIP_SECONDS = 1.0\nBATCH_SIZE = 8\nVAL_SIZE = 4\nWORKDIR = 'runs/nb'\n"
               f"CACHE_DIR = {str(tmp_path / 'cache')!r}\n")
  namespace = {}
  for tags, source in code_cells(json.loads(NOTEBOOK.read_text())):
    exec(compile(source, str(NOTEBOOK), "exec"), namespace)  # pylint: disable=exec-used
    if "setup" in tags or "parameters" in tags:
      exec(overrides, namespace)  # pylint: disable=exec-used
  summary = namespace["summary"]
  assert summary["folds"] == [1] and summary["model"] == "simplenet_cnn"
  assert (tmp_path / "runs" / "nb" / "fold_1" / "result.json").exists()
  initial, trained = namespace["initial"], namespace["trained"]
  assert initial.shape == trained.shape == (256, 64)
  assert not np.allclose(initial, trained)  # one epoch moved the filters
  assert "verdict" in namespace["drift"]
