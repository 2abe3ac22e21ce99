"""Gradient boosting through the shared loop: one boosting round per step.

Presets (held-out test split; scikit-learn's HistGradientBoosting with the same
hyperparameters in brackets, measured on 2 CPU cores, see README):
  default        two moons (2-D, noise 0.3, 750 / 250), 100 rounds of depth-3 trees.
  breast_cancer  breast cancer (455 / 114), 100 rounds.
  digits         digits (1,437 / 360), 100 rounds of 10 trees (one a class), softmax log-loss.
  regression     diabetes (353 / 89), 100 rounds, learning rate 0.05, test R^2.
  stochastic     the default with subsample 0.5 (Friedman's stochastic gradient boosting).
  seed           tfds MNIST (60k / 10k), 100 rounds of depth-3 trees on 32 bins a pixel.

  python -m m2m_jax.main --config=configs/gradient_boosting.py --workdir=runs/gradient_boosting
"""

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "gradient_boosting"
  c.dataset = "moons"
  # model: classic.gradient_boosting.fit's hyperparameters (the task follows the dataset)
  c.model.n_estimators = 100
  c.model.learning_rate = 0.1
  c.model.max_depth = 3
  c.model.min_samples_leaf = 20
  c.model.l2_regularization = 0.0
  c.model.subsample = 1.0
  c.model.max_bins = 256
  # one round a step on the whole training set
  c.batch_size = 0
  c.num_steps = c.model.get_ref("n_estimators")
  c.log_every = 10
  c.eval_every = c.checkpoint_every = 50
  return c


def breast_cancer():
  c = default()
  c.dataset = "breast_cancer"
  return c


def digits():
  c = default()
  c.dataset = "digits"
  return c


def regression():
  c = default()
  c.dataset = "diabetes"
  c.model.learning_rate = 0.05
  return c


def stochastic():
  c = default()
  c.model.subsample = 0.5
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "mnist")
  c.model.max_bins = 32
  c.eval_batch_size = 1000
  return c


PRESETS = {"default": default, "breast_cancer": breast_cancer, "digits": digits,
           "regression": regression, "stochastic": stochastic, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
