"""The notebooks at home on Colab: each opens with the install cell built from pyproject's
repository address, README links each with an "Open in Colab" badge, and no notebook reads
files of the repository (a Colab runtime has only the installed package)."""

import os
import sys

import nbformat
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import colab  # noqa: E402  (tools/ is no package)

NOTEBOOKS = colab.notebooks()


def test_the_repository_address_is_a_github_repository():
  assert colab.repository().startswith("https://github.com/")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_opens_with_the_install_cell_and_reads_no_repository_file(path):
  cells = nbformat.read(path, as_version=4).cells
  assert cells[0].cell_type == "code" and cells[0].source == colab.install_cell(
      colab.repository()), "run python tools/colab.py"
  code = "\n".join(c.source for c in cells[1:] if c.cell_type == "code")
  for repository_path in ("__file__", "parents[", "configs/"):
    assert repository_path not in code, repository_path


def test_readme_links_every_notebook_to_colab():
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  missing = [p.name for p in NOTEBOOKS if colab.badge(p.name, colab.repository()) not in readme]
  assert not missing


def test_the_install_cell_installs_from_the_address_with_the_chip_extra():
  cell = colab.install_cell("https://github.com/someone/fork")
  assert 'f"m2m_jax{extra} @ git+https://github.com/someone/fork"' in cell
  compile(cell, "install", "exec")
