"""Linear regression through the shared loop: one step fits the whole training set.

Presets (diabetes: 442 patients, 10 standardised features, 353 train / 89 test; test R^2):
  default      least squares by Householder QR ('lstsq'), the fixed NormalRegression.
  ridge        ridge, alpha = 10 (Cholesky with iterative refinement).
  lasso        lasso, alpha = 1 (coordinate descent to a duality gap).
  elastic_net  elastic net, alpha = 0.5, l1_ratio = 0.5.
  sgd          least squares by mini-batch gradient descent (batches of 32, real epochs).
  seed         the original NormalRegression's closed form on tfds wine_quality (white wine,
               4,898 wines, 11 features; needs TensorFlow to prepare, see README).

  python -m m2m_jax.main --config=configs/linear_regression.py --workdir=runs/linreg
  python -m m2m_jax.main --config=configs/linear_regression.py:lasso --workdir=runs/lasso
"""

from ml_collections import config_dict

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "linear_regression"
  c.dataset = "diabetes"
  # model: classic.linear_regression.fit's hyperparameters
  c.model.alpha = 0.0
  c.model.l1_ratio = 0.0
  c.model.solver = "lstsq"
  c.model.fit_intercept = True
  c.model.learning_rate = config_dict.placeholder(float)  # gd only; None: 1/L from the data
  c.model.batch_size = config_dict.placeholder(int)       # gd only; None: full-batch GD
  c.model.max_iter = 1000
  c.model.tol = 1e-4
  # one step on the whole training set
  c.batch_size = 0
  c.num_steps = 1
  c.log_every = c.eval_every = c.checkpoint_every = 1
  return c


def ridge():
  c = default()
  c.model.alpha, c.model.solver = 10.0, "cholesky"
  return c


def lasso():
  c = default()
  c.model.alpha, c.model.l1_ratio, c.model.solver = 1.0, 1.0, "cd"
  return c


def elastic_net():
  c = default()
  c.model.alpha, c.model.l1_ratio, c.model.solver = 0.5, 0.5, "cd"
  return c


def sgd():
  c = default()
  c.model.solver, c.model.batch_size, c.model.max_iter = "gd", 32, 200
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "wine_quality", x_key="features", y_key="quality",
                     train_split="train[:80%]", test_split="train[80%:]")
  return c


PRESETS = {"default": default, "ridge": ridge, "lasso": lasso, "elastic_net": elastic_net,
           "sgd": sgd, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
