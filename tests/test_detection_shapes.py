"""The synthetic detection scenes (data/shapes.py: detection_shapes): fields and padding, each
box exactly the extent of its object's pixels, the variety a detector needs (empty scenes,
several objects, every kind, sizes and aspects), flips that move the boxes, determinism and
bad options."""

import jax
import numpy as np
import pytest

from m2m_jax import data
from m2m_jax.data import shapes, transforms
from m2m_jax.errors import ConfigError


@pytest.fixture(scope="module")
def scenes():
  return data.load("detection_shapes", n_train=300, n_test=50)


def test_fields_and_padding(scenes):
  batch = scenes.train[np.arange(8)]
  assert batch["x"].shape == (8, 64, 64, 3) and batch["x"].dtype == np.float32
  assert batch["boxes"].shape == (8, 6, 4) and batch["labels"].shape == (8, 6)
  assert batch["labels"].dtype == np.int32 and batch["boxes_mask"].dtype == bool
  np.testing.assert_array_equal(batch["boxes_mask"], batch["labels_mask"])
  assert not batch["boxes"][~batch["boxes_mask"]].any()  # padding is zeros
  real = batch["boxes"][batch["boxes_mask"]]
  assert np.all(real[:, 2:] > real[:, :2]) and 0 <= real.min() and real.max() <= 1
  assert scenes.class_names == shapes.KINDS and scenes.num_classes == 3
  assert scenes.max_lengths == {"boxes": 6, "labels": 6}


def test_the_variety_a_detector_needs(scenes):
  split = scenes.train[np.arange(len(scenes.train))]
  counts = split["boxes_mask"].sum(1)
  assert 0 < np.mean(counts == 0) < 0.15 and counts.max() >= 5 and 2 < counts.mean() < 4
  labels = split["labels"][split["boxes_mask"]]
  assert np.all(np.bincount(labels, minlength=3) > 0.25 * len(labels))
  sides = 64 * (split["boxes"][..., 2:] - split["boxes"][..., :2])[split["boxes_mask"]]
  assert sides.min() <= 6 and sides.max() >= 40
  aspect = sides.max(1) / sides.min(1)
  assert aspect.max() > 2


def test_each_box_is_the_extent_of_its_object():
  """Without noise an object is one flat colour: the pixels of that colour span its box."""
  ds = shapes.detection_shapes(n_train=20, n_test=1, noise=0.0, max_objects=1,
                               empty_fraction=0.0)
  split = ds.train[np.arange(20)]
  for image, box in zip(split["x"], split["boxes"][:, 0]):
    y0, x0, y1, x1 = np.round(box * 64).astype(int)
    colours, counts = np.unique(image[y0:y1, x0:x1].reshape(-1, 3), axis=0, return_counts=True)
    rows, cols = np.nonzero(np.all(image == colours[counts.argmax()], axis=-1))
    assert (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1) == (y0, x0, y1, x1)


def test_a_flip_moves_the_boxes(scenes):
  batch = scenes.train[np.arange(4)]
  flipped = transforms.parse("flip_lr(p=1.0)")(jax.random.key(0), batch)
  np.testing.assert_allclose(flipped["x"], batch["x"][:, :, ::-1])
  mask = batch["boxes_mask"]
  np.testing.assert_allclose(np.asarray(flipped["boxes"])[mask][:, [1, 3]],
                             1 - batch["boxes"][mask][:, [3, 1]], atol=1e-6)


def test_scenes_are_functions_of_the_seed():
  a = shapes.detection_shapes(n_train=5, n_test=3)
  b = shapes.detection_shapes(n_train=8, n_test=3)
  np.testing.assert_array_equal(a.test.arrays["boxes"], b.test.arrays["boxes"])
  np.testing.assert_array_equal(a.train.arrays["x"], b.train.arrays["x"][:5])
  c = shapes.detection_shapes(seed=1, n_train=5, n_test=3)
  assert not np.array_equal(a.train.arrays["x"], c.train.arrays["x"])


@pytest.mark.parametrize("options,message", [
    ({"size": 8}, "needs size >= 16"), ({"max_objects": 0}, "max_objects >= 1"),
    ({"empty_fraction": 1.5}, r"empty_fraction in \[0, 1\]")])
def test_bad_options_are_refused(options, message):
  with pytest.raises(ConfigError, match=message):
    shapes.detection_shapes(**options)
