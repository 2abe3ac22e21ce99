"""Bagging (bootstrap aggregating, Breiman 1996) of any classic estimator.

Estimator b is fitted on a bootstrap resample of the training set, ``round(max_samples * n)``
rows drawn with replacement (without replacement if ``bootstrap=False``), and the ensemble
averages:

  classification   P(c | x) = (1/B) sum_b P_b(c | x)  (the estimators' ``predict_proba``,
                   columns aligned to all the training classes, so a resample that missed a
                   class gives it probability 0), predict(x) = argmax_c P(c | x);
                   without ``predict_proba`` a majority vote of ``predict``
  regression       predict(x) = (1/B) sum_b f_b(x).

Averaging B predictors of variance sigma^2 and pairwise correlation rho leaves
rho sigma^2 + (1 - rho) sigma^2 / B: bagging helps high-variance, low-bias estimators (deep
trees, 1-NN) and does little for stable ones. A random forest (:mod:`random_forest`) is bagged
trees that also decorrelate by drawing features per split.

The base is any module of :mod:`m2m_jax.classic` with ``fit(X, y, **hyper)`` and
``predict(params, X)`` (``decision_tree``, ``knn``, ``logistic_regression``,
``linear_regression``, ...). Each fit runs the base's own checks; resamples share one shape, so a
jitted base compiles once. Prediction is a pure function of the fitted tuple and jits.
"""

import inspect
from types import ModuleType
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.classic import decision_tree as dt
from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError, choose


@flax.struct.dataclass
class Bagging:
  """estimators: tuple of B fitted base params; samples: (B, m) int32 training rows of each
  resample. base (static): the base module; task, classes_ (static: the sorted training labels,
  () for regression), n_features_in_ (static)."""

  estimators: tuple
  samples: jax.Array
  base: Any = flax.struct.field(pytree_node=False, default=None)
  task: str = flax.struct.field(pytree_node=False, default="classification")
  classes_: tuple = flax.struct.field(pytree_node=False, default=())
  n_features_in_: int = flax.struct.field(pytree_node=False, default=1)


def fit(X, y, base: ModuleType, *, task: str = "classification", n_estimators: int = 10,
        max_samples: float = 1.0, bootstrap: bool = True, key: jax.Array | None = None,
        **hyper) -> Bagging:
  """Fits ``n_estimators`` copies of ``base`` (a classic module) with ``hyper`` on resamples of
  X (n, d), y (n,). ``task`` says how predictions are averaged, and is passed on to bases that
  take one (k-NN, decision_tree). ``key`` (default key 0) draws the resamples."""
  if not (hasattr(base, "fit") and hasattr(base, "predict")):
    raise ConfigError(f"base={base!r} must be a module with fit(X, y, ...) and predict(params, X), "
                      "e.g. m2m_jax.classic.decision_tree.")
  count = validation.as_integer(n_estimators)
  if count is None or count < 1:
    raise ConfigError(f"n_estimators={n_estimators!r} must be an integer >= 1.")
  if not (isinstance(max_samples, (int, float)) and 0 < max_samples <= 1):
    raise ConfigError(f"max_samples={max_samples!r} must be a fraction in (0, 1].")
  choose("task", task, dt.TASKS)
  classes, y_index = dt.encode_targets(y, task)
  X, y_checked = validation.check_X_y(X, y_index, classification=task == "classification",
                                      classes=classes or None)
  n = X.shape[0]
  m = max(1, round(max_samples * n))
  key = jax.random.key(0) if key is None else key
  keys = jax.random.split(key, count)
  draw = (lambda k: jax.random.randint(k, (m,), 0, n)) if bootstrap else \
      (lambda k: jax.random.permutation(k, n)[:m])
  samples = jax.vmap(draw)(keys).astype(jnp.int32)
  y_given = np.asarray(y)
  if "task" in inspect.signature(base.fit).parameters:
    hyper = dict(hyper, task=task)
  estimators = tuple(base.fit(X[rows], y_given[np.asarray(rows)], **hyper)
                     for rows in np.asarray(samples))
  return Bagging(estimators, samples, base, task, classes, X.shape[1])


def predict_proba(params: Bagging, X) -> jax.Array:
  """X (m, d) -> (m, C) mean class probabilities, columns in the order of ``classes_``."""
  if params.task != "classification":
    raise ConfigError("predict_proba needs task='classification'.")
  X = validation.check_query(X, params.n_features_in_, "the bagging ensemble")
  total = jnp.zeros((X.shape[0], len(params.classes_)))
  for est in params.estimators:
    total += _aligned_proba(params, est, X)
  return total / len(params.estimators)


def _aligned_proba(params: Bagging, est, X) -> jax.Array:
  """One estimator's (m, C) probabilities over all training classes (one-hot votes when the
  base has no ``predict_proba``)."""
  own = tuple(getattr(est, "classes_", ()) or params.classes_)
  if isinstance(own, jax.Array) or not isinstance(own, tuple):
    own = tuple(np.asarray(own).tolist())
  column = jnp.asarray([params.classes_.index(c) for c in own])
  if hasattr(params.base, "predict_proba"):
    proba = params.base.predict_proba(est, X)
  else:
    labels = np.asarray(params.base.predict(est, X))
    proba = jax.nn.one_hot(np.searchsorted(np.asarray(own), labels), len(own))
  return jnp.zeros((X.shape[0], len(params.classes_))).at[:, column].set(proba)


def predict(params: Bagging, X):
  """X (m, d) -> (m,) labels from ``classes_`` (argmax of :func:`predict_proba`) or the mean of
  the estimators' predictions (regression)."""
  if params.task == "classification":
    return dt.class_labels(params.classes_, jnp.argmax(predict_proba(params, X), 1))
  X = validation.check_query(X, params.n_features_in_, "the bagging ensemble")
  return sum(params.base.predict(est, X) for est in params.estimators) / len(params.estimators)


def score(params: Bagging, X, y) -> jax.Array:
  """Accuracy (classification) or R^2 (regression)."""
  return dt.score_predictions(predict(params, X), y, params.task)
