"""Shared test setup: quiet progress bars, one XLA compilation cache and one cache of trained
sample-quality judges for the session, subprocess helpers for the CLI."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

os.environ.setdefault("M2M_NO_PROGRESS", "1")
# Many tests compile the same programs (the same config trained by the loop, the CLI in a
# subprocess, a notebook's kernel): a persistent cache, new for each session and shared by its
# pytest-xdist workers and subprocesses through the environment, compiles each program once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="m2m_jax_test_xla_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
# Trained sample-quality judges (m2m_jax.algorithms.sample_quality) likewise, one cache a session.
if "M2M_CACHE_DIR" not in os.environ:
  os.environ["M2M_CACHE_DIR"] = tempfile.mkdtemp(prefix="m2m_jax_test_cache_")
  atexit.register(shutil.rmtree, os.environ["M2M_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Without a size limit jax writes cache entries with no lock, and a worker could read another's
# half-written program; with one, every read and write holds the cache's file lock.
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(16 * 2**30))
# A program with a host callback is never cached; equinox's runtime checks inside diffrax add
# one unless failures become NaN (which the loop stops on anyway).
os.environ.setdefault("EQX_ON_ERROR", "nan")
# The tests compile many small programs: at XLA's backend optimisation level 1 (the default is
# 2) a CPU compiles them several times faster (a random kernel: 0.16 s instead of 2.5 s) and
# runs them at about 90% of the speed (level 0 runs them at 40%). It holds in this process, its
# subprocesses and the notebooks' kernels.
XLA_OPTIMIZATION = "--xla_backend_optimization_level=1"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_OPTIMIZATION}".strip()
# The configs whose algorithm fits the whole training set in one loop step.
ONE_STEP = ("linear_regression", "logistic_regression", "knn", "pca")
# The tree configs: the whole training set every step, one tree or boosting round a step.
TREES = ("decision_tree", "random_forest", "adaboost", "gradient_boosting")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The longest tests start first, so that the two workers end together (longest first is the
# classic rule for scheduling jobs on a few machines).
LONGEST = ("test_eight_devices", "test_multihost", "test_notebooks", "test_killed_run",
           "test_bench")


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: not any(name in item.nodeid for name in LONGEST))


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a subprocess on ``devices`` CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {XLA_OPTIMIZATION}"


def cli(*args: str, devices: int = 1, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
  """Runs ``python -m m2m_jax.main ARGS`` from the repository root on ``devices`` CPU devices."""
  env = dict(os.environ, M2M_NO_PROGRESS="1", XLA_FLAGS=xla_flags(devices))
  return subprocess.run([sys.executable, "-m", "m2m_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, **popen)


@pytest.fixture
def mock_tfds(monkeypatch, request):
  """tensorflow-datasets' mock data instead of any prepared dataset (nothing touches the
  network): ``MOCK_TFDS_EXAMPLES`` examples a split, a module attribute (default 128)."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.testing import mocking
  # tfds 4.9.10's mock sets `__getitems__` on a MagicMock as a plain partial, so it is called
  # without `self` and fails; batched reads go straight to the fake generator instead.
  monkeypatch.setattr(mocking, "_getitems", lambda keys, generator: [generator[k] for k in keys])
  with tfds.testing.mock_data(num_examples=getattr(request.module, "MOCK_TFDS_EXAMPLES", 128)):
    yield


@pytest.fixture
def run_cli():
  return cli
