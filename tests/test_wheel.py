"""A plain install, as Colab's ``pip install git+URL`` makes one: a wheel, installed (not
editable) into a fresh virtual environment, loads every config by name and trains from outside
the repository."""

import json
import os
import shutil
import subprocess
import sys
import tomllib

import setuptools

from conftest import ROOT, XLA_OPTIMIZATION
from m2m_jax import configlib

# What a wheel is built from: the tracked sources, without the tests, notebooks and benchmarks.
NOT_SHIPPED = shutil.ignore_patterns(".git", "runs", "build", "*.egg-info", "__pycache__",
                                     ".pytest_cache", "tests", "notebooks", "bench")


def test_pyproject_lists_every_package_and_ships_the_configs():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    tool = tomllib.load(f)["tool"]["setuptools"]
  found = setuptools.find_packages(ROOT, include=["m2m_jax", "m2m_jax.*"])
  assert sorted(tool["packages"]) == sorted([*found, "m2m_jax.configs"])
  assert tool["package-dir"] == {"m2m_jax.configs": "configs"}


def test_a_wheel_installed_elsewhere_loads_every_config_by_name_and_trains(tmp_path):
  source, wheels, venv, outside = (tmp_path / d for d in ("src", "wheels", "venv", "outside"))
  shutil.copytree(ROOT, source, ignore=NOT_SHIPPED)
  outside.mkdir()
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(wheels), str(source)], check=True, capture_output=True)
  # The dependencies come from this environment; m2m_jax only from the wheel.
  subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                  str(venv)], check=True)
  python = str(venv / "bin" / "python")
  (wheel,) = wheels.glob("m2m_jax-*.whl")
  subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
                  "--no-index", str(wheel)], check=True, capture_output=True)
  env = dict(os.environ, XLA_FLAGS=XLA_OPTIMIZATION, M2M_NO_PROGRESS="1")
  listed = subprocess.run(
      [python, "-c", "import json, m2m_jax; from m2m_jax import configlib; print(json.dumps("
       "[m2m_jax.__file__, {n: sorted(configlib.config_module(n).PRESETS) for n in "
       "configlib.config_names()}, configlib.load('cnn', 'mnist5k').dataset]))"],
      cwd=outside, env=env, capture_output=True, text=True, check=True)
  where, presets, mnist = json.loads(listed.stdout)
  assert where.startswith(str(venv)), where
  assert presets == {n: sorted(configlib.config_module(n).PRESETS)
                     for n in configlib.config_names()}
  assert len(presets) == 24 and mnist == "mnist5k"
  trained = subprocess.run(
      [python, "-m", "m2m_jax.main", "--config=cnn", f"--workdir={outside / 'run'}",
       "--config.num_steps=20", "--config.learning_rate=0.003"], cwd=outside, env=env, capture_output=True, text=True)
  assert trained.returncode == 0, trained.stderr[-3000:]
  with open(outside / "run" / "summary.json") as f:
    summary = json.load(f)
  assert summary["steps"] == 20 and summary["test"]["accuracy"] > 0.6  # 0.78
