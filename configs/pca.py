"""Principal component analysis through the shared loop: one step fits the whole training set.

Presets (test metric: the fraction of the held-out set's variance the components keep):
  default      digits (8x8 pixels, 64 features, 1,437 / 360), 10 components, full SVD.
  whiten       the same, whitened (unit variance along each component).
  randomized   mnist5k (784 features, 4,000 / 1,000), 50 components, randomized SVD.
  wine         wine (13 standardised features), 2 components.
  seed         the original notebook's PCA (the covariance eigenproblem) on tfds MNIST, 50
               components.

  python -m m2m_jax.main --config=configs/pca.py --workdir=runs/pca
"""

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "pca"
  c.dataset = "digits"
  # model: classic.pca.fit's hyperparameters (n_components an int)
  c.model.n_components = 10
  c.model.whiten = False
  c.model.svd_solver = "full"
  c.model.n_oversamples = 10
  c.model.iterated_power = 4
  # one step on the whole training set
  c.batch_size = 0
  c.num_steps = 1
  c.log_every = c.eval_every = c.checkpoint_every = 1
  return c


def whiten():
  c = default()
  c.model.whiten = True
  return c


def randomized():
  c = default()
  c.dataset = "mnist5k"
  c.model.n_components, c.model.svd_solver = 50, "randomized"
  return c


def wine():
  c = default()
  c.dataset = "wine"
  c.model.n_components = 2
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "mnist")
  c.model.n_components, c.model.svd_solver = 50, "covariance_eigh"
  return c


PRESETS = {"default": default, "whiten": whiten, "randomized": randomized, "wine": wine,
           "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
