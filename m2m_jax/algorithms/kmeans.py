"""k-means clustering in the shared loop: one centroid update per step.

Objective: J(c) = 1/N sum_i min_k ||x_i - c_k||^2. Each step assigns the batch to its nearest
centroids and moves them:
  ``variant='lloyd'``      c_k <- mean of the batch points assigned to k. With the whole
                          training set as the batch (``batch_size = N``) a step is one Lloyd
                          iteration, i.e. one block of coordinate descent on J.
  ``variant='minibatch'``  Sculley's mini-batch k-means: with n_k the points seen so far by
                          centroid k and m_k, s_k the count and sum of this batch's,
                          n_k <- n_k + m_k,  c_k <- c_k + (s_k - m_k c_k) / n_k.
A centroid that receives no point keeps its place. Centroids start from k-means++ on the first
batch. (The full estimator with restarts and re-seeding lives in ``m2m_jax.classic.kmeans``.)
"""

import os

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.classic.kmeans import kmeans_plus_plus, squared_distances
from m2m_jax.errors import ConfigError, choose
from m2m_jax.ops.metrics import adjusted_rand_index


@flax.struct.dataclass
class State:
  """centroids: (K, D); counts: (K,) points seen by each centroid (mini-batch update)."""

  centroids: jnp.ndarray
  counts: jnp.ndarray


def validate(config: ml_collections.ConfigDict) -> None:
  choose("k-means variant", config.model.get("variant", "lloyd"), ("lloyd", "minibatch"))
  if config.model.get("n_clusters", 0) < 1:
    raise ConfigError("k-means needs config.model.n_clusters >= 1.")


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> State:
  """k-means++ centres from the first training batch {'x': (B, D)}."""
  x = jnp.asarray(batch["x"]).reshape(len(batch["x"]), -1)
  k = config.model.n_clusters
  if k > x.shape[0]:
    raise ConfigError(f"n_clusters {k} exceeds the {x.shape[0]} points of a batch.")
  return State(kmeans_plus_plus(rng, x, k), jnp.zeros((k,), jnp.float32))


def train_step(config: ml_collections.ConfigDict, state: State,
               batch: dict, rng: jax.Array) -> tuple[State, dict]:
  """One assignment + update on batch {'x': (B, D)}, Lloyd's or the mini-batch one
  (``config.model.variant``); metric ``loss`` = mean squared distance."""
  del rng
  x = batch["x"].reshape(batch["x"].shape[0], -1)
  d2 = squared_distances(x, state.centroids)
  onehot = jax.nn.one_hot(jnp.argmin(d2, 1), state.centroids.shape[0])  # (B, K)
  m, s = onehot.sum(0), onehot.T @ x  # (K,), (K, D)
  if config.model.get("variant", "lloyd") == "lloyd":
    centroids = jnp.where(m[:, None] > 0, s / jnp.maximum(m, 1)[:, None], state.centroids)
    counts = m
  else:
    counts = state.counts + m
    centroids = state.centroids + (s - m[:, None] * state.centroids) / jnp.maximum(counts, 1)[:, None]
  return state.replace(centroids=centroids, counts=counts), {"loss": jnp.mean(jnp.min(d2, 1))}


def eval_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> dict:
  """Per example: squared distance to the nearest centroid, its index, and the true label."""
  x = batch["x"].reshape(batch["x"].shape[0], -1)
  d2 = squared_distances(x, state.centroids)
  return {"sq_dist": jnp.min(d2, 1), "cluster": jnp.argmin(d2, 1), "label": batch["y"]}


def summarize(config: ml_collections.ConfigDict, outputs: dict) -> dict:
  """``inertia`` (sum of squared distances), its mean per point, and the ARI against labels."""
  return {"inertia": float(outputs["sq_dist"].sum()),
          "loss": float(outputs["sq_dist"].mean()),
          "ari": adjusted_rand_index(outputs["label"], outputs["cluster"])}


def figures(config: ml_collections.ConfigDict, state: State,
            outputs: dict, dataset, outdir: str) -> None:
  """Test points coloured by cluster, with the centroids (first two features)."""
  x = dataset.test[np.arange(len(dataset.test))]["x"].reshape(len(dataset.test), -1)
  c = np.asarray(state.centroids)
  fig, ax = report.figure(figsize=(5, 4.5))
  ax.scatter(x[:, 0], x[:, 1], c=outputs["cluster"], s=8, cmap="tab10")
  ax.scatter(c[:, 0], c[:, 1], marker="x", s=120, c="black", label="centroids")
  ax.set_title(f"k-means on {dataset.name}: ARI {adjusted_rand_index(outputs['label'], outputs['cluster']):.3f}")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(outdir, "clusters.png"), dpi=110)
