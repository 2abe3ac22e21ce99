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
:func:`init`, :func:`raw_scores_binned` and :func:`boost_round` (rounds not grown yet are
empty trees, a single leaf of value 0) and gets the same parameters.
"""

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.classic import decision_tree as dt
from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError, DataError, choose

TASKS = ("classification", "regression")


@flax.struct.dataclass
class GradientBoosting:
  """A boosted ensemble of T rounds of K trees.

  trees: :class:`decision_tree.Tree` with arrays stacked (T, K, M) (value (T, K, M, 1), the
  leaf values already multiplied by the learning rate); baseline: (K,) float32 F_0;
  learning_rate: () float32; bins: the :class:`decision_tree.Bins` the trees split on;
  classes_: (C,) labels behind the class indices (None for regression).
  K = 1 for regression and binary classification, C otherwise. n_features_in_, task: static.
  """

  trees: dt.Tree
  baseline: jax.Array
  learning_rate: jax.Array
  bins: dt.Bins
  classes_: jax.Array | None
  n_features_in_: int = flax.struct.field(pytree_node=False, default=1)
  task: str = flax.struct.field(pytree_node=False, default="classification")

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


# ----------------------------------------------------------------------------- rounds


def init(bins: dt.Bins, y: jax.Array, *, task: str = "classification", n_estimators: int = 100,
         learning_rate=0.1, max_depth: int = 3, min_samples_leaf: int = 20,
         classes: jax.Array | None = None) -> GradientBoosting:
  """Parameters of capacity ``n_estimators`` rounds, every round an empty tree (one leaf of
  value 0), so that the model predicts the baseline F_0 of y.

  bins: from :func:`decision_tree.bin_features` on the training X; y: (n,) training targets
  (class indices for classification, whose labels ``classes`` (C,) gives). The trees get the
  node count that :func:`decision_tree.grow` gives n samples with these ``max_depth`` and
  ``min_samples_leaf``. Pure; jittable with every keyword but ``learning_rate`` static.
  """
  n_classes = 0 if classes is None else classes.shape[0]
  if task == "classification" and n_classes < 2:
    raise ConfigError("init(task='classification') needs classes, the (C,) labels, C >= 2.")
  k = _n_scores(task, n_classes)
  nodes = sum(dt.level_sizes(y.shape[0], max_depth, min_samples_leaf))
  shape = (n_estimators, k, nodes)
  trees = dt.Tree(feature=jnp.full(shape, -1, jnp.int32), bin=jnp.full(shape, -1, jnp.int32),
                  threshold=jnp.full(shape, jnp.inf, jnp.float32),
                  left=jnp.zeros(shape, jnp.int32), value=jnp.zeros(shape + (1,), jnp.float32),
                  gain=jnp.zeros(shape, jnp.float32), count=jnp.zeros(shape, jnp.float32),
                  depth=max_depth)
  return GradientBoosting(trees, baseline(y, task, n_classes),
                          jnp.asarray(learning_rate, jnp.float32), bins, classes,
                          bins.edges.shape[0], task)


def raw_scores_binned(params: GradientBoosting, Xb: jax.Array) -> jax.Array:
  """Raw scores F (n, K) of binned rows Xb (n, d) (from ``apply_bins(params.bins, X)``):
  F_0 plus every round's trees, added in round order (empty rounds add 0)."""

  def add(raw, trees):
    return raw + _round_values(trees, Xb), None

  start = jnp.broadcast_to(params.baseline, (Xb.shape[0], params.n_scores))
  return jax.lax.scan(add, start, params.trees)[0]


def _round_values(trees: dt.Tree, Xb: jax.Array) -> jax.Array:
  """One round's K trees (arrays (K, M)) on Xb (n, d) -> (n, K) leaf values."""
  one = lambda tree: tree.value[dt.apply_binned(tree, Xb), 0]
  return jax.vmap(one, out_axes=1)(trees)


def _grow_round(params, Xb, y, raw, t, key, *, min_samples_leaf, l2_regularization, subsample):
  """Round t's K trees (arrays (K, M), values shrunk by the learning rate) grown at raw (n, K)."""
  g, h = gradient_hessian(raw, y, params.task)
  n = Xb.shape[0]
  keep = jnp.ones((n,), jnp.float32)
  if subsample < 1:
    drawn = jax.random.permutation(jax.random.fold_in(key, t), n) < max(1, int(subsample * n))
    keep = drawn.astype(jnp.float32)
  stats = jnp.stack([g * keep[:, None], h * keep[:, None],
                     jnp.broadcast_to(keep[:, None], g.shape)], -1)  # (n, K, 3)
  rule = dt.newton(l2_regularization)
  grow = lambda s: dt.grow(Xb, s, params.bins, rule, max_depth=params.trees.depth,
                           min_samples_leaf=min_samples_leaf)
  trees = jax.vmap(grow, in_axes=1)(stats)
  return trees.replace(value=params.learning_rate * trees.value)


@functools.partial(jax.jit, static_argnames=("min_samples_leaf", "subsample"))
def boost_round(params: GradientBoosting, Xb: jax.Array, y: jax.Array, raw: jax.Array, t, key,
                *, min_samples_leaf: int = 20, l2_regularization=0.0,
                subsample: float = 1.0) -> GradientBoosting:
  """``params`` with round t (a scalar, may be traced) grown on the training set.

  Xb: (n, d) training bins (``apply_bins(params.bins, X)``); y: (n,) targets (class indices for
  classification); raw: (n, K) the current raw scores, ``raw_scores_binned(params, Xb)``;
  key: the fit's key, round t draws its ``subsample`` rows from ``fold_in(key, t)``. The n rows
  must be as many as :func:`init` was given (they fix the tree size); their order may change
  between rounds. ``min_samples_leaf`` and ``subsample`` are static.
  """
  nodes = sum(dt.level_sizes(Xb.shape[0], params.trees.depth, min_samples_leaf))
  if nodes != params.trees.feature.shape[2]:
    raise ConfigError(f"boost_round on {Xb.shape[0]} rows with min_samples_leaf="
                      f"{min_samples_leaf} grows trees of {nodes} nodes but params hold "
                      f"{params.trees.feature.shape[2]}: pass the rows and min_samples_leaf "
                      "that init was given.")
  trees = _grow_round(params, Xb, y, raw, t, key, min_samples_leaf=min_samples_leaf,
                      l2_regularization=l2_regularization, subsample=subsample)
  stacked = jax.tree.map(lambda a, b: jax.lax.dynamic_update_index_in_dim(a, b, t, 0),
                         params.trees, trees)
  return params.replace(trees=stacked)


# ----------------------------------------------------------------------------- fit


def fit(X, y, *, task: str = "classification", n_estimators: int = 100, learning_rate=0.1,
        max_depth: int = 3, min_samples_leaf: int = 20, l2_regularization=0.0,
        subsample=1.0, max_bins: int = 256, key: jax.Array | None = None) -> GradientBoosting:
  """Boosts ``n_estimators`` rounds of depth-``max_depth`` trees on X (n, d) and y (n,).

  Classification labels may be any numbers (``classes_`` keeps them); regression targets are
  real. ``learning_rate`` > 0 shrinks every tree; ``l2_regularization`` >= 0 is the lambda of
  the leaves; ``subsample`` in (0, 1] the share of rows each round sees, drawn with ``key``
  (default key 0); ``max_bins`` (2..256) bins per feature. See the module docstring.
  """
  choose("task", task, TASKS)
  rounds = validation.as_integer(n_estimators)
  if rounds is None or rounds < 1:
    raise ConfigError(f"n_estimators={n_estimators!r} must be an integer >= 1.")
  _check_real("learning_rate", learning_rate, "a positive number", lambda v: v > 0)
  _check_real("l2_regularization", l2_regularization, "a number >= 0", lambda v: v >= 0)
  _check_real("subsample", subsample, "a fraction in (0, 1]", lambda v: 0 < v <= 1)
  depth = dt.check_depth(max_depth)
  classes, y = dt.encode_targets(y, task)
  X, y = validation.check_X_y(X, y, classification=task == "classification", classes=classes)
  n, d = X.shape
  leaf = dt.check_min_samples_leaf(min_samples_leaf, n)
  bins = dt.bin_features(X, max_bins)
  k = _n_scores(task, 0 if classes is None else len(classes))
  dt.check_growth(n, d, bins.max_bins, 3, depth, leaf, trees_at_once=k)
  key = jax.random.key(0) if key is None else key
  return _fit(X, y, bins, key, float(learning_rate), float(l2_regularization),
              None if classes is None else jnp.asarray(classes), task=task,
              n_estimators=rounds, max_depth=depth, min_samples_leaf=leaf,
              subsample=float(subsample))


def _check_real(name, value, what, ok) -> None:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) \
      or not np.isfinite(value) or not ok(value):
    raise ConfigError(f"{name}={value!r} must be {what}.")


@functools.partial(jax.jit, static_argnames=("task", "n_estimators", "max_depth",
                                             "min_samples_leaf", "subsample"))
def _fit(X, y, bins, key, learning_rate, l2_regularization, classes, *, task, n_estimators,
         max_depth, min_samples_leaf, subsample):
  params = init(bins, y, task=task, n_estimators=n_estimators, learning_rate=learning_rate,
                max_depth=max_depth, min_samples_leaf=min_samples_leaf, classes=classes)
  Xb = dt.apply_bins(bins, X)

  def round_(raw, t):
    trees = _grow_round(params, Xb, y, raw, t, key, min_samples_leaf=min_samples_leaf,
                        l2_regularization=l2_regularization, subsample=subsample)
    return raw + _round_values(trees, Xb), trees

  start = jnp.broadcast_to(params.baseline, (X.shape[0], params.n_scores))
  _, trees = jax.lax.scan(round_, start, jnp.arange(n_estimators))
  return params.replace(trees=trees)


# ----------------------------------------------------------------------------- prediction


def decision_function(params: GradientBoosting, X) -> jax.Array:
  """X (m, d) -> raw scores F (m, K) (K = 1 for regression and binary classification)."""
  X = validation.check_query(X, params.n_features_in_, "the gradient boosting model")
  return raw_scores_binned(params, dt.apply_bins(params.bins, X))


def _proba(raw: jax.Array) -> jax.Array:
  if raw.shape[1] == 1:
    p = jax.nn.sigmoid(raw)
    return jnp.concatenate([1 - p, p], 1)
  return jax.nn.softmax(raw)


def predict_proba(params: GradientBoosting, X) -> jax.Array:
  """X (m, d) -> (m, C) class probabilities, columns as ``classes_``."""
  if params.task != "classification":
    raise ConfigError("predict_proba needs task='classification'.")
  return _proba(decision_function(params, X))


def _from_raw(params: GradientBoosting, raw: jax.Array) -> jax.Array:
  if params.task == "regression":
    return raw[:, 0]
  index = (raw[:, 0] > 0).astype(jnp.int32) if raw.shape[1] == 1 else jnp.argmax(raw, 1)
  return params.classes_[index]


def predict(params: GradientBoosting, X) -> jax.Array:
  """X (m, d) -> (m,) labels from ``classes_`` (classification) or float32 values (regression)."""
  return _from_raw(params, decision_function(params, X))


def score(params: GradientBoosting, X, y) -> jax.Array:
  """Accuracy (classification) or R^2 = 1 - SS_res / SS_tot (regression)."""
  return dt.score_predictions(predict(params, X), y, params.task)


def staged_score(params: GradientBoosting, X, y) -> jax.Array:
  """(T,) :func:`score` of the model cut after rounds 1..T: the error against rounds."""
  X = validation.check_query(X, params.n_features_in_, "the gradient boosting model")
  validation.check_targets(y, X.shape[0])
  Xb = dt.apply_bins(params.bins, X)

  def add(raw, trees):
    raw = raw + _round_values(trees, Xb)
    return raw, dt.score_predictions(_from_raw(params, raw), y, params.task)

  start = jnp.broadcast_to(params.baseline, (X.shape[0], params.n_scores))
  return jax.lax.scan(add, start, params.trees)[1]


def feature_importances(params: GradientBoosting) -> jax.Array:
  """(d,) each feature's share of the total split gain over all trees (0s if none split)."""
  d = params.n_features_in_
  feature = params.trees.feature.reshape(-1)
  total = jax.ops.segment_sum(params.trees.gain.reshape(-1), jnp.where(feature < 0, d, feature),
                              d + 1)[:d]
  return total / jnp.where(total.sum() > 0, total.sum(), 1.0)
