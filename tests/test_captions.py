"""The captioned datasets of CLIP: what the captions say is what the images show, the held-out
(shape, colour) pairs never reach training, and every example is a function of its seed."""

import numpy as np
import pytest

from m2m_jax import data
from m2m_jax.data import captions
from m2m_jax.errors import ConfigError


@pytest.fixture(scope="module")
def scenes():
  return data.load("captioned_shapes", n_train=200, n_test=200)


def test_fields_and_shapes(scenes):
  batch = scenes.test[np.arange(3)]
  assert batch["x"].shape == (3, 32, 32, 3) and batch["x"].dtype == np.float32
  assert batch["tokens"].shape == (3, len(captions.TEMPLATES), 16)
  assert batch["tokens"].dtype == np.int32
  assert 0 <= batch["x"].min() and batch["x"].max() <= 1
  assert scenes.num_classes == 24 and len(scenes.class_names) == 24
  assert scenes.tokenizer.vocab_size == len(scenes.tokenizer.vocabulary)


def test_the_captions_name_the_class_and_nothing_else(scenes):
  split = scenes.test[np.arange(len(scenes.test))]
  for tokens, y in zip(split["tokens"], split["y"]):
    colour, shape = scenes.class_names[y].split()
    words = [scenes.tokenizer.decode(row).split() for row in tokens]
    assert all((colour in w or shape in w) and "<unk>" not in w for w in words)
    assert sum(colour in w and shape in w for w in words) == 4  # three captions name one only
    assert [scenes.tokenizer.decode(t) for t in tokens[-2:]] == [f"a {colour} {shape}",
                                                                 f"a {shape}"]
  # many (shape, colour, size, place) combinations
  assert len(np.unique(split["tokens"][:, 0], axis=0)) > 50


def test_held_out_pairs_are_only_in_the_test_split(scenes):
  train = scenes.train[np.arange(len(scenes.train))]
  test = scenes.test[np.arange(len(scenes.test))]
  held = {scenes.class_names.index(f"{c} {s}") for s, c in captions.HELD_OUT}
  assert not set(train["y"]) & held and not train["heldout"].any()
  assert set(test["y"][test["heldout"]]) == held
  assert not set(test["y"][~test["heldout"]]) & held
  assert 0.4 < test["heldout"].mean() < 0.6
  # every shape and every colour is seen in training
  assert {scenes.class_names[y].split()[1] for y in train["y"]} == set(captions.SHAPES)
  assert {scenes.class_names[y].split()[0] for y in train["y"]} == set(captions.COLOURS)


def test_the_shape_is_drawn_in_its_colour_and_place():
  image = captions._scene(np.random.default_rng(0), 32, "square", "blue", "large", "top left")
  blue = (image[..., 2] > 0.7) & (image[..., 0] < 0.4)
  rows, cols = np.nonzero(blue)
  assert 60 < blue.sum() < 250  # a square of side about 0.36 * 32 pixels
  assert rows.mean() < 12 and cols.mean() < 12


@pytest.mark.parametrize("colour", list(captions.COLOURS))
def test_every_colour_is_darker_than_the_background(colour):
  """A shape shows in brightness alone, whatever its colour (see the module): over 50 scenes,
  the inside of a large square is darker than the corners' background in every one."""
  gaps = []
  for seed in range(50):
    brightness = captions._scene(np.random.default_rng(seed), 32, "square", colour, "large",
                                 "centre").mean(-1)
    gaps.append(brightness[:4, :4].mean() - brightness[13:19, 13:19].mean())
  assert min(gaps) > 0.02, (colour, min(gaps))


def test_examples_are_functions_of_the_seed_and_the_test_split_is_independent_of_n_train():
  a = data.load("captioned_shapes", n_train=20, n_test=10)
  b = data.load("captioned_shapes", n_train=30, n_test=10)
  np.testing.assert_array_equal(a.test.arrays["x"], b.test.arrays["x"])
  np.testing.assert_array_equal(a.train.arrays["x"], b.train.arrays["x"][:20])
  c = data.load("captioned_shapes", seed=1, n_train=20, n_test=10)
  assert not np.array_equal(a.train.arrays["x"], c.train.arrays["x"])


def test_digits_captions_name_the_label():
  digits = data.load("captioned_digits")
  batch = digits.test[np.arange(20)]
  assert batch["x"].shape == (20, 28, 28, 1) and not batch["heldout"].any()
  for tokens, y in zip(batch["tokens"], batch["y"]):
    assert all(captions.DIGITS[y] in digits.tokenizer.decode(row).split() for row in tokens)


@pytest.mark.parametrize("options,message", [
    ({"size": 8}, "needs size >= 16"),
    ({"n_test": 0}, "n_train, n_test >= 1"),
    ({"heldout_fraction": 1.5}, r"heldout_fraction must lie in \[0, 1\]")])
def test_bad_options_are_refused(options, message):
  with pytest.raises(ConfigError, match=message):
    data.load("captioned_shapes", **options)
