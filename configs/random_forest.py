"""A random forest through the shared loop: one tree per step.

Presets (held-out test split; scikit-learn's RandomForestClassifier / Regressor with the same
hyperparameters in brackets, measured on 2 CPU cores, see README):
  default        two moons (2-D, noise 0.3, 750 / 250), 100 trees of depth 8.
  breast_cancer  breast cancer (455 / 114), 100 trees, sqrt(30) = 5 features a split.
  digits         digits (1,437 / 360), 100 trees of depth 12.
  regression     diabetes (353 / 89), 100 trees of depth 8, all features, 5 samples a leaf.
  seed           the original notebook's RandomForest(n_ensembles=100) with per-split features
                 (Breiman's; the original drew one subset per tree), on tfds MNIST (60k / 10k),
                 depth 10 on 32 bins a pixel.

  python -m m2m_jax.main --config=configs/random_forest.py --workdir=runs/random_forest
"""

from ml_collections import config_dict

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "random_forest"
  c.dataset = "moons"
  # model: classic.random_forest.fit's hyperparameters (the task follows the dataset)
  c.model.n_estimators = 100
  c.model.criterion = config_dict.placeholder(str)  # None: gini / squared_error
  c.model.max_depth = 8
  c.model.min_samples_leaf = 1
  c.model.max_features = config_dict.placeholder(object)  # None: 'sqrt' / all (scikit-learn's)
  c.model.bootstrap = True
  c.model.max_bins = 256
  # one tree a step on the whole training set
  c.batch_size = 0
  c.num_steps = c.model.get_ref("n_estimators")
  c.log_every = 10
  c.eval_every = c.checkpoint_every = 50
  return c


def breast_cancer():
  c = default()
  c.dataset = "breast_cancer"
  c.model.max_depth = 10
  return c


def digits():
  c = default()
  c.dataset = "digits"
  c.model.max_depth = 12
  return c


def regression():
  c = default()
  c.dataset = "diabetes"
  c.model.min_samples_leaf = 5
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "mnist")
  c.model.max_depth, c.model.max_bins = 10, 32
  c.eval_batch_size = 1000
  return c


PRESETS = {"default": default, "breast_cancer": breast_cancer, "digits": digits,
           "regression": regression, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
