"""U-Net segmentation: the model's shapes and input checks, the overlap metrics against hand
counts, the shapes dataset, a short training through the shared loop, and the tfds path."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import m2m_jax.data
from m2m_jax import configlib, train
from m2m_jax.data import transforms
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models.unet import UNet
from m2m_jax.ops import segmentation as seg


def _shapes(model, x):
  """(output shape, params) of ``model`` on ``x``, traced without computing anything."""
  out, variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
  return out.shape, variables["params"]


def _count(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


# ---------------------------------------------------------------------------------- model


@pytest.mark.parametrize("shape, widths, out_channels", [
    ((1, 16, 16, 1), (8, 16), 1),
    ((3, 16, 16, 1), (4, 8, 16), 1),
    ((1, 32, 48, 3), (4, 8, 16, 32), 2),
    ((3, 32, 48, 3), (4, 8), 1),
    ((2, 6, 10, 1), (4,), 1),       # no pooling: any size
])
def test_output_has_the_input_size(shape, widths, out_channels):
  out, _ = _shapes(UNet(widths, out_channels), jnp.zeros(shape))
  assert out == (*shape[:3], out_channels)


def test_parameters_match_the_hand_count_of_two_convs_a_level():
  c, w0, w1, k = 3, 4, 8, 2
  double = lambda cin, w: 9 * cin * w + 9 * w * w + 2 * (2 * w)  # two bias-free convs, two BNs
  by_hand = (double(c, w0) + double(w0, w1)       # encoder level, bottleneck
             + 4 * w1 * w0 + w0                    # transposed conv 2x2
             + double(2 * w0, w0)                  # decoder level on [skip, up] channels
             + w0 * k + k)                         # 1x1 head
  _, params = _shapes(UNet((w0, w1), out_channels=k), jnp.zeros((1, 8, 8, c)))
  assert _count(params) == by_hand
  assert set(params["down0"]) == {"Conv_0", "Conv_1", "BatchNorm_0", "BatchNorm_1"}


def test_batchnorm_statistics_update_in_train_mode():
  model = UNet((8, 16))  # the widths of the trainings below, whose initialisers it compiles
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
  variables = model.init(jax.random.key(0), x)
  logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  assert logits.shape == (2, 16, 16, 1) and bool(jnp.all(jnp.isfinite(logits)))
  before = variables["batch_stats"]["down0"]["BatchNorm_0"]["mean"]
  assert not np.allclose(updates["batch_stats"]["down0"]["BatchNorm_0"]["mean"], before)


def test_wrong_channel_count_is_refused():
  with pytest.raises(DataError, match="U-Net was built for 1-channel images; got 3 channels"):
    _shapes(UNet((4, 8), in_channels=1), jnp.zeros((1, 16, 16, 3)))


def test_size_not_divisible_by_the_poolings_is_refused():
  with pytest.raises(DataError, match="U-Net halves its input 2 times, so height and width "
                                      "must be multiples of 4; got 30x30"):
    _shapes(UNet((4, 8, 16)), jnp.zeros((1, 30, 30, 1)))


def test_empty_widths_are_refused():
  with pytest.raises(ConfigError, match="at least one positive width"):
    _shapes(UNet(()), jnp.zeros((1, 8, 8, 1)))


# -------------------------------------------------------------------------------- metrics


def _mask(rows):
  """A (1, H, W, 1) float mask from a nested list."""
  return jnp.asarray(rows, jnp.float32)[None, ..., None]


@pytest.mark.parametrize("pred, true, dice, iou", [
    ([[1, 1], [0, 0]], [[1, 0], [1, 0]], 2 * 1 / (2 + 2), 1 / 3),   # |P n G| = 1, |P u G| = 3
    ([[1, 1], [1, 0]], [[1, 1], [0, 0]], 2 * 2 / (3 + 2), 2 / 3),
    ([[1, 0], [0, 1]], [[1, 0], [0, 1]], 1.0, 1.0),
    ([[0, 0], [0, 0]], [[0, 0], [0, 0]], 1.0, 1.0),                 # both empty
    ([[0, 0], [0, 0]], [[0, 1], [0, 0]], 0.0, 0.0),                 # missed the object
    ([[0, 1], [0, 0]], [[0, 0], [0, 0]], 0.0, 0.0),                 # object where none is
    ([[0.6, 0.4], [0.51, 0.5]], [[1, 1], [1, 0]], 2 * 2 / (2 + 3), 2 / 3),  # p > 0.5
])
def test_dice_and_iou_against_hand_counts(pred, true, dice, iou):
  np.testing.assert_allclose(seg.dice(_mask(pred), _mask(true)), [dice], rtol=1e-6)
  np.testing.assert_allclose(seg.iou(_mask(pred), _mask(true)), [iou], rtol=1e-6)


def test_metrics_are_per_image_and_iou_is_dice_over_two_minus_dice():
  k1, k2 = jax.random.split(jax.random.key(0))
  pred = jax.random.uniform(k1, (6, 8, 8, 1))
  true = (jax.random.uniform(k2, (6, 8, 8, 1)) > 0.6).astype(jnp.float32)
  d, j = seg.dice(pred, true), seg.iou(pred, true)
  assert d.shape == j.shape == (6,)
  np.testing.assert_allclose(j, d / (2 - d), rtol=1e-6)
  np.testing.assert_allclose(d[2:3], seg.dice(pred[2:3], true[2:3]))


def _soft_dice_by_hand(logits, g, eps=1.0):
  p = 1 / (1 + jnp.exp(-logits))
  return 1 - (2 * jnp.sum(p * g) + eps) / (jnp.sum(p) + jnp.sum(g) + eps)


def test_soft_dice_loss_value_by_hand():
  # p = 1/2 everywhere, one of four pixels true: 1 - (2 * 0.5 + 1) / (2 + 1 + 1) = 0.5.
  loss = seg.soft_dice_loss(jnp.zeros((1, 2, 2, 1)), _mask([[1, 0], [0, 0]]))
  np.testing.assert_allclose(loss, [0.5], rtol=1e-6)
  # An empty mask predicted empty costs almost nothing, thanks to eps.
  assert float(seg.soft_dice_loss(jnp.full((1, 2, 2, 1), -20.0), _mask([[0, 0], [0, 0]]))[0]) < 1e-7


def test_soft_dice_gradient_is_nonzero_and_matches_the_formula():
  k1, k2 = jax.random.split(jax.random.key(3))
  logits = jax.random.normal(k1, (2, 4, 4, 1))
  masks = (jax.random.uniform(k2, (2, 4, 4, 1)) > 0.5).astype(jnp.float32)
  loss = jax.jit(lambda l: seg.soft_dice_loss(l, masks).mean())
  grad = jax.jit(jax.grad(loss))(logits)
  by_hand = jax.jit(jax.grad(lambda l: (_soft_dice_by_hand(l[0], masks[0])
                                        + _soft_dice_by_hand(l[1], masks[1])) / 2))(logits)
  assert float(jnp.abs(grad).min()) > 0
  np.testing.assert_allclose(grad, by_hand, rtol=1e-5, atol=1e-7)
  h, idx = 1e-2, (1, 2, 3, 0)  # a central finite difference on one logit
  finite = (loss(logits.at[idx].add(h)) - loss(logits.at[idx].add(-h))) / (2 * h)
  np.testing.assert_allclose(finite, grad[idx], rtol=1e-2)


def test_the_default_flip_mirrors_image_and_mask_together():
  masks = (jax.random.uniform(jax.random.key(0), (32, 4, 6, 1)) > 0.5).astype(jnp.float32)
  images = jnp.concatenate([masks * 0.7, 1 - masks], axis=-1)
  flip = transforms.parse(configlib.load("unet").transforms)
  out = flip(jax.random.key(1), {"x": images, "y": masks})
  flipped_images, flipped_masks = out["x"], out["y"]
  np.testing.assert_array_equal(flipped_images[..., :1], flipped_masks * 0.7)
  mirrored = np.all(np.asarray(flipped_masks) == np.asarray(masks)[:, :, ::-1], axis=(1, 2, 3))
  kept = np.all(np.asarray(flipped_masks) == np.asarray(masks), axis=(1, 2, 3))
  assert np.all(mirrored | kept) and 5 < mirrored.sum() < 27


# -------------------------------------------------------------------------------- dataset


def test_shapes_dataset():
  ds = m2m_jax.data.load("shapes", n_train=200, n_test=50, size=16)
  assert ds.num_classes is None and (len(ds.train), len(ds.test)) == (200, 50)
  x, y = ds.train.arrays["x"], ds.train.arrays["y"]
  assert x.shape == (200, 16, 16, 1) and y.shape == (200, 16, 16, 1)
  assert x.dtype == y.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
  assert set(np.unique(y)) == {0.0, 1.0}
  empty = y.reshape(200, -1).max(1) == 0
  assert 5 <= empty.sum() <= 40  # about 10% empty scenes
  assert not np.array_equal(x[:50], ds.test.arrays["x"])
  again = m2m_jax.data.load("shapes", n_train=200, n_test=50, size=16)
  np.testing.assert_array_equal(again.train.arrays["x"], x)
  np.testing.assert_array_equal(again.test.arrays["y"], ds.test.arrays["y"])
  other = m2m_jax.data.load("shapes", n_train=100, n_test=50, size=16, seed=1)
  assert not np.array_equal(other.test.arrays["x"], ds.test.arrays["x"])


def test_shapes_partition_is_fixed_and_rgb_option():
  small = m2m_jax.data.load("shapes", n_train=20, n_test=10, size=16)
  large = m2m_jax.data.load("shapes", n_train=40, n_test=10, size=16)
  np.testing.assert_array_equal(small.test.arrays["x"], large.test.arrays["x"])
  np.testing.assert_array_equal(small.train.arrays["y"], large.train.arrays["y"][:20])
  rgb = m2m_jax.data.load("shapes", n_train=4, n_test=2, size=8, channels=3, noise=0.0)
  assert rgb.train.arrays["x"].shape == (4, 8, 8, 3)
  assert rgb.train.arrays["y"].shape == (4, 8, 8, 1)


def test_shapes_bad_options_are_refused():
  with pytest.raises(ConfigError, match="channels must be 1 or 3, got 2"):
    m2m_jax.data.load("shapes", channels=2)
  with pytest.raises(ConfigError, match="dataset 'shapes' has no option 'colour'"):
    m2m_jax.data.load("shapes", colour=True)


# ------------------------------------------------------------------------------- training


def _tiny_config():
  c = configlib.load("unet")
  c.data = {"n_train": 128, "n_test": 32, "size": 16}
  c.model.widths = (8, 16)
  c.batch_size, c.learning_rate = 16, 2e-2
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 64, 8, 32, 64
  return c


def test_tiny_training_cuts_the_loss_and_writes_its_outputs(tmp_path):
  summary = train.train_and_evaluate(_tiny_config(), str(tmp_path))
  with open(tmp_path / "summary.json") as f:
    assert json.load(f)["test"] == summary["test"]
  assert set(summary["test"]) == {"loss", "dice", "iou"}
  assert 0 <= summary["test"]["iou"] <= summary["test"]["dice"] <= 1
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f if '"train"' in line]
  assert rows[-1]["loss"] < rows[0]["loss"] / 2  # 64 steps at least halve the loss
  assert rows[-1]["dice"] > rows[0]["dice"]
  assert {"overlays.png", "curves.png"} <= set(os.listdir(tmp_path / "figures"))


def test_label_targets_are_refused(tmp_path):
  c = _tiny_config()
  c.dataset, c.data = "digits", {"upsample": 2}
  with pytest.raises(DataError, match=r"flip_lr transforms images \(H, W, C\), but field 'y'"):
    train.train_and_evaluate(c, str(tmp_path))  # the default's flip meets the labels first
  c.transforms = ""
  with pytest.raises(DataError, match="segmentation needs images .* and masks"):
    train.train_and_evaluate(c, str(tmp_path))


@pytest.mark.slow
def test_default_preset_reaches_dice_090(tmp_path):
  summary = train.train_and_evaluate(configlib.load("unet"), str(tmp_path))
  assert summary["test"]["dice"] >= 0.90


# ----------------------------------------------------------------------------------- tfds

MOCK_TFDS_EXAMPLES = 16  # a split, for the mock_tfds fixture of conftest


def test_pets_are_resized_and_masked(mock_tfds, tmp_path):
  ds = m2m_jax.data.load("tfds:oxford_iiit_pet", data_dir=str(tmp_path),
                         y_key="segmentation_mask", image_size=16, mask_values=(1,))
  assert ds.num_classes is None
  batch = ds.train[np.arange(8)]  # the mock's images and masks each have their own size
  assert batch["x"].shape == (8, 16, 16, 3) and batch["y"].shape == (8, 16, 16, 1)
  assert batch["x"].dtype == batch["y"].dtype == np.float32 and batch["x"].max() <= 1
  assert set(np.unique(batch["y"])) <= {0.0, 1.0}
  with pytest.raises(DataError, match="'image' comes in different shapes.*image_size"):
    m2m_jax.data.load("tfds:oxford_iiit_pet", data_dir=str(tmp_path),
                      y_key="segmentation_mask").train[np.arange(8)]


class _FakeSource(list):
  def __getitems__(self, keys):
    return [self[k] for k in keys]


PET_KEYS = {"x": "image", "y": "segmentation_mask"}


def test_label_masks_resize_by_nearest_neighbour():
  from m2m_jax.data.tfds_source import TfdsSplit
  trimap = np.repeat(np.repeat(np.array([[1, 2], [3, 1]], np.uint8), 3, 0), 3, 1)[..., None]
  record = {"image": np.full((6, 6, 3), 255, np.uint8), "segmentation_mask": trimap}
  labels = TfdsSplit(_FakeSource([record]), PET_KEYS, image_size=4)[[0]]
  np.testing.assert_array_equal(labels["y"][0, ..., 0], np.repeat(np.repeat(
      [[1, 2], [3, 1]], 2, 0), 2, 1))
  np.testing.assert_allclose(labels["x"], 1.0, rtol=1e-6)
  binary = TfdsSplit(_FakeSource([record]), PET_KEYS, image_size=4,
                     mask_values=(1, 3))[[0]]
  np.testing.assert_array_equal(binary["y"][0, ..., 0], [[1, 1, 0, 0]] * 2 + [[1, 1, 1, 1]] * 2)


def test_seed_preset_is_the_original_on_pets():
  """(It trains on mock pets in the contract suite.)"""
  c = configlib.load("unet", "seed")
  assert c.dataset == "tfds:oxford_iiit_pet" and c.model.widths == (64, 128, 256, 512, 1024)
