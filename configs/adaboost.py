"""AdaBoost (SAMME) through the shared loop: one boosting round per step.

Presets (held-out test split; scikit-learn's AdaBoostClassifier with the same base trees in
brackets, measured on 2 CPU cores, see README):
  default        two moons (2-D, noise 0.3, 750 / 250), 200 stumps, learning rate 0.5.
  breast_cancer  breast cancer (455 / 114), 100 stumps.
  digits         digits (1,437 / 360), 200 rounds of depth-3 trees, learning rate 0.5.
  seed           the original notebook's AdaBoost(n_estimators=100), with the bugs fixed
                 (stumps, labels mapped, a stop at chance), on tfds MNIST (60k / 10k), 32 bins
                 a pixel.

  python -m m2m_jax.main --config=configs/adaboost.py --workdir=runs/adaboost
"""

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "adaboost"
  c.dataset = "moons"
  # model: classic.adaboost.fit's hyperparameters
  c.model.n_estimators = 200
  c.model.learning_rate = 0.5
  c.model.max_depth = 1
  c.model.criterion = "gini"
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
  c.model.n_estimators, c.model.learning_rate = 100, 1.0
  return c


def digits():
  c = default()
  c.dataset = "digits"
  c.model.max_depth = 3
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "mnist")
  c.model.n_estimators, c.model.learning_rate, c.model.max_bins = 100, 1.0, 32
  c.eval_batch_size = 1000
  return c


PRESETS = {"default": default, "breast_cancer": breast_cancer, "digits": digits, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
