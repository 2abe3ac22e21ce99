"""A CART decision tree through the shared loop: one step grows the tree on the training set.

Presets (held-out test split; scikit-learn's DecisionTreeClassifier / Regressor with the same
hyperparameters in brackets, measured on 2 CPU cores, see README):
  default        two moons (2-D, noise 0.3, 750 / 250), depth 6: decision regions to look at.
  iris           iris (120 / 30), depth 4.
  breast_cancer  breast cancer (455 / 114), depth 5, entropy.
  digits         digits (64 pixel features, 1,437 / 360), depth 10.
  regression     diabetes (353 / 89), depth 4, at least 5 samples a leaf: test R^2.
  seed           tfds MNIST (60k / 10k), depth 10 on 32 bins a pixel (the original notebook's
                 trees came from scikit-learn; its ensembles are configs/random_forest.py and
                 configs/adaboost.py).

  python -m m2m_jax.main --config=configs/decision_tree.py --workdir=runs/decision_tree
"""

from ml_collections import config_dict

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "decision_tree"
  c.dataset = "moons"
  # model: classic.decision_tree.fit's hyperparameters (the task follows the dataset)
  c.model.criterion = "gini"
  c.model.max_depth = 6
  c.model.min_samples_leaf = 1
  c.model.min_impurity_decrease = 0.0
  c.model.max_features = config_dict.placeholder(object)  # None (all), 'sqrt', 'log2', int, fraction
  c.model.max_bins = 256
  # one step on the whole training set
  c.batch_size = 0
  c.num_steps = 1
  c.log_every = c.eval_every = c.checkpoint_every = 1
  return c


def iris():
  c = default()
  c.dataset = "iris"
  c.model.max_depth = 4
  return c


def breast_cancer():
  c = default()
  c.dataset = "breast_cancer"
  c.model.criterion, c.model.max_depth = "entropy", 5
  return c


def digits():
  c = default()
  c.dataset = "digits"
  c.model.max_depth = 10
  return c


def regression():
  c = default()
  c.dataset = "diabetes"
  c.model.criterion, c.model.max_depth, c.model.min_samples_leaf = "squared_error", 4, 5
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "mnist")
  c.model.max_depth, c.model.max_bins = 10, 32
  c.eval_batch_size = 1000
  return c


PRESETS = {"default": default, "iris": iris, "breast_cancer": breast_cancer, "digits": digits,
           "regression": regression, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
