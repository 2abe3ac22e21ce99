"""Keeps the notebooks at home on Colab: each opens with the install cell built here from the
repository address in pyproject's ``[project.urls]``, the one place to change it.

``python tools/colab.py`` rewrites the first cell of every notebook (inserting it where it is
missing) and prints README's "Open in Colab" links; ``tests/test_colab.py`` checks both.
"""

import pathlib
import sys
import tomllib

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARK = "# Installs m2m_jax where it is missing (Colab);"


def repository() -> str:
  """The repository address in pyproject's ``[project.urls]``."""
  with open(ROOT / "pyproject.toml", "rb") as f:
    return tomllib.load(f)["project"]["urls"]["Repository"]


def install_cell(url: str) -> str:
  """The source of the first cell: pip-installs m2m_jax from ``url`` where it cannot be
  imported, with JAX for the runtime's chip (the TPU or CUDA extra), and prints the devices."""
  return f'''{MARK} elsewhere it only prints the devices.
import glob, importlib.util, shutil, subprocess, sys
if importlib.util.find_spec("m2m_jax") is None:
    extra = ("[tpu]" if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*") else
             "[cuda]" if shutil.which("nvidia-smi") else "")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    f"m2m_jax{{extra}} @ git+{url}"], check=True)
import jax
print(jax.devices())'''


def badge(notebook: str, url: str) -> str:
  """README's "Open in Colab" badge for ``notebooks/<notebook>``."""
  path = url.removeprefix("https://github.com/")
  return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
          f"(https://colab.research.google.com/github/{path}/blob/main/notebooks/{notebook})")


def notebooks() -> list[pathlib.Path]:
  return sorted((ROOT / "notebooks").glob("*.ipynb"))


def sync() -> None:
  """Writes the install cell first in every notebook."""
  source = install_cell(repository())
  for path in notebooks():
    nb = nbformat.read(path, as_version=4)
    if nb.cells and nb.cells[0].cell_type == "code" and nb.cells[0].source.startswith(MARK):
      nb.cells[0].source = source
    else:
      nb.cells.insert(0, nbformat.v4.new_code_cell(source))
    nb.cells[0].id = "install"
    nbformat.write(nb, path)


if __name__ == "__main__":
  sync()
  for path in notebooks():
    sys.stdout.write(f"{path.name}: {badge(path.name, repository())}\n")
