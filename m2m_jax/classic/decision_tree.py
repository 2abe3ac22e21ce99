"""CART decision trees grown level by level on binned features (the histogram method).

A tree splits a node t holding samples S_t on one feature j at one threshold s into
L = {x in S_t : x_j <= s} and R = S_t \\ L, choosing the (j, s) with the largest gain

  gain = loss(S_t) - loss(L) - loss(R),   loss(S) = W(S) * impurity(S),

where W(S) is the total sample weight and the impurity is

  gini            1 - sum_c p_c^2               (p_c the weighted share of class c)
  entropy         -sum_c p_c log p_c
  squared_error   sum_i w_i (y_i - ybar)^2 / W  (the weighted variance)

A leaf predicts the class shares p (classification) or the mean ybar (regression).
Gradient boosting reuses the same search with the second-order loss -G^2 / (2 (H + lambda)) of
summed gradients G and hessians H (see :mod:`m2m_jax.classic.gradient_boosting`).

How it runs under XLA, with static shapes throughout:

1. Binning, once, on the host (:func:`bin_features`): each feature's thresholds are the
   midpoints between its consecutive distinct values when there are at most ``max_bins`` of
   them (then the candidate splits are exactly those of an exact CART), else the
   1/max_bins ... (max_bins-1)/max_bins quantiles (scikit-learn's HistGradientBoosting rule).
   Sample i lands in bin b_ij = #{thresholds of j below x_ij}, so x_ij <= s_jb iff b_ij <= b.
2. Growth, level by level (:func:`grow`): at depth l the K_l node slots get one histogram each,
   hist[k, j, b] = sum of the statistics (class weights, or w, w y, w y^2, or g, h) of the
   samples of node k whose feature j falls in bin b, built by one ``segment_sum`` over all
   (sample, feature) pairs. Cumulative sums over b give every candidate's left statistics at
   once, the right ones are total - left, and the best (j, b) is an argmax. Splitting nodes
   send their samples to child slots 2 r and 2 r + 1 (r the split's rank on its level), so
   K_{l+1} = 2 min(K_l, n // (2 min_samples_leaf)) slots suffice: memory is bounded by the
   data, not by 2^depth.
3. The tree is a set of fixed-size arrays in level order (:class:`Tree`); prediction is
   ``max_depth`` rounds of one gather, x -> left[t] + [x_j > s] until a leaf, under jit.

A node splits when it is impure (not a single class; for regression a variance above float32
noise), a split leaves at least ``min_samples_leaf`` samples of positive weight on each side,
and its gain is at least ``min_impurity_decrease`` times the total training weight (the rule
of scikit-learn, whose exact trees also split impure nodes at zero gain: that is how a tree
gets past the first level of XOR). ``max_features`` draws a fresh feature subset at every node
(Breiman's random forest) among the features that can split it; ties go to the lowest feature
and threshold.
"""

import functools
import math
from typing import Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError, DataError, choose

TASKS = ("classification", "regression")
CRITERIA = {"classification": ("entropy", "gini"), "regression": ("squared_error",)}
_LEVEL_BYTES = 1 << 30  # the largest one-level histogram (and its cumulative sums) grown
_QUANTILE_SAMPLE = 200_000  # rows that quantile thresholds are computed from


# ----------------------------------------------------------------------------- binning


@flax.struct.dataclass
class Bins:
  """Per-feature split thresholds. edges: (d, B - 1) float32 ascending, padded with +inf;
  n_bins: (d,) int32 bins actually used by each feature (1 for a constant one); values:
  (d, B) float32 the one value in each bin of a feature binned exactly (at most ``max_bins``
  distinct values), NaN for a feature binned by quantiles."""

  edges: jax.Array
  n_bins: jax.Array
  values: jax.Array

  @property
  def max_bins(self) -> int:
    return self.edges.shape[1] + 1


def bin_features(X, max_bins: int = 256) -> Bins:
  """Thresholds of X (n, d) for at most ``max_bins`` (2..256) bins per feature (host NumPy)."""
  index = validation.as_integer(max_bins)
  if index is None or not 2 <= index <= 256:
    raise ConfigError(f"max_bins={max_bins!r} must be an integer in 2..256.")
  X = np.asarray(X, np.float32)
  if len(X) > _QUANTILE_SAMPLE:
    X = X[np.random.default_rng(0).choice(len(X), _QUANTILE_SAMPLE, replace=False)]
  columns = [_thresholds(X[:, j], index) for j in range(X.shape[1])]
  # Bins padded to a power of two: fits on similar data share one compiled program.
  width = max(min(1 << max(len(c) for c, _ in columns).bit_length(), index) - 1, 1)
  edges = np.full((X.shape[1], width), np.inf, np.float32)
  values = np.full((X.shape[1], width + 1), np.nan, np.float32)
  for j, (c, v) in enumerate(columns):
    edges[j, :len(c)] = c
    values[j, :len(v)] = v
  return Bins(jnp.asarray(edges), jnp.asarray([len(c) + 1 for c, _ in columns], jnp.int32),
              jnp.asarray(values))


def _thresholds(column: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray]:
  """(thresholds, the value in each bin, or nothing when binned by quantiles)."""
  distinct = np.unique(column)
  if len(distinct) <= max_bins:
    return np.asarray(midpoint(distinct[:-1], distinct[1:])), distinct
  quantiles = np.percentile(column, np.linspace(0, 100, max_bins + 1)[1:-1],
                            method="averaged_inverted_cdf")
  return np.unique(quantiles.astype(np.float32)), np.zeros(0, np.float32)


def midpoint(low, high):
  """(low + high) / 2 in float32, or low where that rounds up to high (scikit-learn's rule):
  x <= midpoint must hold for low and fail for high."""
  mid = low / 2 + high / 2
  return np.where(mid < high, mid, low) if isinstance(mid, np.ndarray) else \
      jnp.where(mid < high, mid, low)


def apply_bins(bins: Bins, X: jax.Array) -> jax.Array:
  """X (n, d) -> bin indices (n, d) uint8: b_ij = #{edges[j] < x_ij}."""
  search = jax.vmap(functools.partial(jnp.searchsorted, side="left"), in_axes=(0, 1), out_axes=1)
  return search(bins.edges, X).astype(jnp.uint8)


# ----------------------------------------------------------------------------- criteria


class Criterion(NamedTuple):
  """How node statistics (..., S) score; the last statistic is always the count of samples
  with positive weight (for ``min_samples_leaf``).

  loss: stats -> W * impurity (...); may_split: stats -> bool (...), whether a node with these
  totals may split at all; min_gain: stats -> (...), the gain a split must exceed beyond the
  configured minimum (float32 noise); leaf: stats (M, S) -> (M, V) the value a leaf predicts.
  """

  loss: Callable
  may_split: Callable
  min_gain: Callable
  leaf: Callable


def _gini(stats):
  w = stats[..., :-1]
  total = jnp.sum(w, -1)
  # sum_c w_c (W - w_c) / W: exactly 0 for a pure node, no cancellation of W - sum w_c^2 / W.
  return jnp.sum(w * (total[..., None] - w), -1) / jnp.where(total > 0, total, 1.0)


def _entropy(stats):
  w = stats[..., :-1]
  total = jnp.sum(w, -1, keepdims=True)
  return -jnp.sum(jax.scipy.special.xlogy(w, w / jnp.where(total > 0, total, 1.0)), -1)


def _class_shares(stats):
  w = stats[:, :-1]
  total = jnp.sum(w, 1, keepdims=True)
  return w / jnp.where(total > 0, total, 1.0)


def _squared_error(stats):
  w, wy, wy2 = stats[..., 0], stats[..., 1], stats[..., 2]
  return wy2 - wy**2 / jnp.where(w > 0, w, 1.0)


def _mean(stats):
  return (stats[:, 1] / jnp.where(stats[:, 0] > 0, stats[:, 0], 1.0))[:, None]


def _allow_zero_gain(stats):
  return jnp.full(stats.shape[:-1], -jnp.inf)


CLASSIFICATION = {
    "gini": Criterion(_gini, lambda s: _gini(s) > 0, _allow_zero_gain, _class_shares),
    "entropy": Criterion(_entropy, lambda s: _entropy(s) > 0, _allow_zero_gain, _class_shares),
}
SQUARED_ERROR = Criterion(
    _squared_error,
    lambda s: _squared_error(s) > 1e-6 * jnp.abs(s[..., 2]),  # variance above float32 noise
    _allow_zero_gain, _mean)


def newton(l2_regularization: float = 0.0) -> Criterion:
  """The second-order boosting criterion on statistics (g, h, count): loss -G^2 / (2 (H + l)),
  leaf -G / (H + l). A split must gain more than float32 noise (1e-5 of the parent's G^2/(H+l))."""

  def score(stats):
    h = stats[..., 1] + l2_regularization
    return stats[..., 0] ** 2 / jnp.where(h > 0, h, 1.0)

  def leaf(stats):
    h = stats[:, 1] + l2_regularization
    return (-stats[:, 0] / jnp.where(h > 0, h, 1.0))[:, None]

  return Criterion(lambda s: -0.5 * score(s), lambda s: s[..., -1] > 0,
                   lambda s: 1e-5 * score(s), leaf)


# ----------------------------------------------------------------------------- growth


@flax.struct.dataclass
class Tree:
  """A grown tree as level-ordered node arrays, M nodes.

  feature: (M,) int32 split feature, -1 at a leaf; bin: (M,) int32 last bin sent left;
  threshold: (M,) float32, x_j <= threshold goes left (+inf at a leaf); left: (M,) int32 left
  child (right = left + 1; 0 at a leaf); value: (M, V) float32 what the node predicts;
  gain: (M,) float32 loss decrease of its split (0 at a leaf); count: (M,) float32 samples
  of positive weight.
  depth (static): levels below the root, the rounds of a prediction.
  """

  feature: jax.Array
  bin: jax.Array
  threshold: jax.Array
  left: jax.Array
  value: jax.Array
  gain: jax.Array
  count: jax.Array
  depth: int = flax.struct.field(pytree_node=False, default=1)

  @property
  def is_leaf(self) -> jax.Array:
    return self.feature < 0


def level_sizes(n_samples: int, max_depth: int, min_samples_leaf: int) -> list[int]:
  """Node slots K_0..K_depth: K_0 = 1, K_{l+1} = 2 min(K_l, n // (2 min_samples_leaf))."""
  sizes = [1]
  for _ in range(max_depth):
    sizes.append(2 * min(sizes[-1], max(n_samples // (2 * min_samples_leaf), 1)))
  return sizes


def level_bytes(n_samples: int, n_features: int, n_bins: int, n_stats: int, max_depth: int,
                min_samples_leaf: int) -> int:
  """Bytes of the largest level's histogram and its cumulative sums (float32)."""
  widest = max(level_sizes(n_samples, max_depth, min_samples_leaf)[:-1])
  return 3 * 4 * widest * n_features * n_bins * n_stats


def check_growth(n_samples: int, n_features: int, n_bins: int, n_stats: int, max_depth: int,
                 min_samples_leaf: int, trees_at_once: int = 1) -> None:
  """Refuses a tree whose per-level histograms would not fit in memory, saying what to change."""
  size = trees_at_once * level_bytes(n_samples, n_features, n_bins, n_stats, max_depth,
                                     min_samples_leaf)
  if size > _LEVEL_BYTES:
    raise ConfigError(
        f"growing max_depth={max_depth} on {n_samples} samples x {n_features} features with "
        f"{n_bins} bins needs {size / 2**30:.1f} GiB of histograms per level (limit "
        f"{_LEVEL_BYTES / 2**30:.0f} GiB); lower max_depth or max_bins, or raise min_samples_leaf.")


def grow(Xb: jax.Array, stats: jax.Array, bins: Bins, criterion: Criterion, *, max_depth: int,
         min_samples_leaf: int = 1, min_gain=0.0, max_features: int | None = None,
         key: jax.Array | None = None) -> Tree:
  """Grows one tree. Pure and jittable; vmap it over ``stats`` and ``key`` for a forest.

  Xb: (n, d) bins from :func:`apply_bins`; stats: (n, S) per-sample statistics whose last
  column counts the sample (1 if its weight is positive, else 0; a zero row takes no part);
  min_gain: the least gain of a split; max_features: features drawn per node (None: all),
  drawn with ``key``. Returns a :class:`Tree` of sum(level_sizes(...)) nodes.
  """
  n, d = Xb.shape
  sizes = level_sizes(n, max_depth, min_samples_leaf)
  offsets = np.cumsum([0] + sizes)
  node = jnp.where(stats[:, -1] > 0, 0, -1)  # slot of each sample on the current level
  levels = []
  for level, slots in enumerate(sizes):
    active = node >= 0
    totals = jax.ops.segment_sum(stats, jnp.where(active, node, slots), slots + 1)[:slots]
    if level < max_depth:
      feature, bin_, threshold, gain = _best_splits(
          Xb, stats, node, slots, totals, bins, criterion, min_samples_leaf, max_features,
          None if key is None else jax.random.fold_in(key, level))
      split = (feature >= 0) & criterion.may_split(totals) & (gain >= min_gain)
    else:
      feature = bin_ = jnp.full((slots,), -1, jnp.int32)
      threshold, gain, split = jnp.zeros((slots,)), jnp.zeros((slots,)), jnp.zeros((slots,), bool)
    rank = jnp.cumsum(split) - 1
    feature = jnp.where(split, feature, -1)
    threshold = jnp.where(split, threshold, jnp.inf)
    levels.append(dict(feature=feature, bin=jnp.where(split, bin_, -1), threshold=threshold,
                       left=jnp.where(split, offsets[level + 1] + 2 * rank, 0),
                       gain=jnp.where(split, gain, 0.0), totals=totals))
    if level < max_depth:
      at = jnp.maximum(node, 0)
      right = Xb[jnp.arange(n), jnp.maximum(feature[at], 0)].astype(jnp.int32) > bin_[at]
      node = jnp.where(active & split[at], 2 * rank[at] + right, -1)
  cat = {k: jnp.concatenate([lv[k] for lv in levels]) for k in levels[0]}
  totals = cat.pop("totals")
  return Tree(**cat, value=criterion.leaf(totals), count=totals[:, -1], depth=max_depth)


def _best_splits(Xb, stats, node, slots, totals, bins, criterion, min_samples_leaf,
                 max_features, key):
  """The best (feature, last left bin, gain) of each of ``slots`` nodes; feature -1 if none."""
  n, d = Xb.shape
  n_bins, n_stats = bins.max_bins, stats.shape[1]
  cell = jnp.where(node[:, None] >= 0, (node[:, None] * d + jnp.arange(d)) * n_bins
                   + Xb.astype(jnp.int32), slots * d * n_bins)  # (n, d) histogram cell
  per_cell = jnp.broadcast_to(stats[:, None, :], (n, d, n_stats)).reshape(-1, n_stats)
  hist = jax.ops.segment_sum(per_cell, cell.reshape(-1), slots * d * n_bins + 1)[:-1]
  left = jnp.cumsum(hist.reshape(slots, d, n_bins, n_stats), 2)  # x_j <= edge b
  right = totals[:, None, None, :] - left
  gain = criterion.loss(totals)[:, None, None] - criterion.loss(left) - criterion.loss(right)
  valid = ((left[..., -1] >= min_samples_leaf) & (right[..., -1] >= min_samples_leaf)
           & (jnp.arange(n_bins) < bins.n_bins[:, None] - 1)
           & (gain > criterion.min_gain(totals)[:, None, None]))
  if max_features is not None and max_features < d:
    valid &= _feature_subset(key, valid.any(2), max_features)[:, :, None]
  gain = jnp.where(valid, gain, -jnp.inf).reshape(slots, d * n_bins)
  best = jnp.argmax(gain, 1)
  feature, bin_ = best // n_bins, best % n_bins
  found = valid.reshape(slots, -1).any(1)
  return (jnp.where(found, feature, -1).astype(jnp.int32), bin_.astype(jnp.int32),
          _threshold(bins, feature, bin_, left[jnp.arange(slots), feature, :, -1]),
          jnp.where(found, gain.max(1), 0.0))


def _threshold(bins, feature, bin_, counts):
  """The threshold of splits (K,) after ``bin_`` of ``feature``. For an exactly binned feature
  it is the midpoint between the node's last value on the left and its first on the right
  (scikit-learn's exact threshold; empty bins between them change nothing for the training
  samples), else the bin's edge. counts: (K, B) the nodes' cumulative counts along the feature."""
  rows = jnp.arange(feature.shape[0])
  after = (jnp.arange(counts.shape[1]) > bin_[:, None]) & (counts > counts[rows, bin_][:, None])
  first_right = jnp.argmax(after, 1)
  values = bins.values[feature]
  exact = midpoint(values[rows, bin_], values[rows, first_right])
  return jnp.where(jnp.isnan(exact), bins.edges[feature, jnp.minimum(bin_, bins.edges.shape[1] - 1)],
                   exact)


def _feature_subset(key, usable, max_features):
  """(K, d) mask of ``max_features`` features drawn uniformly per node among the usable ones
  (a feature with no valid split in a node does not use up a draw, as in scikit-learn)."""
  u = jnp.where(usable, jax.random.uniform(key, usable.shape), 2.0)
  kth = jnp.sort(u, 1)[:, max_features - 1:max_features]
  return usable & (u <= kth)


def apply(tree: Tree, X: jax.Array) -> jax.Array:
  """X (m, d) float32 -> (m,) int32 index of the leaf each row reaches."""
  rows = jnp.arange(X.shape[0])

  def down(_, t):
    go_right = X[rows, jnp.maximum(tree.feature[t], 0)] > tree.threshold[t]
    return jnp.where(tree.is_leaf[t], t, tree.left[t] + go_right)

  return jax.lax.fori_loop(0, tree.depth, down, jnp.zeros(X.shape[0], jnp.int32))


def apply_binned(tree: Tree, Xb: jax.Array) -> jax.Array:
  """Like :func:`apply` on bins (n, d) from :func:`apply_bins`: the same leaves for the same rows."""
  rows = jnp.arange(Xb.shape[0])

  def down(_, t):
    go_right = Xb[rows, jnp.maximum(tree.feature[t], 0)].astype(jnp.int32) > tree.bin[t]
    return jnp.where(tree.is_leaf[t], t, tree.left[t] + go_right)

  return jax.lax.fori_loop(0, tree.depth, down, jnp.zeros(Xb.shape[0], jnp.int32))


def importances(tree: Tree, n_features: int) -> jax.Array:
  """(d,) total split gain per feature, normalised to sum 1 (all 0 for a lone leaf)."""
  total = jax.ops.segment_sum(tree.gain, jnp.where(tree.is_leaf, n_features, tree.feature),
                              n_features + 1)[:n_features]
  return total / jnp.where(total.sum() > 0, total.sum(), 1.0)


# ----------------------------------------------------------------------------- hyperparameters


def check_depth(max_depth) -> int:
  """``max_depth`` as an int >= 1; None (grow until pure) is refused with the reason."""
  if max_depth is None:
    raise ConfigError("max_depth=None (grow until pure) is not supported: trees here are "
                      "fixed-size arrays; pass an integer such as 16.")
  depth = validation.as_integer(max_depth)
  if depth is None or depth < 1:
    raise ConfigError(f"max_depth={max_depth!r} must be an integer >= 1.")
  return depth


def check_min_samples_leaf(value, n_samples: int) -> int:
  return validation.check_at_most("min_samples_leaf", value, n_samples,
                                  "the number of training samples")


def resolve_max_features(max_features, n_features: int) -> int | None:
  """scikit-learn's ``max_features``: None (all), 'sqrt', 'log2', an int, or a fraction in
  (0, 1] of the features -> a count in 1..d, or None for all."""
  if max_features is None:
    return None
  if isinstance(max_features, str):
    choose("max_features", max_features, ("sqrt", "log2"))
    f = math.sqrt if max_features == "sqrt" else math.log2
    return max(1, int(f(n_features)))
  count = validation.as_integer(max_features)
  if count is not None and not isinstance(max_features, float):
    return validation.check_at_most("max_features", count, n_features, "the number of features")
  if isinstance(max_features, (float, np.floating)) and 0 < max_features <= 1:
    return max(1, int(max_features * n_features))
  raise ConfigError(f"max_features={max_features!r} must be None, 'sqrt', 'log2', an integer "
                    f"in 1..{n_features} or a fraction in (0, 1].")


def check_sample_weight(sample_weight, n_samples: int) -> jax.Array:
  """(n,) float32 non-negative finite weights, not all zero; None -> ones."""
  if sample_weight is None:
    return jnp.ones((n_samples,), jnp.float32)
  w = np.asarray(sample_weight, np.float64)
  if w.shape != (n_samples,):
    raise DataError(f"sample_weight must have shape ({n_samples},), one weight per sample, "
                    f"got {w.shape}.")
  if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
    raise DataError("sample_weight must be finite and non-negative with a positive total.")
  return jnp.asarray(w, jnp.float32)


def sample_stats(y: jax.Array, w: jax.Array, task: str, n_classes: int = 0) -> jax.Array:
  """Per-sample statistics (n, S) of the CART criteria: (w 1[y = c] for each class, count) or
  (w, w y, w y^2, count) with y centred on its weighted mean by the caller."""
  count = (w > 0).astype(jnp.float32)[:, None]
  if task == "classification":
    return jnp.concatenate([w[:, None] * jax.nn.one_hot(y, n_classes), count], 1)
  return jnp.concatenate([jnp.stack([w, w * y, w * y**2], 1), count], 1)


# ----------------------------------------------------------------------------- the estimator


@flax.struct.dataclass
class DecisionTree:
  """A fitted tree. tree: the :class:`Tree` (value (M, C) class shares or (M, 1) means);
  offset_: () the training mean added back to regression leaves; classes_ (static): the C
  labels behind the class indices, sorted (() for regression); n_features_in_: d (static)."""

  tree: Tree
  offset_: jax.Array
  classes_: tuple = flax.struct.field(pytree_node=False, default=())
  n_features_in_: int = flax.struct.field(pytree_node=False, default=1)
  task: str = flax.struct.field(pytree_node=False, default="classification")
  criterion: str = flax.struct.field(pytree_node=False, default="gini")


def check_task_criterion(task: str, criterion: str | None) -> str:
  choose("task", task, TASKS)
  criterion = criterion or CRITERIA[task][-1]
  choose(f"criterion for {task}", criterion, CRITERIA[task])
  return criterion


def encode_targets(y, task: str) -> tuple[tuple, np.ndarray]:
  """(classes, y): class labels of any kind (numbers, strings, bools) become indices 0..C-1
  and ``classes`` the sorted labels as a tuple; regression targets pass through with ()."""
  if task == "classification":
    y = np.asarray(y)
    if y.ndim == 1 and y.size:
      validation.check_labels(y)
      classes, y = validation.encode_labels(y)
      return tuple(classes.tolist()), y
  return (), y


def class_labels(classes: tuple, index: jax.Array) -> jax.Array | np.ndarray:
  """Labels of class indices (m,): a jax array for numeric labels (jittable), else NumPy."""
  labels = np.asarray(classes)
  if labels.dtype.kind in "biuf":
    return jnp.asarray(labels)[index]
  return labels[np.asarray(index)]


def fit(X, y, *, task: str = "classification", criterion: str | None = None,
        max_depth: int = 8, min_samples_leaf: int = 1, min_impurity_decrease: float = 0.0,
        max_features=None, max_bins: int = 256, sample_weight=None,
        key: jax.Array | None = None) -> DecisionTree:
  """Grows a CART tree on X (n, d) and y (n,).

  Classification labels may be of any kind (``classes_`` keeps them; ``criterion`` 'gini' or
  'entropy'); regression targets are real (``criterion`` 'squared_error'). ``max_features``
  as in scikit-learn, with ``key`` drawing the subsets (default key 0). See the module
  docstring for the rules.
  """
  X, y, w, bins, options = check(X, y, task=task, criterion=criterion, max_depth=max_depth,
                                 min_samples_leaf=min_samples_leaf,
                                 min_impurity_decrease=min_impurity_decrease,
                                 max_features=max_features, max_bins=max_bins,
                                 sample_weight=sample_weight)
  return solve(X, y, w, bins, jax.random.key(0) if key is None else key, **options)


def check(X, y, *, task: str = "classification", criterion: str | None = None,
          max_depth: int = 8, min_samples_leaf: int = 1, min_impurity_decrease: float = 0.0,
          max_features=None, max_bins: int = 256, sample_weight=None):
  """:func:`fit`'s checks: -> (X (n, d) float32, y (n,) class indices or targets, w (n,),
  :class:`Bins` of X, the static keyword arguments of :func:`solve`)."""
  criterion = check_task_criterion(task, criterion)
  depth = check_depth(max_depth)
  classes, y = encode_targets(y, task)
  X, y = validation.check_X_y(X, y, classification=task == "classification",
                              classes=classes or None)
  n, d = X.shape
  leaf = check_min_samples_leaf(min_samples_leaf, n)
  if not (np.isfinite(min_impurity_decrease) and min_impurity_decrease >= 0):
    raise ConfigError(f"min_impurity_decrease={min_impurity_decrease!r} must be >= 0.")
  w = check_sample_weight(sample_weight, n)
  bins = bin_features(X, max_bins)
  n_stats = (len(classes) if task == "classification" else 3) + 1
  check_growth(n, d, bins.max_bins, n_stats, depth, leaf)
  return X, y, w, bins, dict(
      task=task, criterion=criterion, max_depth=depth, min_samples_leaf=leaf,
      min_impurity_decrease=float(min_impurity_decrease),
      max_features=resolve_max_features(max_features, d), classes=classes)


@functools.partial(jax.jit, static_argnames=("task", "criterion", "max_depth",
                                             "min_samples_leaf", "min_impurity_decrease",
                                             "max_features", "classes"))
def solve(X, y, w, bins: Bins, key, *, task, criterion, max_depth, min_samples_leaf,
          min_impurity_decrease, max_features, classes) -> DecisionTree:
  """The pure, jitted growth behind :func:`fit`, on checked input (see :func:`check`):
  X (n, d), y (n,) class indices or targets, w (n,) sample weights."""
  offset = jnp.zeros(())
  if task == "regression":
    offset = jnp.sum(w * y) / jnp.sum(w)
    y = y - offset
  stats = sample_stats(y, w, task, len(classes))
  rule = CLASSIFICATION[criterion] if task == "classification" else SQUARED_ERROR
  tree = grow(apply_bins(bins, X), stats, bins, rule, max_depth=max_depth,
              min_samples_leaf=min_samples_leaf, min_gain=min_impurity_decrease * jnp.sum(w),
              max_features=max_features, key=key)
  return DecisionTree(tree, offset, classes, X.shape[1], task, criterion)


def _values(params: DecisionTree, X) -> jax.Array:
  X = validation.check_query(X, params.n_features_in_, "the decision tree")
  return _leaf_values(params.tree, X)


@jax.jit
def _leaf_values(tree: Tree, X: jax.Array) -> jax.Array:
  return tree.value[apply(tree, X)]


def predict_proba(params: DecisionTree, X) -> jax.Array:
  """X (m, d) -> (m, C) class shares of the leaf each row reaches, columns as ``classes_``."""
  if params.task != "classification":
    raise ConfigError("predict_proba needs task='classification'.")
  return _values(params, X)


def predict(params: DecisionTree, X) -> jax.Array:
  """X (m, d) -> (m,) labels from ``classes_`` (classification; jittable for numeric labels,
  NumPy for others) or float32 values (regression)."""
  values = _values(params, X)
  if params.task == "classification":
    return class_labels(params.classes_, jnp.argmax(values, 1))
  return values[:, 0] + params.offset_


def score(params: DecisionTree, X, y) -> jax.Array:
  """Accuracy (classification) or R^2 = 1 - SS_res / SS_tot (regression)."""
  return score_predictions(predict(params, X), y, params.task)


def score_predictions(prediction, y, task: str) -> jax.Array:
  """Accuracy or R^2 of predictions (m,) against targets y (m,)."""
  validation.check_targets(y, prediction.shape[0])
  if task == "classification":
    return jnp.mean(jnp.asarray(np.asarray(prediction) == np.asarray(y))
                    if isinstance(prediction, np.ndarray) else prediction == y)
  y = jnp.asarray(y)
  return 1 - jnp.sum((y - prediction) ** 2) / jnp.sum((y - jnp.mean(y)) ** 2)


def feature_importances(params: DecisionTree) -> jax.Array:
  """(d,) each feature's share of the tree's total impurity decrease (scikit-learn's
  ``feature_importances_``)."""
  return importances(params.tree, params.n_features_in_)
