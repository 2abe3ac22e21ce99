"""Shared test setup: quiet progress bars, subprocess helpers for the CLI."""

import os
import subprocess
import sys

import pytest

os.environ.setdefault("M2M_NO_PROGRESS", "1")
# The configs whose algorithm fits the whole training set in one loop step.
ONE_STEP = ("linear_regression", "logistic_regression", "knn", "pca")
# The tree configs: the whole training set every step, one tree or boosting round a step.
TREES = ("decision_tree", "random_forest", "adaboost", "gradient_boosting")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str, devices: int = 1, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
  """Runs ``python -m m2m_jax.main ARGS`` from the repository root on ``devices`` CPU devices."""
  env = dict(os.environ, M2M_NO_PROGRESS="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.run([sys.executable, "-m", "m2m_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, **popen)


@pytest.fixture
def run_cli():
  return cli
