"""Metrics: whole-split ones computed on the host, and per-image ones that also run under jit."""

import jax.numpy as jnp
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


def mse_per_image(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """Mean squared error of each image: (B, ...) and (B, ...) -> (B,), in float32."""
  err = (prediction.astype(jnp.float32) - target.astype(jnp.float32)) ** 2
  return err.reshape(err.shape[0], -1).mean(axis=1)


def psnr(mse: jnp.ndarray, max_value: float = 1.0, floor: float = 1e-10) -> jnp.ndarray:
  """Peak signal-to-noise ratio in dB, elementwise: ``10 log10(max_value**2 / mse)``.

  For images in [0, 1] (``max_value = 1``) an MSE of 0.01 is 20 dB and 0.001 is 30 dB; an MSE
  below ``floor`` counts as ``floor`` (100 dB), so a perfect image is finite.
  """
  return 10 * jnp.log10(max_value**2 / jnp.maximum(mse, floor))
