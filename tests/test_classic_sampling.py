"""Generators and resampling tools: the seed's two-class bug fixed, splits checked against
scikit-learn's sizes and stratification, bootstrap statistics, jit/vmap, bad input."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.model_selection import train_test_split as sk_train_test_split

from m2m_jax.classic import sampling
from m2m_jax.errors import DataError

KEY = jax.random.key(0)


def _phi(x: float) -> float:
  return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_uniform_normal_and_bias():
  u = np.asarray(sampling.uniform(KEY, 20000, 3, low=-2.0, high=4.0))
  assert u.shape == (20000, 3) and u.dtype == np.float32
  assert u.min() >= -2.0 and u.max() < 4.0
  np.testing.assert_allclose(u.mean(0), 1.0, atol=0.05)       # (a + b) / 2, sd of mean 0.012
  np.testing.assert_allclose(u.var(0), 3.0, rtol=0.05)         # (b - a)^2 / 12
  z = np.asarray(sampling.normal(KEY, 20000, 2, loc=3.0, scale=0.5))
  np.testing.assert_allclose(z.mean(0), 3.0, atol=0.02)        # sd of the mean 0.0035
  np.testing.assert_allclose(z.std(0), 0.5, rtol=0.03)
  b = np.asarray(sampling.add_bias(jnp.asarray(z[:5])))
  assert b.shape == (5, 3)
  np.testing.assert_array_equal(b[:, 0], 1.0)
  np.testing.assert_array_equal(b[:, 1:], z[:5])
  assert sampling.add_bias(jnp.zeros(4)).shape == (5,)


@pytest.mark.parametrize("n,split_rate,n_class0", [(101, 0.3, 30), (101, 0.7, 71), (7, 0.5, 4),
                                                    (1001, 0.5, 501), (10, 0.05, 1)])
def test_two_class_works_for_odd_n_and_any_split_rate(n, split_rate, n_class0):
  X, y = sampling.two_class(KEY, n, 3, split_rate=split_rate)
  assert X.shape == (n, 3) and y.shape == (n,) and y.dtype == jnp.int32
  assert int(jnp.sum(y == 0)) == n_class0 and int(jnp.sum(y == 1)) == n - n_class0
  assert 0 < int(jnp.sum(y[: n // 2])) < n_class0 + n  # shuffled, not one block per class


def test_two_class_classes_really_differ():
  separation = 3.0
  X, y = (np.asarray(a) for a in sampling.two_class(KEY, 4000, 4, separation=separation))
  gap = X[y == 1].mean(0) - X[y == 0].mean(0)
  # Means separation / sqrt(d) apart in every coordinate (sd of each estimate 0.032).
  np.testing.assert_allclose(gap, separation / 2, atol=0.15)
  assert np.linalg.norm(gap) == pytest.approx(separation, rel=0.05)
  clf = LogisticRegression().fit(X[:2000], y[:2000])
  accuracy = clf.score(X[2000:], y[2000:])
  bayes = _phi(separation / 2)  # 0.933
  assert accuracy == pytest.approx(bayes, abs=0.025)
  assert float(np.mean((X.sum(1) > 0) == y)) == pytest.approx(bayes, abs=0.02)
  # With no separation the classes are one distribution: chance accuracy, as the seed had.
  X0, y0 = (np.asarray(a) for a in sampling.two_class(KEY, 4000, 4, separation=0.0))
  assert LogisticRegression().fit(X0[:2000], y0[:2000]).score(X0[2000:], y0[2000:]) < 0.56


def test_bootstrap_out_of_bag_fraction_is_one_over_e():
  n, draws = 500, 400
  indices, oob = jax.vmap(lambda k: sampling.bootstrap(k, n))(jax.random.split(KEY, draws))
  assert indices.shape == (draws, n) and oob.shape == (draws, n)
  assert int(indices.min()) == 0 and int(indices.max()) == n - 1
  expected = (1 - 1 / n) ** n  # 0.3675, -> 1/e
  # Each fraction has sd ~0.013 (negatively correlated cells); their mean of 400 ~0.0007.
  assert float(jnp.mean(oob)) == pytest.approx(expected, abs=0.004)
  assert float(jnp.std(jnp.mean(oob, 1))) == pytest.approx(0.0135, abs=0.004)
  drawn = jnp.zeros((draws, n), bool).at[jnp.arange(draws)[:, None], indices].set(True)
  np.testing.assert_array_equal(drawn, ~oob)
  # Each row is drawn Binomial(n, 1/n) times: mean 1.
  counts = jax.vmap(partial(jnp.bincount, length=n))(indices)
  assert float(jnp.mean(counts)) == 1.0
  assert float(jnp.var(counts)) == pytest.approx(1 - 1 / n, abs=0.02)
  small, small_oob = sampling.bootstrap(KEY, 50, n_samples=10)
  assert small.shape == (10,) and int(jnp.sum(~small_oob)) == len(np.unique(small))


def _check_partition(train: jnp.ndarray, test: jnp.ndarray, n: int) -> None:
  train, test = np.asarray(train), np.asarray(test)
  assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)  # ascending, no repeats
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))


@pytest.mark.parametrize("n,test_size", [(150, 0.25), (101, 0.3), (101, 0.7), (10, 3), (7, 0.5)])
def test_train_test_split_sizes_equal_scikit_learn(n, test_size):
  train, test = sampling.train_test_split(KEY, n, test_size=test_size)
  ref_train, ref_test = sk_train_test_split(np.arange(n), test_size=test_size, random_state=0)
  assert (len(train), len(test)) == (len(ref_train), len(ref_test))
  _check_partition(train, test, n)
  other = sampling.train_test_split(jax.random.key(1), n, test_size=test_size)[1]
  assert not np.array_equal(other, test)


@pytest.mark.parametrize("name", ["iris", "wine", "digits", "breast_cancer"])
@pytest.mark.parametrize("test_size", [0.3, 0.7])
def test_stratified_split_keeps_each_class_within_one_sample(name, test_size):
  y = getattr(datasets, f"load_{name}")().target
  n, counts = len(y), np.bincount(y)
  for seed in range(5):
    train, test = sampling.train_test_split(jax.random.key(seed), n, test_size=test_size,
                                            stratify=y)
    _check_partition(train, test, n)
    assert len(test) == math.ceil(test_size * n)
    for part in (train, test):
      exact = counts * len(part) / n
      assert np.abs(np.bincount(y[np.asarray(part)], minlength=len(counts)) - exact).max() < 1


def test_stratified_split_odd_sizes_and_string_labels():
  y = np.array(["a"] * 7 + ["b"] * 13 + ["c"] * 31 + ["d"] * 50)  # 101 rows
  train, test = sampling.train_test_split(KEY, 101, test_size=0.3, stratify=y)
  assert len(test) == 31
  for label, count in zip("abcd", (7, 13, 31, 50)):
    assert abs(np.sum(y[np.asarray(test)] == label) - count * 31 / 101) < 1


def test_split_jits_and_vmaps_with_traced_labels():
  y = jnp.repeat(jnp.arange(3), jnp.array([20, 30, 50]), total_repeat_length=100)
  split = jax.jit(lambda key, y: sampling.train_test_split(key, 100, test_size=0.2, stratify=y))
  train, test = split(KEY, y)
  np.testing.assert_array_equal(np.bincount(np.asarray(y)[np.asarray(test)]), [4, 6, 10])
  _check_partition(train, test, 100)
  tests = jax.vmap(lambda k: split(k, y)[1])(jax.random.split(KEY, 8))
  assert tests.shape == (8, 20) and len({tuple(t) for t in np.asarray(tests)}) == 8
  np.testing.assert_array_equal(tests[0], split(jax.random.split(KEY, 8)[0], y)[1])


def test_split_of_large_n_has_exact_class_counts():
  n = 200_003  # products n_c * n_test overflow int32: the remainder trick keeps them exact
  y = np.random.default_rng(0).integers(0, 7, n)
  train, test = sampling.train_test_split(KEY, n, test_size=0.3, stratify=y)
  assert len(test) == math.ceil(0.3 * n)
  exact = np.bincount(y) * len(test) / n
  assert np.abs(np.bincount(y[np.asarray(test)]) - exact).max() < 1
  assert len(np.union1d(train, test)) == n


@pytest.mark.parametrize("n,n_splits", [(10, 3), (101, 5), (12, 12), (150, 10)])
def test_kfold_partitions_like_scikit_learn(n, n_splits):
  masks = np.asarray(sampling.kfold(KEY, n, n_splits))
  assert masks.shape == (n_splits, n)
  np.testing.assert_array_equal(masks.sum(0), 1)  # every row tested exactly once
  ref = [test for _, test in KFold(n_splits).split(np.zeros(n))]
  np.testing.assert_array_equal(masks.sum(1), [len(t) for t in ref])
  unshuffled = sampling.fold_indices(sampling.kfold(KEY, n, n_splits, shuffle=False))
  for (train, test), ref_test in zip(unshuffled, ref):
    np.testing.assert_array_equal(test, ref_test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
  assert not np.array_equal(masks, sampling.kfold(jax.random.key(1), n, n_splits))


@pytest.mark.parametrize("name,n_splits", [("iris", 5), ("wine", 4), ("breast_cancer", 7)])
def test_stratified_kfold_class_counts_equal_scikit_learn(name, n_splits):
  y = getattr(datasets, f"load_{name}")().target
  masks = np.asarray(sampling.kfold(KEY, len(y), n_splits, stratify=y))
  np.testing.assert_array_equal(masks.sum(0), 1)
  ours = np.array([np.bincount(y[m], minlength=y.max() + 1) for m in masks])
  # scikit-learn orders classes by first appearance; in these datasets that is label order.
  ref = np.array([np.bincount(y[t], minlength=y.max() + 1)
                  for _, t in StratifiedKFold(n_splits).split(np.zeros(len(y)), y)])
  np.testing.assert_array_equal(ours, ref)
  assert np.abs(ours - np.bincount(y) / n_splits).max() < 1


def test_kfold_vmaps_over_keys_and_folds():
  y = jnp.asarray(datasets.load_iris().target)
  masks = jax.jit(jax.vmap(lambda k: sampling.kfold(k, 150, 5, stratify=y)))(
      jax.random.split(KEY, 4))
  assert masks.shape == (4, 5, 150)
  np.testing.assert_array_equal(masks.sum(1), 1)
  # A per-fold statistic, vmapped over the stacked folds: each test fold's class-0 share.
  share = jax.vmap(lambda m: jnp.sum(m & (y == 0)) / jnp.sum(m))(masks[0])
  np.testing.assert_allclose(share, 1 / 3, atol=1e-6)


def test_bad_input_raises_one_clear_error():
  with pytest.raises(DataError, match=r"test_size=1\.5 must be a float in \(0, 1\) or an int"):
    sampling.train_test_split(KEY, 10, test_size=1.5)
  with pytest.raises(DataError, match=r"test_size=0\.0 must be a float in \(0, 1\)"):
    sampling.train_test_split(KEY, 10, test_size=0.0)
  with pytest.raises(DataError, match="test_size=10 gives 10 test rows out of 10"):
    sampling.train_test_split(KEY, 10, test_size=10)
  with pytest.raises(DataError, match="stratify must be 1-D with one label per sample"):
    sampling.train_test_split(KEY, 10, stratify=np.zeros(9))
  with pytest.raises(DataError, match=r"n_splits=11 must lie in 2\.\.10"):
    sampling.kfold(KEY, 10, 11)
  with pytest.raises(DataError, match="n_splits=1 must be an int >= 2"):
    sampling.kfold(KEY, 10, 1)
  with pytest.raises(DataError, match=r"split_rate=1\.0 must lie strictly between 0 and 1"):
    sampling.two_class(KEY, 10, split_rate=1.0)
  with pytest.raises(DataError, match=r"split_rate=0\.01 with n_samples=10 leaves a class empty"):
    sampling.two_class(KEY, 10, split_rate=0.01)
  with pytest.raises(DataError, match="n_samples=1 must be an int >= 2"):
    sampling.two_class(KEY, 1)
  with pytest.raises(DataError, match="n_samples=0 must be an int >= 1"):
    sampling.bootstrap(KEY, 10, n_samples=0)
  with pytest.raises(DataError, match=r"n_features=2\.5 must be an int"):
    sampling.normal(KEY, 10, 2.5)
