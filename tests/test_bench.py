"""bench/train_step.py --quick runs every model in both frameworks and reports positive speeds."""

import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"mlp", "cnn28", "cnn16", "simple_cnn"}
FIELDS = ("jax_examples_per_s", "torch_examples_per_s", "ratio_jax_over_torch", "jax_compile_s")


def test_quick_benchmark(tmp_path):
  out = tmp_path / "bench.json"
  # One torch thread: on a loaded machine OpenMP threads waiting on each other take minutes.
  subprocess.run([sys.executable, os.path.join(ROOT, "bench", "train_step.py"), "--quick",
                  "--batch-size", "16", "--torch-threads", "1", "--json", str(out)],
                 check=True, timeout=120)
  rows = json.loads(out.read_text())["results"]
  assert {r["model"] for r in rows} == MODELS
  for r in rows:
    for field in FIELDS:
      assert math.isfinite(r[field]) and r[field] > 0, (r["model"], field, r[field])
