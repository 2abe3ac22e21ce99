"""Gradient boosting: functional gradient descent with Newton leaves on histogram trees.

The model is an additive expansion of T regression trees f_t on K raw scores,

  F(x) = F_0 + sum_{t < T} f_t(x),      F, F_0 in R^K,

fitted greedily (Friedman 2001), the method of scikit-learn's HistGradientBoosting and
XGBoost's ``hist``. Round t takes a second-order expansion of the training loss around the
current scores F_i, per sample and raw score k

  g_ik = dl(y_i, F_i) / dF_ik,      h_ik = d^2 l(y_i, F_i) / dF_ik^2,

and grows one tree per k on the statistics (g, h, count) with the Newton criterion of
:func:`m2m_jax.classic.decision_tree.newton`: a node's loss is -G^2 / (2 (H + lambda)) (G, H
the sums over its samples, lambda = ``l2_regularization``), a leaf predicts the Newton step
-G / (H + lambda), shrunk by the learning rate nu: f_t = nu * tree_t, F <- F + f_t.

  regression       squared error l = (y - F)^2 / 2:  g = F - y, h = 1;  F_0 = mean(y)  (K = 1)
  binary           log-loss with p = sigmoid(F):     g = p - y, h = p (1 - p);
                   F_0 = log(pbar / (1 - pbar)), pbar the share of class 1          (K = 1)
  multiclass       log-loss with p = softmax(F):     g_k = p_k - [y = k], h_k = p_k (1 - p_k)
                   (the diagonal of the hessian, as scikit-learn); F_0,k = log pbar_k -
                   mean_j log pbar_j (scikit-learn's centred log priors)            (K = C)

A round's K trees are grown at once (``jax.vmap`` of :func:`decision_tree.grow` over k).
With ``subsample`` = s < 1 each round sees a fresh random subset of floor(s n) training rows
drawn without replacement (stochastic gradient boosting, Friedman 2002): the other rows get
zero statistics, count included, so they take no part in the tree.

Prediction: classification takes argmax_k p_k (binary: F > 0); ``predict_proba`` gives p.
Features are binned once at fit time (:func:`decision_tree.bin_features`) and the bins are
kept: prediction bins X again and routes rows by bins, as scikit-learn's HistGradientBoosting
compares x_j with the bin edges, so training rows reach exactly the leaves they were fitted in.

Static shapes: the fitted :class:`GradientBoosting` holds T x K trees stacked as arrays
(T, K, M, ...); ``fit`` runs the T rounds in one ``jax.lax.scan`` under jit, carrying the
training raw scores. A loop that cannot carry per-sample state runs the same rounds with
:func:`check` (fit's checks and binning), :func:`init`, :func:`raw_scores_binned` and
:func:`boost_round` (rounds not grown yet are empty trees, a single leaf of value 0; the raw
scores are rebuilt in round order, the very sums fit carries) and gets the same parameters.
"""

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.classic import decision_tree as dt
from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError, choose

TASKS = ("classification", "regression")


@flax.struct.dataclass
class GradientBoosting:
  """A boosted ensemble of T rounds of K trees, with the hyperparameters that grow a round.

  trees: :class:`decision_tree.Tree` with arrays stacked (T, K, M) (value (T, K, M, 1), the
  leaf values already multiplied by the learning rate); baseline: (K,) float32 F_0;
  learning_rate, l2_regularization: () float32; bins: the :class:`decision_tree.Bins` the trees
  split on. Static: classes_ the C labels behind the class indices, sorted, any kind (() for
  regression); n_features_in_ d; task; min_samples_leaf; subsample. K = 1 for regression and
  binary classification, C otherwise; max_depth is ``trees.depth``.
  """

  trees: dt.Tree
  baseline: jax.Array
  learning_rate: jax.Array
  l2_regularization: jax.Array
  bins: dt.Bins
  classes_: tuple = flax.struct.field(pytree_node=False, default=())
  n_features_in_: int = flax.struct.field(pytree_node=False, default=1)
  task: str = flax.struct.field(pytree_node=False, default="classification")
  min_samples_leaf: int = flax.struct.field(pytree_node=False, default=20)
  subsample: float = flax.struct.field(pytree_node=False, default=1.0)

  @property
  def n_estimators(self) -> int:
    return self.trees.feature.shape[0]

  @property
  def n_scores(self) -> int:
    """K, the raw scores per sample (trees per round)."""
    return self.baseline.shape[0]


# ----------------------------------------------------------------------------- losses


def _n_scores(task: str, n_classes: int) -> int:
  return 1 if task == "regression" or n_classes == 2 else n_classes


def baseline(y: jax.Array, task: str, n_classes: int = 0) -> jax.Array:
  """F_0 (K,) of targets y (n,): mean (regression), log-odds of class 1 (binary) or the
  centred log priors (multiclass); y holds class indices 0..C-1 for classification."""
  if task == "regression":
    return jnp.mean(y, keepdims=True).astype(jnp.float32)
  eps = float(np.finfo(np.float32).eps)
  prior = jnp.clip(jnp.bincount(y, length=n_classes) / y.shape[0], eps, 1 - eps)
  if n_classes == 2:
    return (jnp.log(prior[1:]) - jnp.log(prior[:1])).astype(jnp.float32)
  log_prior = jnp.log(prior)
  return (log_prior - jnp.mean(log_prior)).astype(jnp.float32)


def loss(raw: jax.Array, y: jax.Array, task: str) -> jax.Array:
  """Summed training loss of raw scores (n, K) against y (n,): sum (y - F)^2 / 2 or the
  log-loss -sum log p_{y_i}."""
  if task == "regression":
    return 0.5 * jnp.sum((y - raw[:, 0]) ** 2)
  if raw.shape[1] == 1:
    return jnp.sum(jnp.logaddexp(0.0, raw[:, 0]) - y * raw[:, 0])
  return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(raw), y[:, None], 1))


def gradient_hessian(raw: jax.Array, y: jax.Array, task: str) -> tuple[jax.Array, jax.Array]:
  """Per-sample gradients and hessians (n, K) of :func:`loss` at raw scores (n, K) (the
  hessian's diagonal for multiclass); see the module docstring."""
  if task == "regression":
    return raw - y[:, None], jnp.ones_like(raw)
  if raw.shape[1] == 1:
    p = jax.nn.sigmoid(raw)
    return p - y[:, None], p * (1 - p)
  p = jax.nn.softmax(raw)
  return p - jax.nn.one_hot(y, raw.shape[1]), p * (1 - p)


# ----------------------------------------------------------------------------- hyperparameters


def check_hyperparameters(*, n_estimators=100, learning_rate=0.1, max_depth=3,
                          l2_regularization=0.0, subsample=1.0) -> dict:
  """The hyperparameters that do not depend on the data, checked and as Python numbers."""
  rounds = validation.as_integer(n_estimators)
  if rounds is None or rounds < 1:
    raise ConfigError(f"n_estimators={n_estimators!r} must be an integer >= 1.")
  return dict(
      n_estimators=rounds, max_depth=dt.check_depth(max_depth),
      learning_rate=_check_real("learning_rate", learning_rate, "a positive number",
                                lambda v: v > 0),
      l2_regularization=_check_real("l2_regularization", l2_regularization, "a number >= 0",
                                    lambda v: v >= 0),
      subsample=_check_real("subsample", subsample, "a fraction in (0, 1]",
                            lambda v: 0 < v <= 1))


def _check_real(name, value, what, ok) -> float:
  """``value`` as a float if it is a real number (not a bool) for which ``ok`` holds."""
  try:
    number = None if isinstance(value, (bool, np.bool_, str)) else float(value)
  except (TypeError, ValueError):
    number = None
  if number is None or not np.isfinite(number) or not ok(number):
    raise ConfigError(f"{name}={value!r} must be {what}.")
  return number


def check(X, y, *, task: str = "classification", n_estimators=100, learning_rate=0.1,
          max_depth=3, min_samples_leaf=20, l2_regularization=0.0, subsample=1.0,
          max_bins=256):
  """:func:`fit`'s checks: -> (X (n, d) float32, y (n,) class indices or float32 targets,
  :class:`decision_tree.Bins` of X, the keyword arguments of :func:`init` for them)."""
  choose("task", task, TASKS)
  hyper = check_hyperparameters(n_estimators=n_estimators, learning_rate=learning_rate,
                                max_depth=max_depth, l2_regularization=l2_regularization,
                                subsample=subsample)
  classes, y = dt.encode_targets(y, task)
  X, y = validation.check_X_y(X, y, classification=task == "classification",
                              classes=classes or None)
  n, d = X.shape
  leaf = dt.check_min_samples_leaf(min_samples_leaf, n)
  bins = dt.bin_features(X, max_bins)
  dt.check_growth(n, d, bins.max_bins, 3, hyper["max_depth"], leaf,
                  trees_at_once=_n_scores(task, len(classes)))
  return X, y, bins, dict(hyper, task=task, classes=classes, min_samples_leaf=leaf)


def _classes_tuple(classes) -> tuple:
  """Labels as ``classes_`` holds them: a tuple of Python scalars (an int C: 0..C-1)."""
  if validation.as_integer(classes) is not None:
    return tuple(range(validation.as_integer(classes)))
  return tuple(np.asarray(classes).tolist())


# ----------------------------------------------------------------------------- rounds


def init(bins: dt.Bins, y, *, task: str = "classification", classes=(), n_estimators=100,
         learning_rate=0.1, max_depth=3, min_samples_leaf=20, l2_regularization=0.0,
         subsample=1.0) -> GradientBoosting:
  """Parameters of capacity ``n_estimators`` rounds, every round an empty tree (one leaf of
  value 0), so that the model predicts the baseline F_0 of y; hyperparameters as :func:`fit`'s.

  bins: from :func:`decision_tree.bin_features` on the training X; y: (n,) training targets,
  class indices 0..C-1 for classification, whose labels ``classes`` gives (a sequence of any
  kind, or an int C for 0..C-1; a class may be absent from y). n and ``min_samples_leaf`` fix
  the trees' node count (:func:`decision_tree.level_sizes`): :func:`boost_round` must get as
  many rows.
  """
  choose("task", task, TASKS)
  classes = _classes_tuple(classes) if task == "classification" else ()
  if task == "classification" and len(classes) < 2:
    raise ConfigError(f"classes={classes!r}: a classifier needs at least two classes.")
  hyper = check_hyperparameters(n_estimators=n_estimators, learning_rate=learning_rate,
                                max_depth=max_depth, l2_regularization=l2_regularization,
                                subsample=subsample)
  y = jnp.asarray(y, jnp.int32 if task == "classification" else jnp.float32)
  leaf = dt.check_min_samples_leaf(min_samples_leaf, y.shape[0])
  return _init(bins, y, task=task, classes=classes, min_samples_leaf=leaf, **hyper)


def _init(bins, y, *, task, classes, n_estimators, learning_rate, max_depth, min_samples_leaf,
          l2_regularization, subsample) -> GradientBoosting:
  """:func:`init` without checks, jittable (``learning_rate``, ``l2_regularization`` traced)."""
  k = _n_scores(task, len(classes))
  nodes = sum(dt.level_sizes(y.shape[0], max_depth, min_samples_leaf))
  shape = (n_estimators, k, nodes)
  trees = dt.Tree(feature=jnp.full(shape, -1, jnp.int32), bin=jnp.full(shape, -1, jnp.int32),
                  threshold=jnp.full(shape, jnp.inf, jnp.float32),
                  left=jnp.zeros(shape, jnp.int32), value=jnp.zeros(shape + (1,), jnp.float32),
                  gain=jnp.zeros(shape, jnp.float32), count=jnp.zeros(shape, jnp.float32),
                  depth=max_depth)
  return GradientBoosting(trees, baseline(y, task, len(classes)),
                          jnp.asarray(learning_rate, jnp.float32),
                          jnp.asarray(l2_regularization, jnp.float32), bins, classes,
                          int(bins.edges.shape[0]), task, min_samples_leaf, subsample)


@jax.jit
def raw_scores_binned(params: GradientBoosting, Xb: jax.Array) -> jax.Array:
  """Raw scores F (n, K) of binned rows Xb (n, d) (from ``apply_bins(params.bins, X)``):
  F_0 plus every round's trees, added in round order (empty rounds add 0), exactly the sums
  that :func:`fit` carries. Pure and jittable."""

  def add(raw, trees):
    return raw + _round_values(trees, Xb), None

  return jax.lax.scan(add, _start(params, Xb.shape[0]), params.trees)[0]


def _start(params: GradientBoosting, n: int) -> jax.Array:
  return jnp.broadcast_to(params.baseline, (n, params.n_scores))


def _round_values(trees: dt.Tree, Xb: jax.Array) -> jax.Array:
  """One round's K trees (arrays (K, M)) on Xb (n, d) -> (n, K) leaf values."""
  one = lambda tree: tree.value[dt.apply_binned(tree, Xb), 0]
  return jax.vmap(one, out_axes=1)(trees)


def _grow_round(params: GradientBoosting, Xb, y, raw, t, key, bins) -> dt.Tree:
  """Round t's K trees (arrays (K, M), values shrunk by the learning rate) grown at raw (n, K)."""
  g, h = gradient_hessian(raw, y, params.task)
  n = Xb.shape[0]
  keep = jnp.ones((n,), jnp.float32)
  if params.subsample < 1:
    drawn = jax.random.permutation(jax.random.fold_in(key, t), n)
    keep = (drawn < max(1, int(params.subsample * n))).astype(jnp.float32)
  stats = jnp.stack([g * keep[:, None], h * keep[:, None],
                     jnp.broadcast_to(keep[:, None], g.shape)], -1)  # (n, K, 3)
  rule = dt.newton(params.l2_regularization)
  grow = lambda s: dt.grow(Xb, s, bins, rule, max_depth=params.trees.depth,
                           min_samples_leaf=params.min_samples_leaf)
  trees = jax.vmap(grow, in_axes=1)(stats)
  return trees.replace(value=params.learning_rate * trees.value)


@jax.jit
def boost_round(params: GradientBoosting, Xb: jax.Array, y: jax.Array, raw: jax.Array, t, key,
                bins: dt.Bins | None = None) -> GradientBoosting:
  """``params`` with round t (a scalar, may be traced) grown on the training set.

  Xb: (n, d) training bins (``apply_bins(params.bins, X)``), n as given to :func:`init`, in any
  order; y: (n,) class indices (classification) or targets; raw: (n, K) the current raw scores,
  ``raw_scores_binned(params, Xb)``; key: the fit's key (round t draws its ``subsample`` rows
  from ``fold_in(key, t)``); bins: the training bins, ``params.bins`` when None.
  Hyperparameters come from ``params``. Pure and jittable.
  """
  nodes = sum(dt.level_sizes(Xb.shape[0], params.trees.depth, params.min_samples_leaf))
  if nodes != params.trees.feature.shape[2]:
    raise ConfigError(f"boost_round on {Xb.shape[0]} rows grows trees of {nodes} nodes but "
                      f"params hold {params.trees.feature.shape[2]}: pass as many rows as "
                      "init was given.")
  y = jnp.asarray(y, jnp.int32 if params.task == "classification" else jnp.float32)
  trees = _grow_round(params, Xb, y, raw, t, key, params.bins if bins is None else bins)
  stacked = jax.tree.map(lambda a, b: jax.lax.dynamic_update_index_in_dim(a, b, t, 0),
                         params.trees, trees)
  return params.replace(trees=stacked)


# ----------------------------------------------------------------------------- fit


def fit(X, y, *, task: str = "classification", n_estimators: int = 100, learning_rate=0.1,
        max_depth: int = 3, min_samples_leaf: int = 20, l2_regularization=0.0,
        subsample=1.0, max_bins: int = 256, key: jax.Array | None = None) -> GradientBoosting:
  """Boosts ``n_estimators`` rounds of depth-``max_depth`` trees on X (n, d) and y (n,).

  Classification labels may be of any kind (``classes_`` keeps them); regression targets are
  real. ``learning_rate`` > 0 shrinks every tree; ``l2_regularization`` >= 0 is the lambda of
  the leaves; ``subsample`` in (0, 1] the share of rows each round sees, drawn with ``key``
  (default key 0); ``max_bins`` (2..256) bins per feature. See the module docstring.
  """
  X, y, bins, hyper = check(X, y, task=task, n_estimators=n_estimators,
                            learning_rate=learning_rate, max_depth=max_depth,
                            min_samples_leaf=min_samples_leaf,
                            l2_regularization=l2_regularization, subsample=subsample,
                            max_bins=max_bins)
  learning_rate, l2_regularization = hyper.pop("learning_rate"), hyper.pop("l2_regularization")
  classes = hyper.pop("classes")  # compiled for their count only: any labels share a program
  params = _fit(X, y, bins, jax.random.key(0) if key is None else key, learning_rate,
                l2_regularization, n_classes=len(classes), **hyper)
  return params.replace(classes_=classes)


@functools.partial(jax.jit, static_argnames=("task", "n_classes", "n_estimators", "max_depth",
                                             "min_samples_leaf", "subsample"))
def _fit(X, y, bins, key, learning_rate, l2_regularization, *, task, n_classes, n_estimators,
         max_depth, min_samples_leaf, subsample):
  classes = tuple(range(n_classes))
  params = _init(bins, y, task=task, classes=classes, n_estimators=n_estimators,
                 learning_rate=learning_rate, max_depth=max_depth,
                 min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization,
                 subsample=subsample)
  Xb = dt.apply_bins(bins, X)

  def round_(raw, t):
    trees = _grow_round(params, Xb, y, raw, t, key, bins)
    return raw + _round_values(trees, Xb), trees

  _, trees = jax.lax.scan(round_, _start(params, X.shape[0]), jnp.arange(n_estimators))
  return params.replace(trees=trees)


# ----------------------------------------------------------------------------- prediction


def decision_function(params: GradientBoosting, X) -> jax.Array:
  """X (m, d) -> raw scores F (m, K) (K = 1 for regression and binary classification)."""
  return _decision(params, _check_query(params, X))


def _check_query(params: GradientBoosting, X) -> jax.Array:
  return validation.check_query(X, params.n_features_in_, "the gradient boosting model")


@jax.jit
def _decision(params: GradientBoosting, X: jax.Array) -> jax.Array:
  return raw_scores_binned(params, dt.apply_bins(params.bins, X))


def _proba(raw: jax.Array) -> jax.Array:
  if raw.shape[-1] == 1:
    p = jax.nn.sigmoid(raw)
    return jnp.concatenate([1 - p, p], -1)
  return jax.nn.softmax(raw)


def predict_proba(params: GradientBoosting, X) -> jax.Array:
  """X (m, d) -> (m, C) class probabilities, columns as ``classes_``."""
  if params.task != "classification":
    raise ConfigError("predict_proba needs task='classification'.")
  return _proba(decision_function(params, X))


def _index(raw: jax.Array) -> jax.Array:
  """Raw scores (..., K) -> class indices (...): F > 0 for K = 1, else argmax_k F_k."""
  if raw.shape[-1] == 1:
    return (raw[..., 0] > 0).astype(jnp.int32)
  return jnp.argmax(raw, -1)


def predict(params: GradientBoosting, X) -> jax.Array:
  """X (m, d) -> (m,) labels from ``classes_`` (classification; jittable for numeric labels,
  NumPy for others) or float32 values (regression)."""
  raw = decision_function(params, X)
  if params.task == "regression":
    return raw[:, 0]
  return dt.class_labels(params.classes_, _index(raw))


def score(params: GradientBoosting, X, y) -> jax.Array:
  """Accuracy (classification) or R^2 = 1 - SS_res / SS_tot (regression)."""
  return dt.score_predictions(predict(params, X), y, params.task)


def staged_score(params: GradientBoosting, X, y) -> jax.Array:
  """(T,) :func:`score` of the model cut after rounds 1..T: the error against rounds.
  Memory O(T m) for classification (the staged labels), O(m) for regression."""
  X = _check_query(params, X)
  validation.check_targets(y, X.shape[0])
  if params.task == "regression":
    return _staged_r2(params, X, jnp.asarray(y))
  labels = dt.class_labels(params.classes_, _staged_index(params, X))  # (T, m)
  hits = labels == (np.asarray(y) if isinstance(labels, np.ndarray) else jnp.asarray(y))[None]
  return jnp.mean(jnp.asarray(hits), 1)  # float32 as score's, to the last bit


def _staged_raw(params: GradientBoosting, X: jax.Array, score_round):
  Xb = dt.apply_bins(params.bins, X)

  def add(raw, trees):
    raw = raw + _round_values(trees, Xb)
    return raw, score_round(raw)

  return jax.lax.scan(add, _start(params, X.shape[0]), params.trees)[1]


@jax.jit
def _staged_index(params: GradientBoosting, X: jax.Array) -> jax.Array:
  return _staged_raw(params, X, _index)


@jax.jit
def _staged_r2(params: GradientBoosting, X: jax.Array, y: jax.Array) -> jax.Array:
  return _staged_raw(params, X, lambda raw: dt.score_predictions(raw[:, 0], y, "regression"))


def feature_importances(params: GradientBoosting) -> jax.Array:
  """(d,) each feature's share of the total split gain over all trees (0s if none split)."""
  d = params.n_features_in_
  feature = params.trees.feature.reshape(-1)
  total = jax.ops.segment_sum(params.trees.gain.reshape(-1), jnp.where(feature < 0, d, feature),
                              d + 1)[:d]
  return total / jnp.where(total.sum() > 0, total.sum(), 1.0)
