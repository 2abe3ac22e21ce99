"""Holding a benchmark to N threads, before JAX and PyTorch start."""

import argparse
import os
from typing import Sequence


def limit_threads(argv: Sequence[str]) -> int | None:
  """``--threads N`` of ``argv``, applied before JAX and PyTorch start: the process pinned to its
  first N cores, and with N = 1 XLA's Eigen threading off. Returns N (None: every core)."""
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument("--threads", type=int)
  known, _ = parser.parse_known_args(argv)
  if known.threads:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:known.threads])
    if known.threads == 1:
      os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                 + " --xla_cpu_multi_thread_eigen=false").strip()
  return known.threads
