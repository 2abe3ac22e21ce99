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


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The mean (D,) and unbiased covariance (D, D) of N feature vectors (N, D), in float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f"need at least 2 feature vectors of shape (N, D); got shape {f.shape}.")
  return f.mean(0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh(s)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray,
                     cov2: np.ndarray) -> float:
  """The Fréchet (2-Wasserstein squared) distance of N(mean1, cov1) and N(mean2, cov2):

    ``|mean1 - mean2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))``,

  with ``tr (cov1 cov2)^(1/2) = tr (cov1^(1/2) cov2 cov1^(1/2))^(1/2)``, the square root of a
  symmetric positive semi-definite matrix, taken by its eigenvalues (clipped at 0). Means (D,),
  covariances (D, D); the FID formula of Heusel et al. (2017).
  """
  root1 = _psd_sqrt(cov1)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ cov2 @ root1), 0, None)).sum()
  return float(np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross)
