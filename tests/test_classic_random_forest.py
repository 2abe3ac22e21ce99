"""Random forest (m2m_jax.classic.random_forest) against scikit-learn's RandomForest*, the
per-tree pieces a training loop uses, determinism, importances, bad input.

Two forests agree only in distribution: their bootstrap draws and feature subsets differ. So
accuracies are compared as means over stratified splits (3, or 10 and 6 for the small iris and
wine) x 2 forest seeds, for both libraries (a forest's test accuracy moves by +-1.5 points with
its seed on breast cancer; on iris the first 3 splits favour either library by 1.3 points).
scikit-learn gets the same n_estimators, max_depth, max_features, min_samples_leaf and
bootstrap. The trees stay at depth 5 (XLA compiles each level of a tree: some seconds per
dataset on CPU) and the features at 64 bins (the width of the histograms), so that the file
runs in about a minute on 2 CPU cores; the splits of one dataset share one compiled program.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

from conftest import fast
from m2m_jax.classic import decision_tree as dt
from m2m_jax.classic import random_forest as rf
from m2m_jax.errors import ConfigError, DataError

TREES, DEPTH, BINS = 50, 5, 64
SEEDS = 2
# More splits where the test set is small (iris: 38 samples, one is 2.6 points) and fits cheap.
SPLITS = {"iris": 10, "wine": 6}
REGRESSION = ("diabetes", "friedman1")
# Tolerances on the mean over splits x seeds: accuracy points, R^2, and the OOB score.
TOLERANCE = {"classification": 0.015, "regression": 0.03}
OOB_TOLERANCE = 0.03


@functools.cache
def _data(name):
  if name == "friedman1":
    return datasets.make_friedman1(500, noise=1.0, random_state=0)
  return getattr(datasets, f"load_{name}")(return_X_y=True)


@functools.cache
def _splits(name):
  """Train / test index pairs, all of the same sizes (one compile per dataset)."""
  X, y = _data(name)
  Split = ShuffleSplit if name in REGRESSION else StratifiedShuffleSplit
  return list(Split(n_splits=SPLITS.get(name, 3), test_size=0.25, random_state=0).split(X, y))


def _max_features(task):
  return "sqrt" if task == "classification" else 1.0


def _task(name):
  return "regression" if name in REGRESSION else "classification"


def _fit_ours(name, train, seed, y=None):
  X, labels = _data(name)
  return rf.fit(X[train], labels[train] if y is None else y, task=_task(name),
                n_estimators=TREES, max_depth=DEPTH, max_features=_max_features(_task(name)),
                max_bins=BINS, oob_score=True, key=jax.random.key(seed))


@functools.cache
def _ours(name, split, seed):
  return _fit_ours(name, _splits(name)[split][0], seed)


@functools.cache
def _theirs(name, split, seed):
  X, y = _data(name)
  train = _splits(name)[split][0]
  Reference = RandomForestRegressor if name in REGRESSION else RandomForestClassifier
  return Reference(n_estimators=TREES, max_depth=DEPTH, max_features=_max_features(_task(name)),
                   min_samples_leaf=1, bootstrap=True, oob_score=True,
                   random_state=seed).fit(X[train], y[train])


@pytest.mark.parametrize("name", fast(["iris", "wine", "breast_cancer", "digits", "diabetes",
                                       "friedman1"], keep=("wine", "breast_cancer", "diabetes")))
def test_matches_scikit_learn(name):
  X, y = _data(name)
  ours, theirs = [], []  # (test score, oob score) per split and seed
  for split, (_, test) in enumerate(_splits(name)):
    for seed in range(SEEDS):
      forest, reference = _ours(name, split, seed), _theirs(name, split, seed)
      ours.append((float(rf.score(forest, X[test], y[test])), float(forest.oob_score_)))
      theirs.append((reference.score(X[test], y[test]), reference.oob_score_))
  (score, oob), (reference_score, reference_oob) = np.mean(ours, 0), np.mean(theirs, 0)
  assert score == pytest.approx(reference_score, abs=TOLERANCE[_task(name)])
  assert oob == pytest.approx(reference_oob, abs=OOB_TOLERANCE)
  assert score > {"iris": 0.9, "wine": 0.9, "breast_cancer": 0.9, "digits": 0.9,
                  "diabetes": 0.3, "friedman1": 0.7}[name]


def test_same_key_same_forest_other_key_other_trees():
  train, _ = _splits("iris")[0]
  first, again, other = _ours("iris", 0, 0), _fit_ours("iris", train, 0), _ours("iris", 0, 1)
  jax.tree.map(np.testing.assert_array_equal, first, again)
  assert np.mean(np.asarray(first.trees.feature) != np.asarray(other.trees.feature)) > 0.05
  # 50 bootstrap samples and feature draws: the trees of one forest differ from each other.
  assert len(np.unique(np.asarray(first.trees.threshold[:, :3]), axis=0)) > 10
  np.testing.assert_array_equal(first.tree_weight_, np.ones(TREES))
  assert first.trees.value.shape == (TREES, first.trees.feature.shape[1], 3)


def test_training_loop_pieces_rebuild_fit():
  """init + grow_tree(fold_in(key, t)) + set_tree, one tree per step: a forest of capacity 6
  holding 4 trees is the first 4 trees of fit's forest, and predicts as they do."""
  X, y = _data("iris")
  train, test = _splits("iris")[0]
  fitted = _ours("iris", 0, 0)
  names = np.array(["setosa", "versicolor", "virginica"])
  named = _fit_ours("iris", train, 0, y=names[y[train]])  # labels of any kind
  assert named.classes_ == tuple(names)
  jax.tree.map(np.testing.assert_array_equal, named.trees, fitted.trees)
  np.testing.assert_array_equal(rf.predict(named, X[test]), names[rf.predict(fitted, X[test])])

  bins = dt.bin_features(X[train], BINS)
  Xb = dt.apply_bins(bins, jnp.asarray(X[train], jnp.float32))
  grow = functools.partial(rf.grow_tree, Xb, jnp.asarray(y[train]), bins, task="classification",
                           n_classes=3, criterion="gini", max_depth=DEPTH,
                           max_features=dt.resolve_max_features("sqrt", 4))
  key = jax.random.key(0)
  step = jax.jit(lambda forest, t: rf.set_tree(forest, t, grow(jax.random.fold_in(key, t))))
  loop = rf.init(bins, len(train), names, n_estimators=6, max_depth=DEPTH)
  proba = jax.jit(rf.predict_proba)
  np.testing.assert_array_equal(proba(loop, X[test]), np.zeros((len(test), 3)))  # no tree yet
  for t in range(4):
    loop = step(loop, t)
  np.testing.assert_array_equal(loop.tree_weight_, [1, 1, 1, 1, 0, 0])
  first = fitted.replace(trees=jax.tree.map(lambda x: x[:4], fitted.trees),
                         tree_weight_=jnp.ones((4,)))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda x: x[:4], loop.trees),
               first.trees)
  assert np.all(np.asarray(loop.trees.feature[4:]) == -1)
  np.testing.assert_allclose(proba(loop, X[test]), rf.predict_proba(first, X[test]), atol=1e-6)
  np.testing.assert_array_equal(rf.predict(loop, X[test]), names[rf.predict(first, X[test])])
  np.testing.assert_allclose(rf.feature_importances(loop), rf.feature_importances(first),
                             atol=1e-6)
  # Each tree's resample comes back from its key alone: bootstrap_counts (what the OOB uses).
  counts = rf.bootstrap_counts(jax.random.fold_in(key, 0), len(train))
  assert float(counts.sum()) == len(train) and 0.25 < float(jnp.mean(counts == 0)) < 0.5
  assert float(fitted.trees.count[0, 0]) == float(jnp.sum(counts > 0))


def test_without_bootstrap_or_feature_sampling_every_tree_is_the_decision_tree():
  X, y = _data("wine")
  forest = rf.fit(X, y, n_estimators=3, max_depth=2, max_features=1.0,
                  bootstrap=False)  # 1.0: all features (None: the task's default, 'sqrt')
  tree = dt.fit(X, y, max_depth=2).tree
  for t in range(3):
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda x: x[t], forest.trees), tree)
  assert np.isnan(float(forest.oob_score_))


def test_zero_tree_weights_and_jit():
  """A forest whose weights are 1 for its first k trees and 0 after predicts like those k."""
  X, y = _data("friedman1")
  train, test = _splits("friedman1")[0]
  forest = _ours("friedman1", 0, 0)
  k = 20
  masked = forest.replace(tree_weight_=(jnp.arange(TREES) < k).astype(jnp.float32))
  first = forest.replace(trees=jax.tree.map(lambda x: x[:k], forest.trees),
                         tree_weight_=jnp.ones((k,)))
  np.testing.assert_allclose(jax.jit(rf.predict)(masked, X[test]), rf.predict(first, X[test]),
                             rtol=1e-5, atol=1e-5)
  full = jax.jit(rf.predict)(forest, X[test])
  np.testing.assert_allclose(full, rf.predict(forest, X[test]), rtol=1e-6, atol=1e-6)
  queries = jnp.asarray(X[test], jnp.float32)
  each = jax.vmap(lambda tree: tree.value[dt.apply(tree, queries), 0])(forest.trees)  # (T, m)
  manual = np.mean(each, 0) + float(forest.offset_)
  np.testing.assert_allclose(full, manual, rtol=1e-5, atol=1e-4)
  assert float(jax.jit(rf.score)(forest, X[test], y[test])) == pytest.approx(
      float(rf.score(forest, X[test], y[test])), abs=1e-6)


def test_feature_importances_rank_the_informative_features():
  importance = np.mean([rf.feature_importances(_ours("friedman1", 0, s)) for s in range(SEEDS)], 0)
  reference = np.mean([_theirs("friedman1", 0, s).feature_importances_ for s in range(SEEDS)], 0)
  assert importance.sum() == pytest.approx(1.0, abs=1e-5)
  assert importance[:5].min() > importance[5:].max()  # y depends on x_0..x_4 only
  np.testing.assert_allclose(importance, reference, atol=0.03)


def test_bad_input_fails_with_one_clear_sentence():
  X, y = _data("iris")
  bad = X.copy()
  bad[3, 1] = np.nan
  with pytest.raises(DataError, match="X holds NaN or inf values"):
    rf.fit(bad, y)
  with pytest.raises(DataError, match="a classifier needs at least two"):
    rf.fit(X, np.ones(150))
  with pytest.raises(DataError, match="X has 150 samples but y has 149"):
    rf.fit(X, y[:-1])
  with pytest.raises(ConfigError, match="max_depth=0 must be an integer >= 1"):
    rf.fit(X, y, max_depth=0)
  with pytest.raises(ConfigError, match="max_depth=None"):
    rf.fit(X, y, max_depth=None)
  with pytest.raises(ConfigError, match="n_estimators=0 must be an integer >= 1"):
    rf.fit(X, y, n_estimators=0)
  with pytest.raises(ConfigError, match="n_estimators=2.5 must be an integer >= 1"):
    rf.fit(X, y, n_estimators=2.5)
  with pytest.raises(ConfigError, match="unknown max_features 'third'"):
    rf.fit(X, y, max_features="third")
  with pytest.raises(ConfigError, match=r"max_features=1\.5 must be None"):
    rf.fit(X, y, max_features=1.5)
  with pytest.raises(DataError, match=r"max_features=5 must lie in 1\.\.4"):
    rf.fit(X, y, max_features=5)
  with pytest.raises(ConfigError, match="unknown task 'ranking'"):
    rf.fit(X, y, task="ranking")
  with pytest.raises(ConfigError, match="unknown criterion for regression 'gini'"):
    rf.fit(X, y, task="regression", criterion="gini")
  with pytest.raises(ConfigError, match="oob_score=True needs bootstrap=True"):
    rf.fit(X, y, bootstrap=False, oob_score=True)
  with pytest.raises(ConfigError, match="trees_at_once=0 must be an integer >= 1"):
    rf.fit(X, y, trees_at_once=0)
  with pytest.raises(ConfigError, match="max_bins=1 must be an integer in 2..256"):
    rf.fit(X, y, max_bins=1)
  digits, digit_labels = _data("digits")  # 8 trees' histograms of depth 16: 2 GiB a level
  with pytest.raises(ConfigError, match="GiB of histograms per level"):
    rf.fit(digits, digit_labels, trees_at_once=8)
  forest = rf.init(dt.bin_features(X), 150, n_estimators=2, max_depth=2)  # regression
  with pytest.raises(DataError, match="X has 3 features but the random forest was fitted with 4"):
    rf.predict(forest, X[:, :3])
  with pytest.raises(ConfigError, match="predict_proba needs task='classification'"):
    rf.predict_proba(forest, X)
