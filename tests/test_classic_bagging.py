"""Bagging of any classic estimator against scikit-learn's BaggingClassifier / Regressor."""

import jax
import numpy as np
import pytest
from sklearn import datasets, ensemble, model_selection, neighbors, tree as sktree

from m2m_jax.classic import bagging, decision_tree, knn
from m2m_jax.errors import ConfigError

X, Y = datasets.load_breast_cancer(return_X_y=True)
XR, YR = datasets.load_diabetes(return_X_y=True)


def _split(X, y, seed=0):
  return model_selection.train_test_split(X, y, test_size=0.3, random_state=seed)


def test_bagged_trees_match_scikit_learn_and_beat_one_tree():
  ours, theirs, single = [], [], []
  for seed in range(3):
    x, xt, y, yt = _split(X, Y, seed)
    model = bagging.fit(x, y, decision_tree, n_estimators=10, key=jax.random.key(seed),
                        max_depth=6)
    ours.append(float(bagging.score(model, xt, yt)))
    single.append(float(decision_tree.score(decision_tree.fit(x, y, max_depth=6), xt, yt)))
    theirs.append(np.mean([ensemble.BaggingClassifier(
        sktree.DecisionTreeClassifier(max_depth=6), n_estimators=10, random_state=r)
        .fit(x, y).score(xt, yt) for r in range(3)]))
  assert abs(np.mean(ours) - np.mean(theirs)) <= 0.015, (ours, theirs)
  assert np.mean(ours) > np.mean(single)


def test_bagged_knn_regression_matches_scikit_learn():
  x, xt, y, yt = _split(XR, YR)
  models = [bagging.fit(x, y, knn, task="regression", n_estimators=8, max_samples=0.5,
                        n_neighbors=5, key=jax.random.key(seed)) for seed in range(3)]
  assert len(models[0].estimators) == 8 and models[0].samples.shape == (8, round(0.5 * len(x)))
  ours = np.mean([float(bagging.score(model, xt, yt)) for model in models])
  theirs = np.mean([ensemble.BaggingRegressor(neighbors.KNeighborsRegressor(5), n_estimators=8,
                                              max_samples=0.5, random_state=r)
                    .fit(x, y).score(xt, yt) for r in range(3)])
  assert abs(ours - theirs) <= 0.03, (ours, theirs)


def test_probabilities_align_classes_a_resample_missed_and_prediction_jits():
  x = np.arange(12, dtype=np.float32).reshape(-1, 1)
  labels = np.array(["a"] * 6 + ["b"] * 3 + ["c"] * 3)  # resamples of 6 miss b or c
  model = bagging.fit(x, labels, decision_tree, n_estimators=6, max_samples=0.5, max_depth=2)
  assert model.classes_ == ("a", "b", "c")
  proba = bagging.predict_proba(model, x)
  np.testing.assert_allclose(np.sum(proba, 1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(bagging.predict_proba)(model, x), proba, rtol=1e-6)
  assert set(np.asarray(bagging.predict(model, x)).tolist()) <= {"a", "b", "c"}


@pytest.mark.parametrize("hyper, message", [
    ({"n_estimators": 0}, "n_estimators=0 must be an integer >= 1."),
    ({"max_samples": 1.5}, r"max_samples=1.5 must be a fraction in \(0, 1\]."),
    ({"task": "ranking"}, "unknown task 'ranking'"),
])
def test_bad_hyperparameters_are_named(hyper, message):
  with pytest.raises(ConfigError, match=message):
    bagging.fit(X, Y, decision_tree, **hyper)


def test_a_base_without_fit_is_refused():
  with pytest.raises(ConfigError, match="must be a module with fit"):
    bagging.fit(X, Y, np)
