"""k-nearest neighbours for classification and regression, computed in bounded-memory blocks.

For a query x the model finds the k training points N_k(x) closest under the metric

  euclidean   d(a, b) = ||a - b||_2 = sqrt(sum_j (a_j - b_j)^2)
  manhattan   d(a, b) = sum_j |a_j - b_j|
  minkowski   d(a, b) = (sum_j |a_j - b_j|^p)^(1/p)   (p=1 manhattan, p=2 euclidean,
                                                       p=inf max_j |a_j - b_j|)
  cosine      d(a, b) = 1 - a.b / (||a|| ||b||)        (a zero vector has cosine 0: d = 1)

and weighs each neighbour i by w_i = 1 (``weights='uniform'``) or w_i = 1 / d(x, x_i)
(``weights='distance'``; when some neighbours lie at distance 0, those get weight 1 and the
others 0, scikit-learn's rule). Then

  classification   P(c | x) = sum_{i in N_k} w_i [y_i = c] / sum_{i in N_k} w_i,
                   predict(x) = argmax_c P(c | x)   (the smallest class wins a tie)
  regression       predict(x) = sum_{i in N_k} w_i y_i / sum_{i in N_k} w_i.

Neighbours are ordered by distance, then by training index: exact ties go to the earlier point
(for euclidean and cosine, whose ranking scores are rounded, this holds among the candidates
that stage 1 below keeps, and everywhere for integer-valued data under euclidean).
scikit-learn's brute force breaks exact ties by its heap layout, so a tie at the k-th
neighbour may pick another, equally near point there.

Search, in two stages per block of queries:
  1. rank: score every training point with a cheap monotone form of the distance (for
     euclidean and cosine one matrix product, ||b||^2 - 2 a.b, on rows centred on the training
     mean, unit rows for cosine; otherwise sum_j |a_j - b_j|^p itself), and keep the k + 16
     groups of 16 consecutive training points with the smallest minimum score;
  2. refine: compute the distances to those groups' members from the differences a - b (no
     cancellation in float32, unlike ||a||^2 - 2 a.b + ||b||^2) and sort by (distance, index).
The kept groups provably hold the k nearest points (ties to the earlier point included) when
the scores are exact; the 16 spare groups absorb the float32 blur of the matrix-product form.

Memory: queries go through ``lax.map`` in blocks of at most ``block_size`` rows; the training
set through ``lax.scan`` in chunks of up to 32 tiles of at most ``train_block_size`` rows
(rounded up to a multiple of 16), one top-k per chunk. Besides one or two copies of the
training set (centred / padded), a call holds one block_size x train_block_size tile of
scores, the chunk's block_size x 2 train_block_size group minima, and block_size x 16 x d
differences while refining: O(block_size x train_block_size), never n_test x n_train, let
alone the seed's n_test x n_train x d. (200k x 64 training rows, 10k queries, defaults:
106 MB of temporaries, 102 MB of them the two training-set copies.)
"""

import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError, DataError, choose

TASKS = ("classification", "regression")
WEIGHTS = ("uniform", "distance")
METRICS = ("cosine", "euclidean", "manhattan", "minkowski")
_RERANKED = ("euclidean", "cosine")
_GROUP = 16  # consecutive training points ranked together by their best score
_EXTRA_GROUPS = 16  # groups kept beyond k, against float32 blur of the ranking scores
_TILES_PER_MERGE = 32  # score tiles whose group minima one top-k merges


@flax.struct.dataclass
class KNN:
  """The stored training set.

  X_: (n, d) float32 training points; y_: (n,) int32 class indices (classification) or float32
  targets (regression); classes_: (C,) the labels behind the indices (None for regression).
  """

  X_: jnp.ndarray
  y_: jnp.ndarray
  classes_: jnp.ndarray | None
  n_neighbors: int = flax.struct.field(pytree_node=False, default=5)
  weights: str = flax.struct.field(pytree_node=False, default="uniform")
  metric: str = flax.struct.field(pytree_node=False, default="minkowski")
  p: float = flax.struct.field(pytree_node=False, default=2.0)
  task: str = flax.struct.field(pytree_node=False, default="classification")
  block_size: int = flax.struct.field(pytree_node=False, default=1024)
  train_block_size: int = flax.struct.field(pytree_node=False, default=1024)


def fit(X, y, *, n_neighbors: int = 5, weights: str = "uniform", metric: str = "minkowski",
        p: float = 2, task: str = "classification", block_size: int = 1024,
        train_block_size: int = 1024) -> KNN:
  """Stores X (n, d) and y (n,) after checking them; nothing is learned.

  Classification labels may be any numbers (bool, int or float); ``classes_`` keeps them
  sorted and ``predict`` returns them. ``block_size`` / ``train_block_size`` bound the
  query / training rows handled at once (see the module docstring).
  """
  choose("task", task, TASKS)
  choose("weights", weights, WEIGHTS)
  choose("metric", metric, METRICS)
  if not p > 0:
    raise ConfigError(f"p={p} must be > 0 (1 manhattan, 2 euclidean, inf chebyshev).")
  for name, size in (("block_size", block_size), ("train_block_size", train_block_size)):
    if validation.as_integer(size) is None or size < 1:
      raise ConfigError(f"{name}={size} must be a positive integer.")
  classes, y = _encode_labels(y) if task == "classification" else (None, y)
  X, y = validation.check_X_y(X, y, classification=task == "classification", classes=classes)
  n_neighbors = validation.check_at_most("n_neighbors", n_neighbors, X.shape[0],
                                         "the number of training samples")
  return KNN(X, y, classes, n_neighbors, weights, metric, float(p), task, int(block_size),
             int(train_block_size))


def kneighbors(params: KNN, X, n_neighbors: int | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """X (m, d) -> (distances (m, k) float32 ascending, indices (m, k) int32 into ``X_``).

  Concrete X holding NaN or inf is refused; under ``jax.jit`` (values unknown when traced) such
  a query row gets NaN distances, hence NaN probabilities and regression values.
  """
  k = params.n_neighbors if n_neighbors is None else n_neighbors
  k = validation.check_at_most("n_neighbors", k, params.X_.shape[0],
                               "the number of training samples")
  X = validation.check_query(X, params.X_.shape[1], "the k-NN model")
  kind = _kind(params.metric, params.p)
  p = params.p if kind == "minkowski" else None  # one compiled search per named metric
  distances, indices = _kneighbors(params.X_, X, k, kind, p, params.block_size,
                                   params.train_block_size)
  finite = jnp.all(jnp.isfinite(X), 1, keepdims=True)
  return jnp.where(finite, distances, jnp.nan), indices


def predict_proba(params: KNN, X) -> jnp.ndarray:
  """X (m, d) -> (m, C) class probabilities P(c | x), columns in the order of ``classes_``."""
  if params.task != "classification":
    raise ConfigError("predict_proba needs task='classification'.")
  distances, indices = kneighbors(params, X)
  votes = jax.nn.one_hot(params.y_[indices], params.classes_.shape[0])  # (m, k, C)
  totals = jnp.einsum("mk,mkc->mc", _weights(distances, params.weights), votes)
  normaliser = jnp.sum(totals, 1, keepdims=True)
  return totals / jnp.where(normaliser == 0, 1.0, normaliser)


def predict(params: KNN, X) -> jnp.ndarray:
  """X (m, d) -> (m,) labels from ``classes_`` (classification) or float32 values (regression).

  Under ``jax.jit`` a query row holding NaN or inf predicts NaN in regression; a class label
  has no NaN, so there its label means nothing: :func:`predict_proba` gives that row NaN.
  """
  if params.task == "classification":
    return params.classes_[jnp.argmax(predict_proba(params, X), 1)]
  distances, indices = kneighbors(params, X)
  w = _weights(distances, params.weights)
  return jnp.sum(w * params.y_[indices], 1) / jnp.sum(w, 1)


def score(params: KNN, X, y) -> jnp.ndarray:
  """Accuracy mean[predict(x) = y] (classification) or R^2 = 1 - SS_res / SS_tot (regression)."""
  prediction = predict(params, X)
  validation.check_targets(y, prediction.shape[0])
  y = jnp.asarray(y)
  if params.task == "classification":
    return jnp.mean(prediction == y)
  return 1 - jnp.sum((y - prediction) ** 2) / jnp.sum((y - jnp.mean(y)) ** 2)


def _encode_labels(y) -> tuple[jnp.ndarray | None, np.ndarray]:
  """Numeric labels -> (sorted classes (C,), indices (n,)); other y is left for check_X_y."""
  y = np.asarray(y)
  if y.ndim != 1 or y.size == 0:
    return None, y
  if y.dtype.kind not in "biuf":
    raise DataError(f"y must hold numeric labels, got dtype {y.dtype}; map them with "
                    "validation.encode_labels(y) and fit on the indices.")
  validation.check_labels(y)
  classes, indices = validation.encode_labels(y)
  return jnp.asarray(classes), indices


def _kind(metric: str, p: float) -> str:
  """The distance actually computed: minkowski with p in {1, 2, inf} becomes a named one."""
  if metric != "minkowski":
    return metric
  return {1.0: "manhattan", 2.0: "euclidean", math.inf: "chebyshev"}.get(p, "minkowski")


def _weights(distances: jnp.ndarray, weights: str) -> jnp.ndarray:
  """(m, k) -> (m, k): ones, or 1/d with rows holding a zero distance reduced to [d == 0]
  (NaN where the distance is NaN)."""
  if weights == "uniform":
    return jnp.where(jnp.isnan(distances), jnp.nan, 1.0)
  zero = distances == 0
  return jnp.where(jnp.any(zero, 1, keepdims=True), zero.astype(distances.dtype), 1 / distances)


def _even_blocks(n: int, max_size: int) -> tuple[int, int]:
  """(count, size) of the fewest blocks of at most max_size rows covering n rows."""
  count = -(-n // max_size)
  return count, -(-n // count)


def _embed(kind: str, train: jnp.ndarray, queries: jnp.ndarray):
  """Rows as the matrix-product ranking sees them: centred on the training mean (euclidean),
  or scaled to unit length (zero rows stay zero) and then centred (cosine, where
  1 - cos = ||a/|a| - b/|b|||^2 / 2).

  Centring shrinks the float32 cancellation in ||b||^2 - 2 a.b. Integer-valued data are
  centred on the rounded mean, so that their scores stay exact integers (below 2^24) and
  exactly tied distances stay tied.
  """
  if kind == "cosine":
    train, queries = _unit(train), _unit(queries)
  if kind in _RERANKED:
    mean = jnp.mean(train, 0)
    mean = jnp.where(jnp.all(train == jnp.round(train)), jnp.round(mean), mean)
    return train - mean, queries - mean
  return train, queries


def _unit(x: jnp.ndarray) -> jnp.ndarray:
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.where(norm == 0, 1.0, norm)


def _scores(kind: str, p: float | None, q: jnp.ndarray, chunk: jnp.ndarray,
            aux: jnp.ndarray) -> jnp.ndarray:
  """Ranking scores (bq, bt) of queries q (bq, d) against chunk (bt, d), increasing with distance.

  euclidean and cosine: ||b||^2 - 2 a.b (= ||a - b||^2 - ||a||^2 of the embedded rows), one
  matrix product; others: sum_j |a_j - b_j|^p (max_j for chebyshev). ``aux`` (bt,) adds
  ||b||^2 or 0, and inf for padding rows.
  """
  if kind in _RERANKED:
    return aux - 2 * jnp.matmul(q, chunk.T, precision=jax.lax.Precision.HIGHEST)
  return _power_sum(kind, p, q[:, None, :] - chunk[None, :, :]) + aux


def _power_sum(kind: str, p: float | None, delta: jnp.ndarray) -> jnp.ndarray:
  """sum_j |delta_j|^p over the last axis (max_j for chebyshev): the minkowski distance^p."""
  size = jnp.abs(delta)
  if kind == "manhattan":
    return jnp.sum(size, -1)
  if kind == "chebyshev":
    return jnp.max(size, -1)
  return jnp.sum(size ** (int(p) if p.is_integer() else p), -1)  # integer p: no exp/log


def _distances(kind: str, p: float | None, q: jnp.ndarray, candidates: jnp.ndarray) -> jnp.ndarray:
  """q (bq, d), candidates (bq, c, d) -> distances (bq, c) from the differences a - b.

  cosine: 1 - cos = ||a/|a| - b/|b|||^2 / 2 with a/|a| - b/|b| = (delta - (b/|b|)(|a| - |b|)) / |a|,
  delta = a - b (exact in float32 for close points) and |a| - |b| = delta.(a + b) / (|a| + |b|),
  so near-parallel rows lose no digits to 1 - cos ~ 0; the distance is 1 when a or b is zero.
  """
  q = jnp.broadcast_to(q[:, None], candidates.shape)
  delta = q - candidates
  if kind == "euclidean":
    return jnp.sqrt(jnp.sum(delta**2, -1))
  if kind != "cosine":
    distance = _power_sum(kind, p, delta)
    return distance ** (1 / p) if kind == "minkowski" else distance
  norm_q, norm_c = jnp.linalg.norm(q, axis=-1), jnp.linalg.norm(candidates, axis=-1)
  zero = (norm_q == 0) | (norm_c == 0)
  norm_gap = jnp.sum(delta * (q + candidates), -1) / jnp.where(zero, 1.0, norm_q + norm_c)
  gap = delta - _unit(candidates) * norm_gap[..., None]  # |a| (a/|a| - b/|b|)
  cosine = jnp.sum(gap**2, -1) / (2 * jnp.where(zero, 1.0, norm_q) ** 2)
  return jnp.where(zero, 1.0, cosine)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _kneighbors(train: jnp.ndarray, queries: jnp.ndarray, k: int, kind: str, p: float | None,
                block_size: int, train_block_size: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Blocked exact k-NN search: (n, d) training rows, (m, d) queries -> (m, k) distances, indices.

  Per query block: the k + 16 groups of _GROUP consecutive training points with the smallest
  minimum score (``_nearest_groups``), then exact distances to their members; ``lax.top_k`` is
  stable and the members are in index order, so the k smallest come in (distance, index) order.
  """
  n, m = train.shape[0], queries.shape[0]
  embedded_train, embedded_queries = _embed(kind, train, queries)
  tiles, aux, first_groups = _chunk_train(kind, embedded_train, train_block_size)
  width = min(tiles.shape[0] * tiles.shape[1] * tiles.shape[2] // _GROUP, k + _EXTRA_GROUPS)

  def search(block):  # (bq, d) embedded queries and (bq, d) raw ones -> (bq, k) each
    embedded, raw = block

    def refine(group):  # (bq,) one kept group per query -> (bq, _GROUP) distances, members
      members = group[:, None] * _GROUP + jnp.arange(_GROUP, dtype=jnp.int32)
      distances = _distances(kind, p, raw, train[jnp.minimum(members, n - 1)])
      return jnp.where(members < n, distances, jnp.inf), members  # padding / unset lie >= n

    groups = jnp.sort(_nearest_groups(kind, p, embedded, tiles, aux, first_groups, width), 1)
    distances, members = jax.lax.map(refine, groups.T)  # (width, bq, _GROUP)
    flat = lambda x: x.transpose(1, 0, 2).reshape(raw.shape[0], -1)
    negated, position = jax.lax.top_k(-flat(distances), k)
    return -negated, jnp.take_along_axis(flat(members), position, 1)

  count, size = _even_blocks(m, block_size)
  pad = lambda x: jnp.pad(x, ((0, count * size - m), (0, 0))).reshape(count, size, -1)
  distances, indices = jax.lax.map(search, (pad(embedded_queries), pad(queries)))
  return distances.reshape(-1, k)[:m], indices.reshape(-1, k)[:m]


def _chunk_train(kind: str, train: jnp.ndarray, train_block_size: int):
  """(n, d) -> tiles (c, t, bt, d), aux (c, t, bt), first group id of each chunk (c,).

  The padded training rows in c chunks of t <= _TILES_PER_MERGE tiles of bt rows, bt at most
  train_block_size rounded up to a multiple of _GROUP. aux holds ||b||^2 (euclidean, cosine)
  or 0, and inf on the padding rows.
  """
  n = train.shape[0]
  n_tiles, size = _even_blocks(n, train_block_size)
  count, per_chunk = _even_blocks(n_tiles, _TILES_PER_MERGE)
  size = -(-size // _GROUP) * _GROUP
  padding = count * per_chunk * size - n
  aux = jnp.sum(train**2, 1) if kind in _RERANKED else jnp.zeros((n,), train.dtype)
  aux = jnp.concatenate([aux, jnp.full((padding,), jnp.inf, train.dtype)])
  tiles = jnp.pad(train, ((0, padding), (0, 0))).reshape(count, per_chunk, size, -1)
  first = jnp.arange(count, dtype=jnp.int32) * (per_chunk * size // _GROUP)
  return tiles, aux.reshape(count, per_chunk, size), first


def _nearest_groups(kind: str, p: float | None, q: jnp.ndarray, tiles: jnp.ndarray,
                    aux: jnp.ndarray, first_groups: jnp.ndarray, width: int) -> jnp.ndarray:
  """Ids (bq, width) of the groups (training rows g*_GROUP .. g*_GROUP + _GROUP - 1) with the
  ``width`` smallest minimum scores per query, ties to the earlier group.

  For width >= k these groups hold the k nearest points, ties to the earlier point included:
  a group left out has ``width`` kept groups before it in (minimum, group) order, and their
  minima come before any of its points in (score, index) order. Scanning the chunks, the best
  groups so far sit before each new chunk's, in that order, and ``lax.top_k`` is stable, so
  equal minima resolve to the earlier group. One top-k per chunk over its n_chunk / _GROUP
  group minima replaces a top-k over every training point (top-k is slow per row on CPU),
  while the scores come one (bq, bt) tile at a time, small enough to stay in cache.
  """
  rows = q.shape[0]
  local = jnp.arange(tiles.shape[1] * tiles.shape[2] // _GROUP, dtype=jnp.int32)

  def group_minima(tile):  # (bt, d), (bt,) -> (bq, bt / _GROUP)
    return jnp.min(_scores(kind, p, q, *tile).reshape(rows, -1, _GROUP), 2)

  def merge(best, chunk):
    best_minima, best_groups = best
    points, extra, first = chunk
    minima = jax.lax.map(group_minima, (points, extra)).transpose(1, 0, 2).reshape(rows, -1)
    minima = jnp.concatenate([best_minima, minima], 1)
    groups = jnp.concatenate([best_groups, jnp.broadcast_to(first + local, (rows, local.size))], 1)
    negated, position = jax.lax.top_k(-minima, width)
    return (-negated, jnp.take_along_axis(groups, position, 1)), None

  unset = first_groups.shape[0] * local.size  # an id past the last group: its members are masked
  start = (jnp.full((rows, width), jnp.inf, q.dtype), jnp.full((rows, width), unset, jnp.int32))
  return jax.lax.scan(merge, start, (tiles, aux, first_groups))[0][1]
