"""The one-step estimators in the shared loop (linear and logistic regression, k-NN, PCA):
every offline preset's test metric equals scikit-learn's on the same split."""

import os

import ml_collections
import numpy as np
import pytest
from sklearn import decomposition, linear_model, neighbors
from sklearn.metrics import log_loss

from conftest import ONE_STEP
from m2m_jax import configlib, data, train
from m2m_jax.errors import ConfigError, DataError

PRESETS = [(name, preset) for name in ONE_STEP
           for preset, make in configlib.config_module(name).PRESETS.items()
           if not make().dataset.startswith("tfds:")]
# The two slowest presets (15-20 s each: k-NN on 5,000 MNIST digits, 10-class logistic
# regression on the 8x8 digits) run under -m slow; k-NN on the digits and 3-class logistic
# regression on iris cover the same code in the fast suite.
SLOW = {("knn", "mnist5k"), ("logistic_regression", "digits")}


def _arrays(config):
  ds = data.load(config.dataset, **config.data)
  tr, te = (s[np.arange(len(s))] for s in (ds.train, ds.test))
  flat = lambda x: x.reshape(len(x), -1).astype(np.float64)
  return flat(tr["x"]), tr["y"], flat(te["x"]), te["y"]


def _reference(config) -> dict:
  """scikit-learn's test metrics for ``config`` on the loop's train / test split."""
  x, y, xt, yt = _arrays(config)
  m = config.model
  if config.algorithm == "linear_regression":
    if m.alpha == 0:
      est = linear_model.LinearRegression()
    elif m.l1_ratio == 0:
      est = linear_model.Ridge(alpha=m.alpha)
    else:
      est = linear_model.ElasticNet(alpha=m.alpha, l1_ratio=m.l1_ratio, tol=1e-8, max_iter=100_000)
    return {"r2": est.fit(x, y).score(xt, yt)}
  if config.algorithm == "logistic_regression":
    est = linear_model.LogisticRegression(C=m.C, max_iter=10_000, tol=1e-8).fit(x, y)
    return {"accuracy": est.score(xt, yt), "log_loss": log_loss(yt, est.predict_proba(xt))}
  if config.algorithm == "knn":
    kind = "Classifier" if np.issubdtype(y.dtype, np.integer) else "Regressor"
    est = getattr(neighbors, f"KNeighbors{kind}")(
        n_neighbors=m.n_neighbors, weights=m.weights, metric=m.metric, p=m.p, algorithm="brute")
    key = "accuracy" if kind == "Classifier" else "r2"
    return {key: est.fit(x, y).score(xt, yt)}
  est = decomposition.PCA(m.n_components, whiten=m.whiten).fit(x)
  rebuilt = est.inverse_transform(est.transform(xt))
  return {"explained_variance": 1 - np.sum((xt - rebuilt) ** 2) / np.sum((xt - est.mean_) ** 2)}


TOLERANCE = {"r2": 1e-3, "accuracy": 0.01, "log_loss": 0.01, "explained_variance": 1e-4}


@pytest.mark.parametrize("name,preset", [
    pytest.param(n, p, id=f"{n}:{p}", marks=[pytest.mark.slow] if (n, p) in SLOW else [])
    for n, p in PRESETS])
def test_preset_equals_scikit_learn(name, preset, tmp_path):
  config = configlib.load(name, preset)
  summary = train.train_and_evaluate(config, str(tmp_path))
  reference = _reference(config)
  assert summary["steps"] == 1
  for key, expected in reference.items():
    tol = TOLERANCE[key] * (max(1.0, abs(expected)) if key != "log_loss" else expected)
    if config.model.get("solver") == "gd" or config.model.get("svd_solver") == "randomized":
      tol *= 10  # gd stops at a tolerance or an epoch budget; randomized SVD is approximate
    assert summary["test"][key] == pytest.approx(expected, abs=tol), key
  assert os.listdir(tmp_path / "figures")


@pytest.mark.parametrize("name,field,value,message", [
    ("knn", "batch_size", 64, "knn fits on the whole training set in one step: set batch_size=0"),
    ("pca", "num_steps", 5, "pca fits in one step: set num_steps=1, not 5"),
])
def test_refuses_a_config_that_is_not_one_step(name, field, value, message, tmp_path):
  config = configlib.load(name)
  config[field] = value
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("name,dataset,model,error,message", [
    ("linear_regression", "iris", {}, ConfigError, "dataset 'iris' has class labels"),
    ("logistic_regression", "diabetes", {}, ConfigError, "dataset 'diabetes' has no class labels"),
    ("knn", "iris", {"n_neighbors": 121}, DataError, r"n_neighbors=121 must lie in 1\.\.120"),
    ("pca", "wine", {"n_components": 14}, DataError, r"n_components=14 must lie in 1\.\.13"),
    ("pca", "wine", {"n_components": 0.9}, ConfigError, "give an int"),
    ("linear_regression", "diabetes", {"solver": "cd"}, ConfigError, "solver='cd' needs an L1"),
    ("logistic_regression", "iris", {"C": -1.0}, ConfigError, "C=-1.0 must be > 0"),
])
def test_bad_input_is_refused_before_fitting(name, dataset, model, error, message, tmp_path):
  config = configlib.load(name)
  config.dataset = dataset
  config.model = ml_collections.ConfigDict({**config.model.to_dict(), **model})
  with pytest.raises(error, match=message):
    train.train_and_evaluate(config, str(tmp_path))
