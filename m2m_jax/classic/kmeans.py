"""k-means clustering (Lloyd's algorithm with k-means++ seeding and restarts) as pure functions.

For n points x_i (d features) and k centres c_j, k-means minimises the inertia

  J(c) = sum_i min_j ||x_i - c_j||^2.

Lloyd's algorithm alternates the two blocks of coordinate descent on J:
  E-step  l_i = argmin_j ||x_i - c_j||^2 (labels);
  M-step  c_j = mean {x_i : l_i = j}.
An empty cluster (no l_i = j) takes the point farthest from its own centre, which leaves its old
cluster (scikit-learn's rule; the seed's centre became NaN instead). Iterations stop when the
labels no longer change, or when the centres moved by sum_j ||c_j' - c_j||^2 <= tol * mean_f
Var(X[:, f]) (scikit-learn's tolerance), or after ``max_iter`` M-steps.

Centres start from greedy k-means++ (Arthur and Vassilvitskii; scikit-learn's variant): the first
is a uniformly drawn point, each next one the best of 2 + floor(log k) candidates drawn with
probability D(x)^2 / sum D^2 (D the distance to the nearest centre so far), best meaning the
lowest resulting potential sum_i D(x_i)^2. ``n_init`` restarts from split keys run and the one
with the lowest inertia is kept: on a CPU one after another (``lax.map``), each stopping when it
converges; on GPU and TPU side by side (``jax.vmap``), one batched program in which every
restart iterates until the slowest converges. Computation runs on X minus its
column means (as scikit-learn does), which keeps the float32 distance expansion
||x||^2 - 2 x.c + ||c||^2 accurate.
"""

import math
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError, DataError, choose

_HIGHEST = jax.lax.Precision.HIGHEST  # full float32 matmuls (no TF32/bf16 passes on GPU/TPU)


@struct.dataclass
class KMeansParams:
  """A fitted model. cluster_centers_: (k, d); labels_: (n,) int32 cluster of each training
  point; inertia_: () J at the centres; n_iter_: () M-steps of the kept restart."""
  cluster_centers_: jax.Array
  labels_: jax.Array
  inertia_: jax.Array
  n_iter_: jax.Array


def squared_distances(x: jax.Array, c: jax.Array) -> jax.Array:
  """||x_i - c_j||^2 = ||x_i||^2 - 2 x_i.c_j + ||c_j||^2, clipped at 0: x (n, d), c (k, d) -> (n, k)."""
  cross = jnp.matmul(x, c.T, precision=_HIGHEST)
  return jnp.maximum(jnp.sum(x**2, 1)[:, None] - 2 * cross + jnp.sum(c**2, 1)[None, :], 0.0)


def kmeans_plus_plus(key: jax.Array, x: jax.Array, k: int, n_local_trials: int = 1) -> jax.Array:
  """k-means++ seeding: x (n, d) -> centres (k, d).

  The first centre is uniform over the points; each next one is the best (lowest potential
  sum_i min(D_i^2, ||x_i - c||^2)) of ``n_local_trials`` candidates c drawn with probability
  D_i^2 / sum D^2. One trial is Arthur and Vassilvitskii's original; scikit-learn uses
  2 + floor(log k). If every D_i is 0 (fewer distinct points than k) draws are uniform.
  """
  n = x.shape[0]
  keys = jax.random.split(key, k)
  first = x[jax.random.randint(keys[0], (), 0, n)]

  def pick(d2, key):
    total = jnp.sum(d2)
    p = jnp.where(total > 0, d2 / total, 1.0 / n)
    candidates = x[jax.random.choice(key, n, (n_local_trials,), p=p)]  # (T, d)
    new_d2 = jnp.minimum(d2[:, None], squared_distances(x, candidates))  # (n, T)
    best = jnp.argmin(jnp.sum(new_d2, 0))
    return new_d2[:, best], candidates[best]

  _, rest = jax.lax.scan(pick, jnp.sum((x - first) ** 2, 1), keys[1:])
  return jnp.concatenate([first[None], rest])


def _assign(x: jax.Array, centers: jax.Array) -> tuple[jax.Array, jax.Array]:
  """E-step: labels (n,) and squared distance (n,) of each point to its nearest centre."""
  d2 = squared_distances(x, centers)
  return jnp.argmin(d2, 1).astype(jnp.int32), jnp.min(d2, 1)


def _update(x: jax.Array, centers: jax.Array, labels: jax.Array, d2: jax.Array) -> jax.Array:
  """M-step with re-seeding: centres (k, d) from labels (n,) and distances d2 (n,).

  The r-th empty cluster (in index order) takes the r-th farthest point from its centre; that
  point's sum and count leave its old cluster. A cluster left with no point keeps its centre.
  """
  k = centers.shape[0]
  onehot = jax.nn.one_hot(labels, k, dtype=x.dtype)  # (n, k)
  counts, sums = onehot.sum(0), jnp.matmul(onehot.T, x, precision=_HIGHEST)  # (k,), (k, d)
  empty = counts == 0
  far = jax.lax.top_k(d2, k)[1]  # the k points farthest from their centres, farthest first
  moved = far[jnp.cumsum(empty) - 1]  # (k,): for empty j, the point it takes; else unused
  w = empty.astype(x.dtype)
  sums = sums.at[labels[moved]].add(-w[:, None] * x[moved])
  counts = counts.at[labels[moved]].add(-w)
  sums = jnp.where(empty[:, None], x[moved], sums)
  counts = jnp.where(empty, 1.0, counts)
  return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centers)


def lloyd(x: jax.Array, centers: jax.Array, max_iter: jax.Array, tol: jax.Array) -> KMeansParams:
  """Lloyd iterations from centres (k, d) on x (n, d) inside ``lax.while_loop``.

  Stops when the labels repeat, when sum_j ||c_j' - c_j||^2 <= tol (absolute), or after
  ``max_iter`` M-steps; labels_ and inertia_ are then those of the final centres, inertia_ from
  the distance expansion (see :func:`inertia` for the exact sum). Jittable and vmappable (e.g.
  over a batch of starting centres).
  """
  def step(carry):
    centers, labels_old, _, it = carry
    labels, d2 = _assign(x, centers)
    new = _update(x, centers, labels, d2)
    done = jnp.all(labels == labels_old) | (jnp.sum((new - centers) ** 2) <= tol)
    return new, labels, done, it + 1

  def going(carry):
    return ~carry[2] & (carry[3] < max_iter)

  start = (centers, jnp.full(x.shape[0], -1, jnp.int32), jnp.bool_(False), jnp.int32(0))
  centers, _, _, n_iter = jax.lax.while_loop(going, step, start)
  labels, d2 = _assign(x, centers)
  return KMeansParams(centers, labels, jnp.sum(d2), n_iter)


def inertia(x: jax.Array, centers: jax.Array, labels: jax.Array) -> jax.Array:
  """J = sum_i ||x_i - c_{l_i}||^2 from direct differences (no cancellation): x (n, d) -> ()."""
  return jnp.sum((x - centers[labels]) ** 2)


def _fit(x: jax.Array, key: jax.Array, init: jax.Array, max_iter: jax.Array, tol: jax.Array, *,
         n_clusters: int, n_init: int, init_kind: str) -> KMeansParams:
  """The jittable core on validated x (n, d): restarts mapped (CPU) or vmapped, lowest inertia
  kept.

  init_kind: "k-means++", "random" (k distinct points) or "array" (``init`` (k, d), one run).
  tol is relative: scaled here by the mean feature variance.
  """
  mean = jnp.mean(x, 0)
  x = x - mean
  tol = tol * jnp.mean(jnp.var(x, 0))
  if init_kind == "array":
    starts = (init - mean)[None]
  else:
    keys = jax.random.split(key, n_init)
    if init_kind == "k-means++":
      trials = 2 + int(math.log(n_clusters))
      starts = jax.vmap(lambda k: kmeans_plus_plus(k, x, n_clusters, trials))(keys)
    else:
      starts = jax.vmap(lambda k: x[jax.random.choice(k, x.shape[0], (n_clusters,), False)])(keys)
  restart = lambda start: lloyd(x, start, max_iter, tol)  # noqa: E731
  if jax.default_backend() == "cpu":
    runs = jax.lax.map(restart, starts)
  else:
    runs = jax.vmap(restart)(starts)
  best = jax.tree.map(lambda leaf: leaf[jnp.argmin(runs.inertia_)], runs)
  return best.replace(cluster_centers_=best.cluster_centers_ + mean,
                      inertia_=inertia(x, best.cluster_centers_, best.labels_))


_fit_jit = jax.jit(_fit, static_argnames=("n_clusters", "n_init", "init_kind"))


def _check_hyper(n_clusters: int, n_init: int, max_iter: int, tol: float, n_samples: int) -> None:
  for name, value in (("n_init", n_init), ("max_iter", max_iter)):
    if validation.as_integer(value) is None or value < 1:
      raise ConfigError(f"{name}={value} must be a positive integer.")
  if not tol >= 0:
    raise ConfigError(f"tol={tol} must be >= 0.")
  validation.check_at_most("n_clusters", n_clusters, n_samples,
                           "at most the number of samples in X")


def _check_init(init, n_clusters: int, n_features: int) -> tuple[str, jax.Array]:
  """init as (kind, centres array); kind 'array' for given centres (n_clusters, n_features)."""
  if isinstance(init, str):
    choose("init", init, ["k-means++", "random"])
    return init, jnp.zeros((n_clusters, n_features), jnp.float32)
  centers = validation.check_X(init, "init")
  if centers.shape != (n_clusters, n_features):
    raise DataError(f"init has shape {centers.shape}; the centres must be "
                    f"(n_clusters, n_features) = {(n_clusters, n_features)}.")
  return "array", centers


def fit(X, y=None, *, n_clusters: int = 8, init: Union[str, np.ndarray] = "k-means++",
        n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
        key: Optional[jax.Array] = None) -> KMeansParams:
  """Minimises the inertia J (module docstring) over k = n_clusters centres for X (n, d).

  init: "k-means++" (greedy), "random" (k distinct points, the seed's start) or an array of
  centres (n_clusters, d), which runs once whatever n_init is (as in scikit-learn); n_init:
  restarts (one after another on a CPU, vmapped on GPU and TPU), the lowest inertia kept;
  max_iter: most M-steps per restart; tol: stop when the centres move by
  sum_j ||c_j' - c_j||^2 <= tol * mean feature variance; key: PRNG key (default
  ``jax.random.key(0)``); y: ignored. Refuses n_clusters > n.
  """
  del y  # unsupervised; accepted for scikit-learn's fit(X, y=None) signature
  X = validation.check_X(X)
  _check_hyper(n_clusters, n_init, max_iter, tol, X.shape[0])
  init_kind, centers = _check_init(init, int(n_clusters), X.shape[1])
  key = jax.random.key(0) if key is None else key
  return _fit_jit(X, key, centers, jnp.int32(max_iter), jnp.float32(tol),
                  n_clusters=int(n_clusters), n_init=1 if init_kind == "array" else int(n_init),
                  init_kind=init_kind)


def fit_predict(X, y=None, **hyper) -> jax.Array:
  """fit(X, **hyper).labels_: (n,) the cluster of each row of X."""
  return fit(X, y, **hyper).labels_


def _check_features(params: KMeansParams, X) -> jax.Array:
  """X as float32 (n, d) with the fitted d (:func:`validation.check_query`)."""
  return validation.check_query(X, params.cluster_centers_.shape[-1], "the k-means model")


def transform(params: KMeansParams, X: jax.Array) -> jax.Array:
  """Euclidean distances ||x_i - c_j||: X (n, d) -> (n, k)."""
  return jnp.sqrt(squared_distances(_check_features(params, X), params.cluster_centers_))


def predict(params: KMeansParams, X: jax.Array) -> jax.Array:
  """argmin_j ||x_i - c_j||^2: X (n, d) -> (n,) int32 cluster indices."""
  return _assign(_check_features(params, X), params.cluster_centers_)[0]


def score(params: KMeansParams, X: jax.Array) -> jax.Array:
  """-J on X: minus the sum of squared distances of each row to its nearest centre."""
  X = _check_features(params, X)
  return -inertia(X, params.cluster_centers_, _assign(X, params.cluster_centers_)[0])
