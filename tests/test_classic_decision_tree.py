"""The CART tree against scikit-learn's exact trees: the same splits where the bins hold the exact
thresholds, the same held-out scores on the bundled sets, and clear errors for bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets, model_selection, tree as sktree

from conftest import fast
from m2m_jax.classic import decision_tree as dt
from m2m_jax.errors import ConfigError, DataError

_rng = np.random.default_rng(0)
# At most 200 distinct values per feature: the bins are the exact CART candidates.
X = (_rng.integers(0, 200, size=(300, 5)) / 10).astype(np.float32)
Y = (((X[:, 0] + 2 * X[:, 1] - X[:, 2] + _rng.normal(scale=4, size=300)) > 10).astype(int)
     + (X[:, 3] > 15))
Y_REG = (X[:, 0] * X[:, 1] - 3 * X[:, 2] + _rng.normal(scale=5, size=300)).astype(np.float32)


def splits(params: dt.DecisionTree, reference) -> list:
  """Walks both trees together; returns the (feature, threshold) pairs in sklearn's node order
  and asserts the structures agree."""
  tree, ref = params.tree, reference.tree_
  pairs, stack = [], [(0, 0)]
  while stack:
    ours, theirs = stack.pop()
    if ref.children_left[theirs] == -1:
      assert tree.is_leaf[ours], f"node {theirs} is a leaf in scikit-learn only"
      continue
    pairs.append(((int(tree.feature[ours]), float(tree.threshold[ours])),
                  (int(ref.feature[theirs]), float(np.float32(ref.threshold[theirs])))))
    left = int(tree.left[ours])
    stack += [(left, ref.children_left[theirs]), (left + 1, ref.children_right[theirs])]
  return pairs


@pytest.mark.parametrize("criterion", ["gini", "entropy"])
def test_the_same_splits_as_scikit_learns_exact_tree(criterion):
  params = dt.fit(X, Y, criterion=criterion, max_depth=4)
  reference = sktree.DecisionTreeClassifier(criterion=criterion, max_depth=4, random_state=0)
  pairs = splits(params, reference.fit(X, Y))
  assert len(pairs) >= 11
  for ours, theirs in pairs:
    assert ours == theirs
  np.testing.assert_allclose(dt.predict_proba(params, X), reference.predict_proba(X), atol=1e-6)
  np.testing.assert_allclose(dt.feature_importances(params), reference.feature_importances_,
                             atol=1e-5)


def test_the_same_regression_tree_as_scikit_learn():
  params = dt.fit(X, Y_REG, task="regression", max_depth=6, min_samples_leaf=3)
  reference = sktree.DecisionTreeRegressor(max_depth=6, min_samples_leaf=3, random_state=0)
  pairs = splits(params, reference.fit(X, Y_REG))
  assert len(pairs) >= 40
  for ours, theirs in pairs:
    assert ours == theirs
  np.testing.assert_allclose(dt.predict(params, X), reference.predict(X), rtol=1e-5, atol=1e-4)


def test_min_impurity_decrease_prunes_as_in_scikit_learn():
  params = dt.fit(X, Y, max_depth=4, min_impurity_decrease=0.01)
  reference = sktree.DecisionTreeClassifier(max_depth=4, min_impurity_decrease=0.01,
                                            random_state=0).fit(X, Y)
  assert int((~params.tree.is_leaf).sum()) == (reference.tree_.node_count - 1) // 2 < 14


def test_xor_needs_a_split_of_zero_gain_first():
  xor = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 5, np.float32)
  labels = xor[:, 0].astype(int) ^ xor[:, 1].astype(int)
  params = dt.fit(xor, labels, max_depth=2)
  assert float(params.tree.gain[0]) == 0.0 and float(dt.score(params, xor, labels)) == 1.0


def test_sample_weights_equal_repeated_rows():
  weights = _rng.integers(0, 3, size=len(X))
  weighted = dt.fit(X, Y, max_depth=3, sample_weight=weights)
  repeated = dt.fit(np.repeat(X, weights, 0), np.repeat(Y, weights), max_depth=3)
  np.testing.assert_allclose(dt.predict_proba(weighted, X), dt.predict_proba(repeated, X),
                             atol=1e-6)


def test_quantile_bins_when_a_feature_has_more_values_than_bins():
  x = _rng.normal(size=(2000, 1)).astype(np.float32)
  bins = dt.bin_features(x, max_bins=16)
  assert bins.edges.shape == (1, 15) and int(bins.n_bins[0]) == 16
  counts = np.bincount(np.asarray(dt.apply_bins(bins, x))[:, 0], minlength=16)
  assert counts.min() > 100 and counts.max() < 150  # quantiles: about 2000 / 16 = 125 each
  params = dt.fit(x, (x[:, 0] > 0.3).astype(int), max_depth=1, max_bins=16)
  assert abs(float(params.tree.threshold[0]) - 0.3) < 0.1


def test_binned_and_raw_prediction_reach_the_same_leaves():
  params = dt.fit(X, Y, max_depth=5, max_bins=32)  # quantile-binned: thresholds are bin edges
  bins = dt.bin_features(X, max_bins=32)
  np.testing.assert_array_equal(dt.apply(params.tree, jnp.asarray(X)),
                                dt.apply_binned(params.tree, dt.apply_bins(bins, jnp.asarray(X))))


def _mean_scores(X, y, task, hyper, reference):
  split = (model_selection.StratifiedShuffleSplit if task == "classification"
           else model_selection.ShuffleSplit)(4, test_size=0.3, random_state=0)
  ours, theirs = [], []
  for train, test in split.split(X, y):
    params = dt.fit(X[train], y[train], task=task, **hyper)
    ours.append(float(dt.score(params, X[test], y[test])))
    theirs.append(np.mean([reference(**hyper, random_state=seed).fit(X[train], y[train])
                           .score(X[test], y[test]) for seed in range(4)]))
  return np.mean(ours), np.mean(theirs)


@pytest.mark.parametrize("loader", fast(["iris", "wine", "breast_cancer", "digits"],
                                       keep=("wine", "breast_cancer")))
def test_held_out_accuracy_within_one_and_a_half_points_of_scikit_learn(loader):
  X, y = getattr(datasets, f"load_{loader}")(return_X_y=True)
  ours, theirs = _mean_scores(X, y, "classification", {"max_depth": 6, "min_samples_leaf": 2},
                              sktree.DecisionTreeClassifier)
  assert abs(ours - theirs) <= 0.015, (ours, theirs)


@pytest.mark.parametrize("name", fast(["diabetes", "friedman1"], keep=("diabetes",)))
def test_held_out_r2_within_0_03_of_scikit_learn(name):
  X, y = (datasets.load_diabetes(return_X_y=True) if name == "diabetes"
          else datasets.make_friedman1(500, random_state=0))
  ours, theirs = _mean_scores(X, y, "regression", {"max_depth": 4, "min_samples_leaf": 5},
                              sktree.DecisionTreeRegressor)
  assert abs(ours - theirs) <= 0.03, (ours, theirs)


def test_max_features_draws_per_node_and_the_key_decides():
  a = dt.fit(X, Y, max_depth=4, max_features=2, key=jax.random.key(1))
  b = dt.fit(X, Y, max_depth=4, max_features=2, key=jax.random.key(1))
  c = dt.fit(X, Y, max_depth=4, max_features=2, key=jax.random.key(2))
  np.testing.assert_array_equal(a.tree.threshold, b.tree.threshold)
  assert not np.array_equal(a.tree.feature, c.tree.feature)
  used = set(np.asarray(a.tree.feature[~a.tree.is_leaf]).tolist())
  assert len(used) > 2  # a fresh subset at every node, not one subset for the whole tree


def test_labels_of_any_kind_and_prediction_under_jit():
  table = np.array(["setosa", "versicolor", "virginica"])
  names = table[Y]
  by_name, by_index = dt.fit(X, names, max_depth=3), dt.fit(X, Y - 1, max_depth=3)
  assert by_name.classes_ == ("setosa", "versicolor", "virginica")
  assert by_index.classes_ == (-1, 0, 1)
  predicted = jax.jit(dt.predict)(by_index, X)
  np.testing.assert_array_equal(np.asarray(dt.predict(by_name, X)),
                                table[np.asarray(predicted) + 1])
  assert float(dt.score(by_name, X, names)) == float(dt.score(by_index, X, Y - 1)) > 0.8


def test_memory_is_checked_before_growing():
  with pytest.raises(ConfigError, match="GiB of histograms per level"):
    dt.check_growth(10**6, 100, 256, 11, 20, 1)


@pytest.mark.parametrize("hyper, error, message", [
    ({"max_depth": 0}, ConfigError, "max_depth=0 must be an integer >= 1."),
    ({"max_depth": None}, ConfigError, "max_depth=None (grow until pure) is not supported"),
    ({"criterion": "mse"}, ConfigError, "unknown criterion for classification 'mse'"),
    ({"max_features": "half"}, ConfigError, "unknown max_features 'half'"),
    ({"max_features": 1.5}, ConfigError, "max_features=1.5 must be None"),
    ({"max_features": 9}, DataError, "max_features=9 must lie in 1..5"),
    ({"max_bins": 300}, ConfigError, "max_bins=300 must be an integer in 2..256."),
    ({"min_samples_leaf": 0}, DataError, "min_samples_leaf=0 must lie in 1..300"),
    ({"min_impurity_decrease": -1.0}, ConfigError, "min_impurity_decrease=-1.0 must be >= 0."),
    ({"sample_weight": -np.ones(300)}, DataError, "sample_weight must be finite and non-negative"),
    ({"task": "ranking"}, ConfigError, "unknown task 'ranking'"),
])
def test_bad_hyperparameters_are_named(hyper, error, message):
  with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
    dt.fit(X, Y, **hyper)


def test_bad_data_is_named():
  with pytest.raises(DataError, match="X holds NaN or inf values."):
    dt.fit(np.where(X > 19, np.nan, X), Y)
  with pytest.raises(DataError, match=r"y holds a single class \(1\)"):
    dt.fit(X, np.ones(300, int))
  with pytest.raises(DataError, match="X has 300 samples but y has 299."):
    dt.fit(X, Y[:-1])
  with pytest.raises(ConfigError, match="predict_proba needs task='classification'."):
    dt.predict_proba(dt.fit(X, Y_REG, task="regression", max_depth=1), X)
