"""Input checks shared by every classic estimator: one clear sentence per bad input.

``check_X`` / ``check_X_y`` guard ``fit``; ``check_query`` guards every prediction function
(``predict``, ``transform``, ...), so that the same mistake gets the same message everywhere.
"""

import operator

import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.errors import ConfigError, DataError

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_X(X, name: str = "X") -> jnp.ndarray:
  """X as a float32 (n_samples, n_features) array; refuses 1-D, empty, NaN or inf input."""
  X = _as_array(X, name)
  if X.ndim != 2:
    raise DataError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}"
                    f"{_reshape_hint(X.ndim, name)}.")
  if X.shape[0] == 0 or X.shape[1] == 0:
    raise DataError(f"{name} is empty (shape {X.shape}).")
  return _checked_values(X, name)


def check_query(X, n_features: int, fitted_what: str, *, allow_row: bool = False) -> jnp.ndarray:
  """The X of a prediction function as float32 (m, n_features); one row (n_features,) too if
  ``allow_row``. ``fitted_what`` names the fitted model in messages, e.g. ``"the PCA"``.

  Concrete input gets :func:`check_X`'s checks (2-D, not empty, real numbers, finite) plus the
  width check. Under ``jax.jit`` / ``jax.vmap`` X is a tracer whose values are unknown: only
  its shape and dtype, which are static, are checked, at trace time.
  """
  traced = isinstance(X, jax.core.Tracer)
  if not traced:
    X = _as_array(X, "X")
  shape = tuple(X.shape)
  if X.ndim != 2 and not (allow_row and X.ndim == 1):
    if allow_row:
      raise DataError(f"X must be (n_samples, {n_features}) or one sample ({n_features},), "
                      f"got shape {shape}.")
    hint = ""
    if X.ndim == 1:
      hint = ("; pass a single feature as X.reshape(-1, 1)" if n_features == 1
              else "; pass one sample as X.reshape(1, -1)" if shape[0] == n_features else "")
    raise DataError(f"X must be 2-D (n_samples, {n_features}), got shape {shape}{hint}.")
  if shape[-1] != n_features:
    raise DataError(f"X has {shape[-1]} features but {fitted_what} was fitted with {n_features}.")
  if X.ndim == 2 and shape[0] == 0:
    raise DataError(f"X is empty (shape {shape}).")
  if traced:
    _check_dtype(X.dtype, "X")
    return jnp.asarray(X, jnp.float32)
  return _checked_values(X, "X")


def check_X_y(X, y, *, classification: bool, classes=None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """X as by :func:`check_X`, y as a 1-D array of the same length.

  For classification y must hold integer class indices 0..C-1 with at least two classes
  (use :func:`encode_labels` first for other labels, and pass its ``classes`` so that messages
  name the labels as given); for regression y is float32 and finite.
  """
  X = check_X(X)
  y = _as_array(y, "y")
  if y.ndim != 1:
    raise DataError(f"y must be 1-D (n_samples,), got shape {y.shape}.")
  if len(y) != X.shape[0]:
    raise DataError(f"X has {X.shape[0]} samples but y has {len(y)}.")
  if classification:
    check_labels(y)
    if not np.issubdtype(y.dtype, np.integer):
      raise DataError(f"y must hold integer class indices 0..C-1, got dtype {y.dtype}; map "
                      "other labels with encode_labels(y).")
    if y.min() < 0:
      raise DataError(f"y must hold class indices 0..C-1, got {y.min()}; map other labels with "
                      "encode_labels(y).")
    if len(np.unique(y)) < 2:
      label = y[0] if classes is None else np.asarray(classes)[y[0]]
      raise DataError(f"y holds a single class ({np.asarray(label).item()!r}); a classifier "
                      "needs at least two.")
    return X, jnp.asarray(y, jnp.int32)
  if y.dtype.kind not in "biuf":
    raise DataError(f"y must hold real numbers, got dtype {y.dtype}.")
  return X, _checked_values(y.astype(np.float32) if y.dtype.kind == "b" else y, "y")


def check_targets(y, n_samples: int) -> None:
  """Refuses a ``score`` target y that is not (n_samples,), one per row of X (shapes only, so
  this runs under jit too); (n, 1) would otherwise broadcast against (n,) predictions."""
  shape = np.shape(y)
  if shape != (n_samples,):
    raise DataError(f"y must have shape ({n_samples},), one target per row of X, got {shape}.")


def check_labels(y, name: str = "y") -> None:
  """Refuses class labels holding NaN or inf (NaN equals no class, not even itself)."""
  y = _as_array(y, name)
  if y.dtype.kind in "fc" and not np.all(np.isfinite(np.asarray(y))):
    raise DataError(f"{name} holds NaN or inf values; class labels must be finite.")


def encode_labels(y) -> tuple[np.ndarray, np.ndarray]:
  """Any labels -> (classes (C,), indices (n,)) with ``classes[indices] == y``.

  Numeric labels come back from predict as JAX arrays, in JAX's default dtypes (int32,
  float32), so labels that would not survive the conversion are refused: an integer outside
  int32 (2**40 would wrap to 0), floats that would merge or overflow in float32.
  """
  classes, indices = np.unique(np.asarray(y), return_inverse=True)
  if classes.dtype.kind in "biuf":
    with np.errstate(over="ignore"):
      kept = classes.astype(jax.dtypes.canonicalize_dtype(classes.dtype))
    lost = (kept != classes) if classes.dtype.kind in "iu" else ~np.isfinite(kept)
    if lost.any() or len(np.unique(kept)) < len(classes):
      shown = classes[lost][0] if lost.any() else classes[np.argmax(np.diff(kept) == 0) + 1]
      raise DataError(
          f"class label {shown.item()!r} does not keep its value as {kept.dtype}, the type the "
          f"labels come back in; map the labels to small integers first, e.g. "
          f"np.unique(y, return_inverse=True)[1].")
  return classes, indices.astype(np.int32)


def as_integer(value) -> int | None:
  """value as an int if it is a whole number (int, NumPy or JAX integer, or a float such as 3.0),
  else None (for 2.5, True, "3", None, ...)."""
  if isinstance(value, (bool, np.bool_)):
    return None
  if isinstance(value, (float, np.floating)):
    return int(value) if float(value).is_integer() else None
  try:
    return operator.index(value)
  except TypeError:
    return None


def check_at_most(name: str, value: int, limit: int, what: str, low: int = 1) -> int:
  """``value`` as an int in low..limit (e.g. ``n_neighbors`` up to the number of training
  samples): ConfigError if it is not a whole number, DataError if it lies outside."""
  index = as_integer(value)
  if index is None:
    shown = value.item() if isinstance(value, np.generic) else value
    raise ConfigError(f"{name}={shown!r} must be an integer in {low}..{limit} ({what}).")
  if index < low or index > limit:
    raise DataError(f"{name}={value} must lie in {low}..{limit} ({what}).")
  return index


def _as_array(X, name: str):
  """A concrete jax.Array stays on its device; anything else becomes a NumPy array."""
  if isinstance(X, jax.Array):
    return X
  try:
    return np.asarray(X)
  except (TypeError, ValueError) as error:
    raise DataError(f"{name} must be a rectangular array of numbers; converting it failed: "
                    f"{error}") from None


def _reshape_hint(ndim: int, name: str) -> str:
  if ndim == 1:
    return f"; reshape a single feature with {name}.reshape(-1, 1)"
  if ndim > 2:
    return f"; flatten each sample with {name}.reshape(len({name}), -1)"
  return ""


def _check_dtype(dtype, name: str) -> None:
  if not jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.complexfloating):
    raise DataError(f"{name} must hold real numbers, got dtype {dtype}.")


def _checked_values(X, name: str) -> jnp.ndarray:
  """Concrete X (NumPy or jax) of real numbers, finite also in float32 -> float32."""
  _check_dtype(X.dtype, name)
  xp = jnp if isinstance(X, jax.Array) else np
  if not bool(xp.all(xp.isfinite(X))):
    raise DataError(f"{name} holds NaN or inf values.")
  if X.dtype.kind == "f" and X.dtype.itemsize > 4 and bool(xp.any(xp.abs(X) > _FLOAT32_MAX)):
    raise DataError(f"{name} holds values beyond float32's range (|x| > {_FLOAT32_MAX:.3g}).")
  return jnp.asarray(X, jnp.float32)
