"""Breiman's random forest: T CART trees, each grown on a bootstrap resample with a fresh random
feature subset at every split, their predictions averaged.

Tree t is grown (:func:`m2m_jax.classic.decision_tree.grow`) on the training set reweighted by
its bootstrap counts

  c_ti = #{draws of sample i among n draws with replacement},   sum_i c_ti = n,

i.e. on every sample's statistics scaled by c_ti, a sample never drawn (c_ti = 0) taking no
part (``bootstrap=False``: c_ti = 1). At every node only ``max_features`` features, drawn
afresh among those that can split it, compete for the split. With tree weights w_t (1 for a
grown tree, 0 for an empty slot) and v_t(x) the value of the leaf x reaches in tree t,

  classification   P(c | x) = sum_t w_t p_tc(x) / sum_t w_t   (p_t the leaf's class shares:
                   scikit-learn's soft vote), predict(x) = argmax_c P(c | x)
  regression       predict(x) = ybar + sum_t w_t v_t(x) / sum_t w_t   (leaves hold means of
                   y - ybar, ybar the training mean).

Out of bag: sample i is OOB for the trees with c_ti = 0 (a share (1 - 1/n)^n ~ e^-1 of the
trees); its OOB prediction averages only those trees, and ``oob_score_`` is the accuracy or R^2
of these predictions over the samples that are OOB for at least one tree.
``feature_importances`` is the mean, over the trees that split, of each tree's normalised
impurity decrease per feature, renormalised (scikit-learn's rule).

Computation: the features are binned once; tree t's key is ``fold_in(key, t)``, which draws
its bootstrap counts and its feature subsets (:func:`grow_tree`), so tree t is the same
whatever the number of trees. ``fit`` grows up to ``trees_at_once`` trees in one ``vmap`` of
:func:`grow_tree` and ``lax.map``s over such chunks (of equal size, so one program is
compiled): the per-level histograms of one chunk (:func:`decision_tree.check_growth`) bound the
memory. A forest is a fixed-size stack of trees: :func:`init` makes T empty slots of weight 0
and :func:`set_tree` fills one, so a training loop can grow one tree per step and predict at
any time.
"""

import functools

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
  """A forest of capacity T trees of M nodes.

  trees: :class:`decision_tree.Tree` with every array stacked (T, ...) (value (T, M, C) class
  shares or (T, M, 1) means of y - offset_); tree_weight_: (T,) float32, 1 for a grown tree
  and 0 for an empty slot; offset_: () the training mean added back to regression predictions
  (0 for classification); oob_score_: () OOB accuracy or R^2 (NaN when not computed).
  classes_ (static): the C labels behind the class indices, sorted, of any kind (() for
  regression); n_features_in_: d (static); task, criterion (static).
  """

  trees: dt.Tree
  tree_weight_: jax.Array
  offset_: jax.Array
  oob_score_: jax.Array
  classes_: tuple = flax.struct.field(pytree_node=False, default=())
  n_features_in_: int = flax.struct.field(pytree_node=False, default=1)
  task: str = flax.struct.field(pytree_node=False, default="classification")
  criterion: str = flax.struct.field(pytree_node=False, default="gini")

  @property
  def n_estimators(self) -> int:
    return self.tree_weight_.shape[0]


# ----------------------------------------------------------------------------- trees


def bootstrap_counts(key: jax.Array, n_samples: int, bootstrap: bool = True) -> jax.Array:
  """(n,) float32 times each sample is drawn in n draws with replacement (ones without
  bootstrap): the resample :func:`grow_tree` grows on with the same key."""
  if not bootstrap:
    return jnp.ones((n_samples,), jnp.float32)
  draws = jax.random.randint(jax.random.fold_in(key, 0), (n_samples,), 0, n_samples)
  return jnp.zeros((n_samples,), jnp.float32).at[draws].add(1.0)


def grow_tree(Xb: jax.Array, y: jax.Array, bins: dt.Bins, key: jax.Array, *, task: str,
              n_classes: int = 0, criterion: str, max_depth: int, min_samples_leaf: int = 1,
              max_features: int | None = None, bootstrap: bool = True) -> dt.Tree:
  """One tree of the forest. Pure and jittable (the keyword arguments static).

  Xb: (n, d) training bins (``decision_tree.apply_bins(bins, X)``); y: (n,) class indices, or
  regression targets minus the forest's ``offset_``; key: draws the bootstrap counts
  (:func:`bootstrap_counts`) and the per-node feature subsets; n_classes: C (classification);
  max_features: a count from :func:`decision_tree.resolve_max_features` (None: all).
  """
  counts = bootstrap_counts(key, Xb.shape[0], bootstrap)
  stats = dt.sample_stats(y, counts, task, n_classes)
  rule = dt.CLASSIFICATION[criterion] if task == "classification" else dt.SQUARED_ERROR
  return dt.grow(Xb, stats, bins, rule, max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                 max_features=max_features, key=jax.random.fold_in(key, 1))


def tree_keys(key: jax.Array, n_trees: int) -> jax.Array:
  """(T,) keys, tree t's being ``fold_in(key, t)``."""
  return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n_trees))


def init(bins: dt.Bins, n_samples: int, classes=(), *, n_estimators: int = 100,
         criterion: str | None = None, max_depth: int = 16, min_samples_leaf: int = 1,
         offset=0.0) -> Forest:
  """A forest of capacity ``n_estimators`` with every slot empty (a lone leaf of value 0,
  weight 0); :func:`set_tree` fills them.

  bins: from :func:`decision_tree.bin_features` on the training X (d = its features);
  n_samples: the training rows n, which fix the trees' node count M; classes: the C >= 2
  labels (a sequence of any kind, or an int C for 0..C-1) for classification, () for
  regression; offset: the regression training mean. The trees take the shape that
  :func:`grow_tree` gives them with these hyperparameters.
  """
  T = _check_count("n_estimators", n_estimators)
  classes = _classes_tuple(classes)
  if len(classes) == 1:
    raise ConfigError(f"classes={classes!r}: a classifier needs at least two classes.")
  task = "classification" if classes else "regression"
  criterion = dt.check_task_criterion(task, criterion)
  grow = functools.partial(
      grow_tree, task=task, n_classes=len(classes), criterion=criterion,
      max_depth=dt.check_depth(max_depth),
      min_samples_leaf=dt.check_min_samples_leaf(min_samples_leaf, n_samples))
  shape = jax.eval_shape(grow, jax.ShapeDtypeStruct((n_samples, bins.edges.shape[0]), jnp.uint8),
                         jax.ShapeDtypeStruct((n_samples,), jnp.int32 if classes else jnp.float32),
                         bins, jax.random.key(0))
  fill = dict(feature=-1, bin=-1, threshold=jnp.inf)
  trees = jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.full((T, *leaf.shape), fill.get(path[0].name, 0), leaf.dtype), shape)
  return Forest(trees, jnp.zeros((T,), jnp.float32), jnp.asarray(offset, jnp.float32),
                jnp.full((), jnp.nan, jnp.float32), classes, int(bins.edges.shape[0]), task,
                criterion)


def set_tree(forest: Forest, t, tree: dt.Tree) -> Forest:
  """The forest with slot t (an int, may be traced) holding ``tree`` at weight 1. Jittable."""
  trees = jax.tree.map(lambda stack, leaf: stack.at[t].set(leaf), forest.trees, tree)
  return forest.replace(trees=trees, tree_weight_=forest.tree_weight_.at[t].set(1.0))


def _classes_tuple(classes) -> tuple:
  if validation.as_integer(classes) is not None:
    return tuple(range(validation.as_integer(classes)))
  return tuple(np.asarray(classes).tolist())


def _check_count(name: str, value) -> int:
  count = validation.as_integer(value)
  if count is None or count < 1:
    raise ConfigError(f"{name}={value!r} must be an integer >= 1.")
  return count


# ----------------------------------------------------------------------------- fit


def fit(X, y, *, task: str = "classification", n_estimators: int = 100,
        criterion: str | None = None, max_depth: int = 16, min_samples_leaf: int = 1,
        max_features=None, bootstrap: bool = True, oob_score: bool = False,
        max_bins: int = 256, key: jax.Array | None = None,
        trees_at_once: int | None = None) -> Forest:
  """Grows ``n_estimators`` trees on X (n, d) and y (n,).

  Classification labels may be of any kind (``classes_`` keeps them; ``criterion`` 'gini', the
  default, or 'entropy'); regression targets are real ('squared_error'). ``max_features`` as
  in scikit-learn ('sqrt', 'log2', a count or a fraction), except that None means the task's
  default, 'sqrt' (classification) or 1.0 (regression): all features is 1.0, not None.
  ``oob_score``: store the out-of-bag score in ``oob_score_`` (needs ``bootstrap``). ``key``
  (default key 0) draws everything. ``trees_at_once``: trees grown in one vectorised step
  (default: the largest power of two up to ``n_estimators`` whose histograms fit the growth
  memory limit).
  """
  criterion = dt.check_task_criterion(task, criterion)
  depth = dt.check_depth(max_depth)
  T = _check_count("n_estimators", n_estimators)
  if oob_score and not bootstrap:
    raise ConfigError("oob_score=True needs bootstrap=True: without resampling no sample is "
                      "out of bag.")
  classes, y = dt.encode_targets(y, task)
  X, y = validation.check_X_y(X, y, classification=task == "classification",
                              classes=classes or None)
  n, d = X.shape
  leaf = dt.check_min_samples_leaf(min_samples_leaf, n)
  features = dt.resolve_max_features(
      DEFAULT_MAX_FEATURES[task] if max_features is None else max_features, d)
  bins = dt.bin_features(X, max_bins)
  at_once = _trees_at_once(trees_at_once, T, n, d, bins.max_bins, (len(classes) or 3) + 1,
                           depth, leaf)
  keys = tree_keys(jax.random.key(0) if key is None else key, T)
  forest = _fit(X, y, bins, keys,
                task=task, n_classes=len(classes), criterion=criterion, max_depth=depth,
                min_samples_leaf=leaf, max_features=None if features == d else features,
                bootstrap=bool(bootstrap), oob_score=bool(oob_score), trees_at_once=at_once)
  return forest.replace(classes_=classes)


def _trees_at_once(trees_at_once, n_trees: int, n: int, d: int, n_bins: int, n_stats: int,
                   depth: int, leaf: int) -> int:
  """The trees grown at once: refused (ConfigError) if their histograms do not fit."""
  growth = functools.partial(dt.check_growth, n, d, n_bins, n_stats, depth, leaf)
  if trees_at_once is not None:
    chunk = min(_check_count("trees_at_once", trees_at_once), n_trees)
    growth(trees_at_once=chunk)
    return chunk
  chunk = 1 << (n_trees.bit_length() - 1)
  while chunk > 1:
    try:
      growth(trees_at_once=chunk)
      return chunk
    except ConfigError:
      chunk //= 2
  growth(trees_at_once=1)
  return 1


@functools.partial(jax.jit, static_argnames=("task", "n_classes", "criterion", "max_depth",
                                             "min_samples_leaf", "max_features", "bootstrap",
                                             "oob_score", "trees_at_once"))
def _fit(X, y, bins, keys, *, task, n_classes, criterion, max_depth, min_samples_leaf,
         max_features, bootstrap, oob_score, trees_at_once) -> Forest:
  """Every tree, in equal chunks of at most ``trees_at_once`` (the last padded with repeats of
  the first keys, dropped after); the OOB score; classes_ left to the caller."""
  offset = jnp.mean(y) if task == "regression" else jnp.zeros((), jnp.float32)
  y = y - offset if task == "regression" else y
  Xb = dt.apply_bins(bins, X)
  grow = functools.partial(grow_tree, Xb, y, bins, task=task, n_classes=n_classes,
                           criterion=criterion, max_depth=max_depth,
                           min_samples_leaf=min_samples_leaf, max_features=max_features,
                           bootstrap=bootstrap)
  T = keys.shape[0]
  chunks = -(-T // trees_at_once)
  size = -(-T // chunks)
  padded = jnp.concatenate([keys, keys[:chunks * size - T]])
  trees = jax.lax.map(jax.vmap(grow), padded.reshape(chunks, size))
  trees = jax.tree.map(lambda x: x.reshape(chunks * size, *x.shape[2:])[:T], trees)
  oob = _oob_score(trees, keys, X, y, task) if oob_score else jnp.full((), jnp.nan)
  return Forest(trees, jnp.ones((T,), jnp.float32), offset, oob.astype(jnp.float32),
                tuple(range(n_classes)), Xb.shape[1], task, criterion)


def _oob_score(trees: dt.Tree, keys: jax.Array, X, y, task: str) -> jax.Array:
  """Accuracy / R^2 of each sample's mean prediction over the trees it is out of bag for, over
  the samples out of bag for some tree. Out-of-bag rows go down by the thresholds, as test rows
  do (not by their bins: a bin holding no in-bag row may lie on either side of a threshold).
  One tree at a time: memory O(n V)."""
  n = X.shape[0]

  def add(carry, tree_key):
    total, count = carry
    tree, key = tree_key
    out = bootstrap_counts(key, n) == 0
    value = tree.value[dt.apply(tree, X)]
    return (total + jnp.where(out[:, None], value, 0.0), count + out), None

  start = (jnp.zeros((n, trees.value.shape[-1])), jnp.zeros((n,)))
  (total, count), _ = jax.lax.scan(add, start, (trees, keys))
  seen = count > 0
  if task == "classification":
    return jnp.sum(seen & (jnp.argmax(total, 1) == y)) / jnp.sum(seen)
  prediction = total[:, 0] / jnp.where(seen, count, 1.0)
  mean = jnp.sum(jnp.where(seen, y, 0.0)) / jnp.sum(seen)
  residual = jnp.sum(jnp.where(seen, (y - prediction) ** 2, 0.0))
  return 1 - residual / jnp.sum(jnp.where(seen, (y - mean) ** 2, 0.0))


# ----------------------------------------------------------------------------- prediction


@jax.jit
def _mean_value(trees: dt.Tree, weights: jax.Array, X: jax.Array) -> jax.Array:
  """X (m, d) -> (m, V) sum_t w_t v_t(x) / sum_t w_t, one tree at a time (memory O(m V))."""

  def add(total, tree_weight):
    tree, weight = tree_weight
    return total + weight * tree.value[dt.apply(tree, X)], None

  total, _ = jax.lax.scan(add, jnp.zeros((X.shape[0], trees.value.shape[-1])), (trees, weights))
  weight = jnp.sum(weights)
  return total / jnp.where(weight > 0, weight, 1.0)


def _values(params: Forest, X) -> jax.Array:
  X = validation.check_query(X, params.n_features_in_, "the random forest")
  return _mean_value(params.trees, params.tree_weight_, X)


def predict_proba(params: Forest, X) -> jax.Array:
  """X (m, d) -> (m, C) the weighted mean of the leaf class shares, columns as ``classes_``."""
  if params.task != "classification":
    raise ConfigError("predict_proba needs task='classification'.")
  return _values(params, X)


def predict(params: Forest, X):
  """X (m, d) -> (m,) labels from ``classes_`` (classification; jittable for numeric labels,
  NumPy for others) or float32 values (regression)."""
  values = _values(params, X)
  if params.task == "classification":
    return dt.class_labels(params.classes_, jnp.argmax(values, 1))
  return values[:, 0] + params.offset_


def score(params: Forest, X, y) -> jax.Array:
  """Accuracy (classification) or R^2 = 1 - SS_res / SS_tot (regression)."""
  return dt.score_predictions(predict(params, X), y, params.task)


def feature_importances(params: Forest) -> jax.Array:
  """(d,) the mean over the grown trees that split of their normalised per-feature impurity
  decreases, renormalised to sum 1 (scikit-learn's ``feature_importances_``; 0 if none split)."""
  each = jax.vmap(dt.importances, (0, None))(params.trees, params.n_features_in_)  # (T, d)
  total = (params.tree_weight_ * (each.sum(1) > 0)) @ each
  return total / jnp.where(total.sum() > 0, total.sum(), 1.0)
