"""k-means through the shared loop: one centroid update per step (no gradients, no optimizer).

Presets (held-out test split; ARI against the true labels):
  default    Lloyd iterations on 4 Gaussian blobs (1,200 train points = one batch).
  minibatch  mini-batch k-means on the same blobs, 100 points a step.
  iris       Lloyd iterations on iris (standardised), 3 clusters.
  seed       the original notebook's Kmeans (k = 10, 100 Lloyd iterations over all the data),
             k-means++ seeded, on tfds MNIST's 60,000 training digits.

  python -m m2m_jax.main --config=configs/kmeans.py --workdir=runs/kmeans
"""

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "kmeans"
  c.dataset = "blobs"
  c.model.n_clusters = 4
  c.model.variant = "lloyd"
  c.batch_size = 1200
  c.num_steps = 20
  c.log_every = 1
  c.eval_every = 5
  c.checkpoint_every = 10
  return c


def minibatch():
  c = default()
  c.model.variant = "minibatch"
  c.batch_size = 100
  c.num_steps = 200
  c.log_every = 10
  c.eval_every = 50
  c.checkpoint_every = 100
  return c


def iris():
  c = default()
  c.dataset = "iris"
  c.model.n_clusters = 3
  c.batch_size = 120
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "mnist")
  c.model.n_clusters = 10
  c.batch_size = 0  # the whole training set every step
  c.num_steps = 100
  c.eval_every, c.checkpoint_every = 25, 25
  return c


PRESETS = {"default": default, "minibatch": minibatch, "iris": iris, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
