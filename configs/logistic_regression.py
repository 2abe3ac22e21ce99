"""Logistic regression through the shared loop: one step fits the whole training set.

Presets (test accuracy and log-loss on a stratified held-out split):
  default   binary, breast cancer (569 tumours, 30 standardised features, 455 / 114), L-BFGS, C = 1.
  iris      multinomial (softmax), iris (120 / 30), L-BFGS, C = 1.
  digits    multinomial, digits (8x8 pixels as 64 features, 1,437 / 360), L-BFGS, C = 1.
  gd        the default fitted by full-batch gradient descent with step 1/L.
  seed      the original notebook's estimator as far as it goes (unpenalised, full-batch
            gradient descent, the correct gradient) made multinomial, on tfds MNIST (60k / 10k).

  python -m m2m_jax.main --config=configs/logistic_regression.py --workdir=runs/logreg
"""

from ml_collections import config_dict

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "logistic_regression"
  c.dataset = "breast_cancer"
  # model: classic.logistic_regression.fit's hyperparameters
  c.model.C = 1.0
  c.model.penalty = "l2"                                  # or None
  c.model.solver = "lbfgs"
  c.model.max_iter = 1000
  c.model.tol = 1e-4
  c.model.learning_rate = config_dict.placeholder(float)  # gd only; None: 1/L
  c.model.fit_intercept = True
  # one step on the whole training set
  c.batch_size = 0
  c.num_steps = 1
  c.log_every = c.eval_every = c.checkpoint_every = 1
  return c


def iris():
  c = default()
  c.dataset = "iris"
  return c


def digits():
  c = default()
  c.dataset = "digits"
  return c


def gd():
  c = default()
  c.model.solver, c.model.max_iter = "gd", 5000
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "mnist")
  c.model.penalty, c.model.solver, c.model.max_iter = None, "gd", 100
  return c


PRESETS = {"default": default, "iris": iris, "digits": digits, "gd": gd, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
