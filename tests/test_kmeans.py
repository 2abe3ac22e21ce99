"""k-means as a loop algorithm, checked against scikit-learn; the ARI against sklearn's."""

import functools
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from m2m_jax import configlib, data, train
from m2m_jax.algorithms import kmeans
from m2m_jax.ops.metrics import adjusted_rand_index


@pytest.mark.parametrize("seed", range(5))
def test_ari_equals_scikit_learn(seed):
  rng = np.random.default_rng(seed)
  a, b = rng.integers(0, 4, 200), rng.integers(0, 6, 200)
  b[:120] = a[:120]
  assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
  assert adjusted_rand_index(a, a + 7) == 1.0


def test_squared_distances_match_numpy():
  x, c = np.random.default_rng(0).normal(size=(50, 3)), np.random.default_rng(1).normal(size=(4, 3))
  expected = ((x[:, None] - c[None]) ** 2).sum(-1)
  np.testing.assert_allclose(kmeans.squared_distances(jnp.asarray(x), jnp.asarray(c)), expected, atol=1e-5)


def _lloyd(x: np.ndarray, k: int, seed: int, steps: int = 50) -> kmeans.State:
  config = configlib.load("kmeans")
  config.model.n_clusters = k
  state = kmeans.init(config, jax.random.key(seed), {"x": x})
  step = jax.jit(functools.partial(kmeans.train_step, config))
  for _ in range(steps):
    state, _ = step(state, {"x": jnp.asarray(x)}, None)
  return state


@pytest.mark.parametrize("name,k", [("blobs", 4), ("iris", 3), ("wine", 3)])
def test_lloyd_inertia_within_one_percent_of_scikit_learn(name, k):
  split = data.load(name).train
  x = split[np.arange(len(split))]["x"]
  ours = min(  # best of 5 k-means++ starts, like scikit-learn's n_init=5
      float(jnp.sum(jnp.min(kmeans.squared_distances(x, _lloyd(x, k, s).centroids), 1)))
      for s in range(5))
  reference = KMeans(n_clusters=k, n_init=5, random_state=0).fit(x).inertia_
  assert ours <= reference * 1.01


def test_minibatch_kmeans_through_the_loop_recovers_the_blobs(tmp_path):
  summary = train.train_and_evaluate(configlib.load("kmeans", "minibatch"), str(tmp_path))
  assert summary["test"]["ari"] >= 0.95
  blobs = data.load("blobs")
  train_x, test_x = (s[np.arange(len(s))]["x"] for s in (blobs.train, blobs.test))
  reference = KMeans(n_clusters=4, n_init=5, random_state=0).fit(train_x)
  assert summary["test"]["inertia"] <= 1.01 * -reference.score(test_x)
