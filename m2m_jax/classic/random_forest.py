"""Breiman's random forest: T CART trees, each grown on a bootstrap resample with a random
feature subset at every split, their predictions averaged.

Tree t is grown (:mod:`m2m_jax.classic.decision_tree`) on the training set reweighted by the
bootstrap counts

  c_ti = #{draws of sample i among n draws with replacement},   sum_i c_ti = n,

i.e. on the statistics of every sample scaled by c_ti, a sample drawn never (c_ti = 0) taking
no part (``bootstrap=False``: c_ti = 1). At every node only ``max_features`` features, drawn
afresh, compete for the split. With tree weights w_t (1 for a grown tree, 0 for an empty slot)
and v_t(x) the value of the leaf x reaches in tree t,

  classification   P(c | x) = sum_t w_t p_tc(x) / sum_t w_t   (p_t the leaf's class shares:
                   scikit-learn's soft vote), predict(x) = argmax_c P(c | x)
  regression       predict(x) = ybar + sum_t w_t v_t(x) / sum_t w_t   (leaves hold means of y - ybar).

Out of bag: sample i is OOB for the trees with c_ti = 0 (each tree misses a share
(1 - 1/n)^n ~ e^-1 of the samples); its OOB prediction averages only those trees, and
``oob_score_`` is the accuracy or R^2 of these predictions over the samples that are OOB for at
least one tree. ``feature_importances`` is the mean over the trees that split of each tree's
normalised impurity decrease per feature (scikit-learn's rule).

Computation: the features are binned once; the key of tree t is ``fold_in(key, t)``, which
draws its bootstrap counts and its feature subsets (:func:`grow_tree`), so tree t is the same
whatever the number of trees. ``fit`` grows ``trees_at_once`` trees in one ``vmap`` of
:func:`grow_tree` and ``lax.map``s over such chunks, so the per-level histograms of a chunk
(:func:`decision_tree.check_growth`) bound the memory. A forest is a fixed-size stack of trees:
:func:`empty_forest` preallocates T slots of weight 0 and :func:`set_tree` fills one, so a
training loop can grow one tree per step and predict at any time.
"""

import functools
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.classic import decision_tree as dt
from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError

DEFAULT_MAX_FEATURES = {"classification": "sqrt", "regression": 1.0}  # scikit-learn's


@flax.struct.dataclass
class Forest:
  """A fitted forest of T trees of M nodes.

  trees: :class:`decision_tree.Tree` with a leading axis T on every array (value (T, M, C)
  class shares or (T, M, 1) means of y - offset_); tree_weight_: (T,) float32, 1 for a grown
  tree and 0 for an empty slot; classes_: (C,) labels behind the class indices (None for
  regression); offset_: () the training mean added back to regression predictions;
  oob_score_: () OOB accuracy or R^2, NaN when not computed; n_features_in_: d (static).
  """

  trees: dt.Tree
  tree_weight_: jax.Array
  classes_: jax.Array | None
  offset_: jax.Array
  oob_score_: jax.Array
  n_features_in_: int = flax.struct.field(pytree_node=False, default=1)
  task: str = flax.struct.field(pytree_node=False, default="classification")
  criterion: str = flax.struct.field(pytree_node=False, default="gini")


class Data(NamedTuple):
  """Training data ready for :func:`grow_tree`: Xb (n, d) uint8 bins; y (n,) int32 class
  indices or float32 targets minus ``offset``; bins: the thresholds; classes: (C,) labels or
  None; offset: () the mean of y (0 for classification)."""

  Xb: jax.Array
  y: jax.Array
  bins: dt.Bins
  classes: jax.Array | None
  offset: jax.Array


def prepare(X, y, *, task: str = "classification", max_bins: int = 256) -> Data:
  """Checks X (n, d) and y (n,), bins the features, encodes labels / centres targets."""
  classes, y = dt.encode_targets(y, task)
  X, y = validation.check_X_y(X, y, classification=task == "classification", classes=classes)
  bins = dt.bin_features(X, max_bins)
  offset = jnp.zeros(()) if task == "classification" else jnp.mean(y)
  return Data(dt.apply_bins(bins, X), y - offset if task == "regression" else y, bins,
              None if classes is None else jnp.asarray(classes), offset)


def bootstrap_counts(key: jax.Array, n_samples: int, bootstrap: bool = True) -> jax.Array:
  """(n,) float32 times each sample is drawn in n draws with replacement (ones without
  bootstrap); the draw ``grow_tree`` makes with the same key."""
  if not bootstrap:
    return jnp.ones((n_samples,), jnp.float32)
  draws = jax.random.randint(jax.random.fold_in(key, 0), (n_samples,), 0, n_samples)
  return jnp.zeros((n_samples,), jnp.float32).at[draws].add(1.0)


def grow_tree(Xb: jax.Array, y: jax.Array, bins: dt.Bins, key: jax.Array, *, task: str,
              n_classes: int, criterion: str, max_depth: int, min_samples_leaf: int,
              max_features: int | None, bootstrap: bool = True) -> dt.Tree:
  """One tree of the forest; pure and jittable (all but Xb, y, bins and key static).

  Xb (n, d), y (n,) as in :class:`Data` (regression targets centred); key draws the bootstrap
  counts (:func:`bootstrap_counts`) and the per-node feature subsets; n_classes: C (ignored
  for regression); max_features: a count from :func:`decision_tree.resolve_max_features`.
  """
  counts = bootstrap_counts(key, Xb.shape[0], bootstrap)
  stats = dt.sample_stats(y, counts, task, n_classes)
  rule = dt.CLASSIFICATION[criterion] if task == "classification" else dt.SQUARED_ERROR
  return dt.grow(Xb, stats, bins, rule, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                 max_features=max_features, key=jax.random.fold_in(key, 1))


def tree_keys(key: jax.Array, n_trees: int) -> jax.Array:
  """(T,) keys, tree t's being ``fold_in(key, t)``."""
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n_trees))


def empty_forest(n_trees: int, data: Data, *, max_depth: int, min_samples_leaf: int = 1,
                 criterion: str | None = None) -> Forest:
  """A forest of ``n_trees`` empty slots (lone leaves of value 0, weight 0) shaped like the
  trees :func:`grow_tree` grows on ``data``; fill them with :func:`set_tree`."""
  task = "regression" if data.classes is None else "classification"
  n, d = data.Xb.shape
  m = sum(dt.level_sizes(n, max_depth, min_samples_leaf))
  v = 1 if data.classes is None else data.classes.shape[0]
  trees = dt.Tree(feature=jnp.full((n_trees, m), -1, jnp.int32),
                  bin=jnp.full((n_trees, m), -1, jnp.int32),
                  threshold=jnp.full((n_trees, m), jnp.inf, jnp.float32),
                  left=jnp.zeros((n_trees, m), jnp.int32), value=jnp.zeros((n_trees, m, v)),
                  gain=jnp.zeros((n_trees, m)), count=jnp.zeros((n_trees, m)), depth=max_depth)
  return Forest(trees, jnp.zeros((n_trees,)), data.classes, data.offset, jnp.full((), jnp.nan),
                d, task, dt.check_task_criterion(task, criterion))


def set_tree(forest: Forest, t, tree: dt.Tree) -> Forest:
  """The forest with slot t (int or traced int) holding ``tree`` at weight 1."""
  trees = jax.tree.map(lambda stack, leaf: stack.at[t].set(leaf), forest.trees, tree)
  return forest.replace(trees=trees, tree_weight_=forest.tree_weight_.at[t].set(1.0))


def fit(X, y, *, task: str = "classification", n_estimators: int = 100,
        criterion: str | None = None, max_depth: int = 16, min_samples_leaf: int = 1,
        max_features=None, bootstrap: bool = True, oob_score: bool = False,
        max_bins: int = 256, key: jax.Array | None = None,
        trees_at_once: int | None = None) -> Forest:
  """Grows ``n_estimators`` trees on X (n, d) and y (n,).

  Labels may be of any kind (``classes_`` keeps them); ``criterion`` 'gini' (default) or
  'entropy' for classification, 'squared_error' for regression. ``max_features`` as in
  scikit-learn, None meaning the task's default ('sqrt' / 1.0). ``oob_score`` stores the
  out-of-bag score in ``oob_score_`` (needs ``bootstrap``). ``key`` (default key 0) draws
  everything. ``trees_at_once``: trees grown in one vectorised step (default: the largest
  power of two up to ``n_estimators`` whose histograms fit the growth memory limit).
  """
  criterion = dt.check_task_criterion(task, criterion)
  depth = dt.check_depth(max_depth)
  n_trees = validation.as_integer(n_estimators)
  if n_trees is None or n_trees < 1:
    raise ConfigError(f"n_estimators={n_estimators!r} must be an integer >= 1.")
  if oob_score and not bootstrap:
    raise ConfigError("oob_score=True needs bootstrap=True: without resampling no sample is "
                      "out of bag.")
  data = prepare(X, y, task=task, max_bins=max_bins)
  n, d = data.Xb.shape
  leaf = dt.check_min_samples_leaf(min_samples_leaf, n)
  features = dt.resolve_max_features(
      DEFAULT_MAX_FEATURES[task] if max_features is None else max_features, d)
  n_stats = (3 if data.classes is None else data.classes.shape[0]) + 1
  at_once = _trees_at_once(trees_at_once, n_trees, (n, d, data.bins.max_bins, n_stats, depth,
                                                    leaf))
  key = jax.random.key(0) if key is None else key
  return _fit(data, tree_keys(key, n_trees), task=task, criterion=criterion, max_depth=depth,
              min_samples_leaf=leaf, max_features=features, bootstrap=bool(bootstrap),
              oob_score=bool(oob_score), trees_at_once=at_once)


def _trees_at_once(trees_at_once, n_trees: int, growth: tuple) -> int:
  """The chunk of trees grown at once, refused (ConfigError) if its histograms do not fit."""
  if trees_at_once is not None:
    chunk = validation.as_integer(trees_at_once)
    if chunk is None or chunk < 1:
      raise ConfigError(f"trees_at_once={trees_at_once!r} must be an integer >= 1.")
    chunk = min(chunk, n_trees)
    dt.check_growth(*growth, trees_at_once=chunk)
    return chunk
  chunk = 1 << (n_trees.bit_length() - 1)
  while chunk > 1:
    try:
      dt.check_growth(*growth, trees_at_once=chunk)
      return chunk
    except ConfigError:
      chunk //= 2
  dt.check_growth(*growth)
  return 1


@functools.partial(jax.jit, static_argnames=("task", "criterion", "max_depth",
                                             "min_samples_leaf", "max_features", "bootstrap",
                                             "oob_score", "trees_at_once"))
def _fit(data, keys, *, task, criterion, max_depth, min_samples_leaf, max_features, bootstrap,
         oob_score, trees_at_once):
  n_classes = 0 if data.classes is None else data.classes.shape[0]
  grow = functools.partial(grow_tree, data.Xb, data.y, data.bins, task=task, n_classes=n_classes,
                           criterion=criterion, max_depth=max_depth,
                           min_samples_leaf=min_samples_leaf, max_features=max_features,
                           bootstrap=bootstrap)
  trees = jax.lax.map(grow, keys, batch_size=trees_at_once)
  oob = _oob_score(trees, keys, data, task) if oob_score else jnp.full((), jnp.nan)
  return Forest(trees, jnp.ones((keys.shape[0],)), data.classes, data.offset, oob,
                data.Xb.shape[1], task, criterion)


def _oob_score(trees: dt.Tree, keys: jax.Array, data: Data, task: str) -> jax.Array:
  """Accuracy / R^2 of each sample's mean prediction over the trees it is out of bag for."""
  n = data.Xb.shape[0]

  def add(carry, tree_key):
    total, count = carry
    tree, key = tree_key
    out = bootstrap_counts(key, n) == 0
    value = tree.value[dt.apply_binned(tree, data.Xb)]
    return (total + jnp.where(out[:, None], value, 0.0), count + out), None

  start = (jnp.zeros((n, trees.value.shape[-1])), jnp.zeros((n,)))
  (total, count), _ = jax.lax.scan(add, start, (trees, keys))
  seen = count > 0
  if task == "classification":
    return jnp.sum(seen & (jnp.argmax(total, 1) == data.y)) / jnp.sum(seen)
  prediction = total[:, 0] / jnp.where(seen, count, 1.0)
  mean = jnp.sum(jnp.where(seen, data.y, 0.0)) / jnp.sum(seen)
  residual = jnp.sum(jnp.where(seen, (data.y - prediction) ** 2, 0.0))
  return 1 - residual / jnp.sum(jnp.where(seen, (data.y - mean) ** 2, 0.0))


def _values(params: Forest, X) -> jax.Array:
  """X (m, d) -> (m, V) the tree-weighted mean of the leaf values, one tree at a time."""
  X = validation.check_query(X, params.n_features_in_, "the random forest")

  def add(total, tree_weight):
    tree, weight = tree_weight
    return total + weight * tree.value[dt.apply(tree, X)], None

  start = jnp.zeros((X.shape[0], params.trees.value.shape[-1]))
  total, _ = jax.lax.scan(add, start, (params.trees, params.tree_weight_))
  weight = jnp.sum(params.tree_weight_)
  return total / jnp.where(weight > 0, weight, 1.0)


def predict_proba(params: Forest, X) -> jax.Array:
  """X (m, d) -> (m, C) mean class shares of the leaves each row reaches, columns as ``classes_``."""
  if params.task != "classification":
    raise ConfigError("predict_proba needs task='classification'.")
  return _values(params, X)


def predict(params: Forest, X) -> jax.Array:
  """X (m, d) -> (m,) labels from ``classes_`` (classification) or float32 values (regression)."""
  values = _values(params, X)
  if params.task == "classification":
    return params.classes_[jnp.argmax(values, 1)]
  return values[:, 0] + params.offset_


def score(params: Forest, X, y) -> jax.Array:
  """Accuracy (classification) or R^2 = 1 - SS_res / SS_tot (regression)."""
  return dt.score_predictions(predict(params, X), y, params.task)


def feature_importances(params: Forest) -> jax.Array:
  """(d,) the mean over the grown trees that split of their normalised per-feature impurity
  decreases, normalised to sum 1 (scikit-learn's ``feature_importances_``; 0 if none split)."""
  each = jax.vmap(dt.importances, (0, None))(params.trees, params.n_features_in_)  # (T, d)
  weight = params.tree_weight_ * (each.sum(1) > 0)
  total = weight @ each
  return total / jnp.where(total.sum() > 0, total.sum(), 1.0)
