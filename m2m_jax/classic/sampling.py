"""Random data and resampling from jax PRNG keys: generators, bootstrap, splits, k-fold.

Generators (the seed's ``Sample``, fixed): ``uniform`` and ``normal`` draw (n_samples, n_features)
arrays, ``add_bias`` prepends a column of ones, ``two_class`` draws two Gaussian classes whose
means really differ, for any n_samples and split rate.

Resampling: ``bootstrap`` draws indices with replacement and marks the out-of-bag rows;
``train_test_split`` returns (train, test) index arrays, stratified on request; ``kfold`` returns
(n_splits, n) boolean test masks, one per fold, stacked so that a fit vmaps over folds.
Stratification keeps each class's share of a part within one sample of exact.

Counts (n, n_samples, n_features, n_splits, test sizes) are Python ints and fix the shapes; each
function is pure in ``key`` (and in the labels), so it jits with the counts static and vmaps over
keys, e.g. ``jax.vmap(lambda k: bootstrap(k, n))(jax.random.split(key, 100))``.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.classic import validation
from m2m_jax.errors import DataError


def _check_count(name: str, value, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise DataError(f"{name}={value!r} must be an int >= {minimum}.")
  return int(value)


def uniform(key: jax.Array, n_samples: int, n_features: int, low: float = 0.0,
            high: float = 1.0) -> jnp.ndarray:
  """(n_samples, n_features) float32 draws from U[low, high)."""
  shape = (_check_count("n_samples", n_samples), _check_count("n_features", n_features))
  return jax.random.uniform(key, shape, jnp.float32, low, high)


def normal(key: jax.Array, n_samples: int, n_features: int, loc: float = 0.0,
           scale: float = 1.0) -> jnp.ndarray:
  """(n_samples, n_features) float32 draws from N(loc, scale^2)."""
  shape = (_check_count("n_samples", n_samples), _check_count("n_features", n_features))
  return loc + scale * jax.random.normal(key, shape, jnp.float32)


def add_bias(X: jnp.ndarray) -> jnp.ndarray:
  """X (..., d) -> [1, X] (..., d + 1): a column of ones first, the intercept's feature."""
  return jnp.concatenate([jnp.ones_like(X[..., :1]), X], axis=-1)


def two_class(key: jax.Array, n_samples: int, n_features: int = 2, *, separation: float = 2.0,
              split_rate: float = 0.5) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Two Gaussian classes: X (n_samples, n_features) float32, y (n_samples,) int32 in {0, 1}.

  Class 0 ~ N(-separation/2 u, I), class 1 ~ N(+separation/2 u, I) with u = (1, ..., 1)/sqrt(d),
  so the class means lie ``separation`` apart and the Bayes classifier (the hyperplane
  u.x = 0) is right with probability Phi(separation / 2). round(split_rate * n_samples) rows
  belong to class 0, the rest to class 1; rows come shuffled.
  """
  n, d = _check_count("n_samples", n_samples, 2), _check_count("n_features", n_features)
  if not 0 < split_rate < 1:
    raise DataError(f"split_rate={split_rate} must lie strictly between 0 and 1.")
  n_class0 = math.floor(split_rate * n + 0.5)
  if not 0 < n_class0 < n:
    raise DataError(f"split_rate={split_rate} with n_samples={n} leaves a class empty; "
                    f"it must lie in [{0.5 / n:.3g}, {1 - 0.5 / n:.3g}).")
  return _two_class(key, n, d, n_class0, separation)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _two_class(key, n, d, n_class0, separation):
  key_x, key_y = jax.random.split(key)
  y = jax.random.permutation(key_y, (jnp.arange(n) >= n_class0).astype(jnp.int32))
  shift = (y - 0.5) * separation / math.sqrt(d)
  return jax.random.normal(key_x, (n, d), jnp.float32) + shift[:, None], y


def bootstrap(key: jax.Array, n: int, n_samples: int | None = None
              ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """A bootstrap resample of n rows: indices (n_samples,) int32 drawn uniformly with replacement
  from 0..n-1 (n_samples defaults to n), and the out-of-bag mask (n,) bool of rows never drawn.

  A row is out of bag with probability (1 - 1/n)^n_samples, about 1/e = 0.368 when n_samples = n.
  """
  n = _check_count("n", n)
  n_samples = n if n_samples is None else _check_count("n_samples", n_samples)
  return _bootstrap(key, n, n_samples)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _bootstrap(key, n, n_samples):
  indices = jax.random.randint(key, (n_samples,), 0, n, jnp.int32)
  return indices, jnp.ones((n,), bool).at[indices].set(False)


def _labels(stratify, n: int) -> jnp.ndarray:
  """Stratification labels as a (n,) array (any labels; encoded unless already a jax array)."""
  if stratify is None:
    return jnp.zeros((n,), jnp.int32)
  if np.ndim(stratify) != 1 or np.shape(stratify)[0] != n:
    raise DataError(f"stratify must be 1-D with one label per sample ({n}), "
                    f"got shape {np.shape(stratify)}.")
  return stratify if isinstance(stratify, jax.Array) else validation.encode_labels(stratify)[1]


def _class_order(key: jax.Array, y: jnp.ndarray, shuffle: bool) -> jnp.ndarray:
  """A permutation of 0..n-1 that groups equal labels in sorted label order, random within
  (one sort on (label, 32-bit random draw); two equal draws, odds ~n^2 / 2^33, keep row order)."""
  rows = jnp.arange(y.shape[0])
  if not shuffle:
    return jax.lax.sort((y, rows), num_keys=1)[1]
  return jax.lax.sort((y, jax.random.bits(key, y.shape), rows), num_keys=2)[2]


def _group_bounds(grouped: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Sorted labels (n,) -> each position's group [start, end), by running max / min."""
  n = grouped.shape[0]
  position = jnp.arange(n)
  change = grouped[1:] != grouped[:-1]
  first = jnp.concatenate([jnp.ones((1,), bool), change])
  last = jnp.concatenate([change, jnp.ones((1,), bool)])
  start = jax.lax.cummax(jnp.where(first, position, 0))
  end = jax.lax.cummin(jnp.where(last, position + 1, n), reverse=True)
  return start, end


def _floor_scaled(m: jnp.ndarray, num: int, offset: jnp.ndarray, n: int) -> jnp.ndarray:
  """floor((m * num + offset) / n) for 0 <= m, num, offset <= n, exact in int32 for n <= 5e7:
  a float32 guess, corrected by the remainder m * num + offset - guess * n (its int32 products
  wrap around, but their difference is small, so it comes out exact)."""
  guess = jnp.floor(m * (num / n) + offset / n).astype(jnp.int32)
  return guess + (m * num + offset - guess * n) // n


@functools.partial(jax.jit, static_argnums=2)
def _split(key: jax.Array, y: jnp.ndarray, n_test: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(train_idx, test_idx); each class c of n_c rows gets floor or ceil of n_c n_test / n tests.

  Systematic sampling: with labels grouped (random within a class) at positions
  [start_c, end_c), class c gives F(end_c) - F(start_c) rows to the test part,
  F(m) = floor((m n_test + o) / n), o uniform in 0..n-1; these sum to F(n) - F(0) = n_test.
  """
  n = y.shape[0]
  key_order, key_offset = jax.random.split(key)
  order = _class_order(key_order, y, shuffle=True)
  start, end = _group_bounds(y[order])
  offset = jax.random.randint(key_offset, (), 0, n, jnp.int32)
  quota = _floor_scaled(end, n_test, offset, n) - _floor_scaled(start, n_test, offset, n)
  test = jnp.zeros((n,), bool).at[order].set(jnp.arange(n) - start < quota)
  return jnp.nonzero(~test, size=n - n_test)[0], jnp.nonzero(test, size=n_test)[0]


def _n_test(test_size, n: int) -> int:
  """A float in (0, 1) -> ceil(test_size * n) (scikit-learn's rule); an int -> itself."""
  if isinstance(test_size, float) and 0 < test_size < 1:
    n_test = math.ceil(test_size * n)
  elif isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
    n_test = int(test_size)
  else:
    raise DataError(f"test_size={test_size!r} must be a float in (0, 1) or an int in 1..{n - 1}.")
  if not 0 < n_test < n:
    raise DataError(f"test_size={test_size!r} gives {n_test} test rows out of {n}; "
                    "train and test both need at least one.")
  return n_test


def train_test_split(key: jax.Array, n: int, *, test_size: float | int = 0.25, stratify=None
                     ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Splits rows 0..n-1: (train_idx (n - n_test,), test_idx (n_test,)), int32, each ascending.

  test_size: a float in (0, 1) (n_test = ceil(test_size * n)) or an int count. stratify: labels
  (n,); then each class's test count is within one of n_c * n_test / n (so is its train count).
  """
  n = _check_count("n", n, 2)
  n_test = _n_test(test_size, n)
  return _split(key, _labels(stratify, n), n_test)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _fold_of(key: jax.Array, y: jnp.ndarray, n_splits: int, shuffle: bool,
             stratified: bool) -> jnp.ndarray:
  """(n,) fold number of each row."""
  n = y.shape[0]
  order = _class_order(key, y, shuffle)
  position = jnp.arange(n)
  if stratified:  # deal the label-sorted rows round-robin: scikit-learn's per-fold class counts
    fold = position % n_splits
  else:  # contiguous chunks, the n % n_splits first ones a row longer: scikit-learn's KFold
    size, extra = divmod(n, n_splits)
    long = extra * (size + 1)
    fold = jnp.where(position < long, position // (size + 1), extra + (position - long) // size)
  return jnp.zeros((n,), jnp.int32).at[order].set(fold)


def kfold(key: jax.Array, n: int, n_splits: int = 5, *, shuffle: bool = True,
          stratify=None) -> jnp.ndarray:
  """K-fold cross-validation of rows 0..n-1 as stacked test masks (n_splits, n) bool.

  Every row is in exactly one fold's test part; fold f trains on ``~masks[f]``. Fold sizes are
  scikit-learn's (n // n_splits, the first n % n_splits folds one more). shuffle=False keeps row
  order (unstratified: the same folds as scikit-learn's KFold). stratify: labels (n,); each
  fold then holds floor or ceil of n_c / n_splits rows of class c (StratifiedKFold's counts).
  """
  n = _check_count("n", n, 2)
  n_splits = _check_count("n_splits", n_splits, 2)
  validation.check_at_most("n_splits", n_splits, n, "each fold needs at least one row", low=2)
  fold = _fold_of(key, _labels(stratify, n), n_splits, shuffle, stratify is not None)
  return fold[None, :] == jnp.arange(n_splits)[:, None]


def fold_indices(masks: jnp.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
  """Stacked test masks (n_splits, n) -> [(train_idx, test_idx), ...] as NumPy index arrays."""
  return [(np.flatnonzero(~m), np.flatnonzero(m)) for m in np.asarray(masks)]
