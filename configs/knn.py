"""k-nearest neighbours through the shared loop: one step stores the training set.

Presets (held-out test split):
  default     classification of digits (8x8 pixels as 64 features, 1,437 / 360), k = 5, euclidean.
  distance    the same with distance weighting and the manhattan metric.
  iris        iris (120 / 30), k = 5.
  regression  k-NN regression of diabetes (353 / 89), k = 10, distance weighting: test R^2.
  mnist5k     5,000 MNIST digits (4,000 / 1,000), k = 3.
  seed        the original notebook's KNN (k = 3, euclidean, majority vote) on tfds MNIST (60k / 10k).

  python -m m2m_jax.main --config=configs/knn.py --workdir=runs/knn
"""

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "knn"
  c.dataset = "digits"
  # model: classic.knn.fit's hyperparameters (the task follows the dataset)
  c.model.n_neighbors = 5
  c.model.weights = "uniform"
  c.model.metric = "euclidean"
  c.model.p = 2.0
  c.model.block_size = 1024
  c.model.train_block_size = 1024
  # one step on the whole training set
  c.batch_size = 0
  c.num_steps = 1
  c.log_every = c.eval_every = c.checkpoint_every = 1
  return c


def distance():
  c = default()
  c.model.weights, c.model.metric = "distance", "manhattan"
  return c


def iris():
  c = default()
  c.dataset = "iris"
  return c


def regression():
  c = default()
  c.dataset = "diabetes"
  c.model.n_neighbors, c.model.weights = 10, "distance"
  return c


def mnist5k():
  c = default()
  c.dataset = "mnist5k"
  c.model.n_neighbors = 3
  return c


def seed():
  c = mnist5k()
  configlib.use_tfds(c, "mnist")
  c.eval_batch_size = 1000
  return c


PRESETS = {"default": default, "distance": distance, "iris": iris, "regression": regression,
           "mnist5k": mnist5k, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
