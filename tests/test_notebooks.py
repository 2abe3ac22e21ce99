"""Every notebook in notebooks/ runs top to bottom at a small size (M2M_SMALL=1).

The cells run in this process, in an IPython shell of their own (a fresh namespace, the syntax
and display of a notebook kernel): a kernel of its own would import jax and m2m_jax again for
every notebook, and compile again programs this test worker already holds. After each cell
every open pyplot figure is drawn, as the kernel's inline backend would, so a figure that
cannot be drawn fails the test, and then closed. Each opens with the Colab install cell
(``tools/colab.py``), which must install nothing here, where m2m_jax imports: pip is never run.
"""

import glob
import os
import subprocess

import matplotlib
import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_there_are_notebooks():
  assert {"mlp.ipynb", "cnn.ipynb"} <= {os.path.basename(p) for p in NOTEBOOKS}


def _draw_and_close_figures() -> None:
  for number in plt.get_fignums():
    plt.figure(number).canvas.draw()
  plt.close("all")


@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, tmp_path, monkeypatch):
  monkeypatch.setenv("M2M_SMALL", "1")
  monkeypatch.setenv("M2M_NO_PROGRESS", "1")
  monkeypatch.chdir(tmp_path)

  def no_install(args, *_, **__):
    raise AssertionError(f"the notebook ran {args}, though m2m_jax is installed")

  monkeypatch.setattr(subprocess, "run", no_install)
  config = Config()
  config.HistoryManager.enabled = False
  shell = InteractiveShell(config=config)
  try:
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
      if cell.cell_type == "code":
        result = shell.run_cell(cell.source, store_history=False)
        assert result.success, f"cell {index} failed:\n{cell.source}\n{result.error_in_exec!r}"
        _draw_and_close_figures()
  finally:
    plt.close("all")
    shell.reset(new_session=False)
