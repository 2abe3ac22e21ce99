"""Metrics computed on the host from whole-split outputs."""

import numpy as np


def _pairs(n: np.ndarray) -> np.ndarray:
  return n * (n - 1) / 2


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
  """Hubert and Arabie's adjusted Rand index of two partitions of the same N points.

  ARI = (sum_ij C(n_ij, 2) - E) / (1/2 [sum_i C(a_i, 2) + sum_j C(b_j, 2)] - E), with
  E = sum_i C(a_i, 2) sum_j C(b_j, 2) / C(N, 2), n the contingency table, a and b its margins.
  1 for identical partitions (up to relabelling), about 0 for independent ones.
  """
  _, t = np.unique(labels_true, return_inverse=True)
  _, p = np.unique(labels_pred, return_inverse=True)
  table = np.zeros((t.max() + 1, p.max() + 1))
  np.add.at(table, (t, p), 1)
  index = _pairs(table).sum()
  rows, cols = _pairs(table.sum(1)).sum(), _pairs(table.sum(0)).sum()
  expected = rows * cols / _pairs(np.float64(len(t)))
  best = (rows + cols) / 2
  return 1.0 if best == expected else float((index - expected) / (best - expected))
