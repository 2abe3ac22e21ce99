"""Input checks shared by every classic estimator: one clear sentence per bad input."""

import jax.numpy as jnp
import numpy as np

from m2m_jax.errors import DataError


def check_X(X, name: str = "X") -> jnp.ndarray:
  """X as a float32 (n_samples, n_features) array; refuses 1-D, empty, NaN or inf input."""
  X = np.asarray(X)
  if X.ndim != 2:
    raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}; "
                    "reshape a single feature with X.reshape(-1, 1).")
  if X.shape[0] == 0 or X.shape[1] == 0:
    raise DataError(f"{name} is empty (shape {X.shape}).")
  if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
    raise DataError(f"{name} must hold real numbers, got dtype {X.dtype}.")
  if not np.all(np.isfinite(X)):
    raise DataError(f"{name} holds NaN or inf values.")
  return jnp.asarray(X, jnp.float32)


def check_X_y(X, y, *, classification: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
  """X as by :func:`check_X`, y as a 1-D array of the same length.

  For classification y must hold integer class indices 0..C-1 with at least two classes
  (use :func:`encode_labels` first for other labels); for regression y is float32 and finite.
  """
  X = check_X(X)
  y = np.asarray(y)
  if y.ndim != 1:
    raise DataError(f"y must be 1-D (n_samples,), got shape {y.shape}.")
  if len(y) != X.shape[0]:
    raise DataError(f"X has {X.shape[0]} samples but y has {len(y)}.")
  if classification:
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
      raise DataError("y must hold class indices 0..C-1; map other labels with encode_labels(y).")
    if len(np.unique(y)) < 2:
      raise DataError(f"y holds a single class ({y[0]}); a classifier needs at least two.")
    return X, jnp.asarray(y, jnp.int32)
  if not np.all(np.isfinite(y.astype(np.float64))):
    raise DataError("y holds NaN or inf values.")
  return X, jnp.asarray(y, jnp.float32)


def encode_labels(y) -> tuple[np.ndarray, np.ndarray]:
  """Any labels -> (classes (C,), indices (n,)) with ``classes[indices] == y``."""
  classes, indices = np.unique(np.asarray(y), return_inverse=True)
  return classes, indices.astype(np.int32)


def check_at_most(name: str, value: int, limit: int, what: str) -> None:
  """Refuses ``value > limit`` (e.g. ``n_neighbors`` above the number of training samples)."""
  if value < 1 or value > limit:
    raise DataError(f"{name}={value} must lie in 1..{limit} ({what}).")
