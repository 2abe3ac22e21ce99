"""The data registry: fixed seeded splits, step-indexed batches, clear errors."""

import numpy as np
import pytest

from m2m_jax import data
from m2m_jax.data.core import ArraySplit
from m2m_jax.errors import ConfigError, DataError


def test_batch_order_is_a_pure_function_of_seed_and_step():
  kw = dict(num_examples=103, batch_size=10, seed=7)
  np.testing.assert_array_equal(data.batch_indices(13, **kw), data.batch_indices(13, **kw))
  epoch = np.concatenate([data.batch_indices(s, **kw) for s in range(10)])
  assert len(set(epoch.tolist())) == 100  # one epoch: 10 full batches, no repeats
  assert not np.array_equal(data.batch_indices(0, **kw), data.batch_indices(10, **kw))
  assert not np.array_equal(data.batch_indices(0, **kw), data.batch_indices(0, **{**kw, "seed": 8}))


def test_batch_larger_than_data_is_refused():
  with pytest.raises(DataError, match="batch_size 200 is larger than the 100"):
    data.batch_indices(0, num_examples=100, batch_size=200, seed=0)


def test_digits_split_is_fixed_stratified_and_upsampled():
  d = data.load("digits", upsample=2)
  assert (len(d.train), len(d.test), d.num_classes) == (1438, 359, 10)
  x = d.test[np.arange(len(d.test))]
  assert x["x"].shape == (359, 16, 16, 1) and x["x"].dtype == np.float32
  assert 0.0 <= x["x"].min() and x["x"].max() <= 1.0
  counts = np.bincount(x["y"], minlength=10)
  assert counts.min() >= 35 and counts.max() <= 37
  again = data.load("digits", upsample=2).test[np.arange(5)]
  np.testing.assert_array_equal(again["x"], x["x"][:5])


def test_mnist5k_is_4000_train_1000_test_balanced():
  d = data.load("mnist5k")
  tr, te = d.train[np.arange(len(d.train))], d.test[np.arange(len(d.test))]
  assert tr["x"].shape == (4000, 28, 28, 1) and te["x"].shape == (1000, 28, 28, 1)
  assert np.all(np.bincount(tr["y"]) == 400) and np.all(np.bincount(te["y"]) == 100)
  assert tr["x"].max() == 1.0 and tr["x"].min() == 0.0


@pytest.mark.parametrize("name,features,classes", [
    ("iris", 4, 3), ("wine", 13, 3), ("breast_cancer", 30, 2), ("diabetes", 10, None)])
def test_tabular_sets_are_standardised_on_train(name, features, classes):
  d = data.load(name)
  x = d.train[np.arange(len(d.train))]["x"]
  assert x.shape[1] == features and d.num_classes == classes
  np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(x.std(0), 1.0, atol=1e-4)


def test_unknown_dataset_and_option_are_named():
  with pytest.raises(ConfigError, match="unknown dataset 'mnist6k'; choose one of: .*mnist5k"):
    data.load("mnist6k")
  with pytest.raises(ConfigError, match="dataset 'digits' has no option 'size'; its options are: seed, upsample"):
    data.load("digits", size=3)


def test_nan_and_ragged_arrays_are_refused():
  with pytest.raises(DataError, match="'x' holds NaN or inf"):
    ArraySplit({"x": np.array([[0.0], [np.nan]]), "y": np.array([0, 1])})
  with pytest.raises(DataError, match="differ in length"):
    ArraySplit({"x": np.zeros((3, 1)), "y": np.zeros(2)})


def test_pad_by_hand():
  rows = [np.array([[1, 2]]), np.zeros((0, 2), int), np.array([[3, 4], [5, 6], [7, 8]])]
  padded, mask = data.pad(rows, 2)
  np.testing.assert_array_equal(padded, [[[1, 2], [0, 0]], [[0, 0], [0, 0]], [[3, 4], [5, 6]]])
  np.testing.assert_array_equal(mask, [[True, False], [False, False], [True, True]])


def test_datasets_name_their_classes_and_image_size():
  digits = data.load("digits", upsample=2)
  assert digits.class_names == tuple("0123456789") and digits.image_size == (16, 16)
  iris = data.load("iris")
  assert iris.class_names == ("setosa", "versicolor", "virginica") and iris.image_size is None
  assert data.load("spirals").class_names == ("clockwise", "counter-clockwise")
