"""The per-example transform pipeline: boxes move with the pixels they frame, resize against
PyTorch, mixup by hand, purity in (key, index), bit-for-bit the augmentation it replaced, the
loop's use of it, and bad specs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from m2m_jax import configlib, data, registry, train
from m2m_jax.data import transforms
from m2m_jax.errors import ConfigError

H, W = 12, 16


def _framed(boxes_px: list[tuple[int, int, int, int]], copies: int = 1) -> dict:
  """A batch of ``copies`` images (H, W, 1), each with one rectangle of ones per box
  (y0, x0, y1, x1 in pixels, end exclusive) of its own value, and the relative boxes."""
  image = np.zeros((H, W, 1), np.float32)
  for i, (y0, x0, y1, x1) in enumerate(boxes_px):
    image[y0:y1, x0:x1] = i + 1
  boxes = np.array(boxes_px, np.float32) / [H, W, H, W]
  boxes, mask = data.pad([boxes], 4)
  return {"x": jnp.asarray(np.repeat(image[None], copies, 0)),
          "boxes": jnp.asarray(np.repeat(boxes, copies, 0)),
          "boxes_mask": jnp.asarray(np.repeat(mask, copies, 0))}


def _boxes_of_pixels(image: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """The relative extent of each rectangle's value 1..n still in ``image`` (h, w, 1), and
  whether any of it is."""
  h, w = image.shape[:2]
  boxes, seen = np.zeros((n, 4), np.float32), np.zeros(n, bool)
  for i in range(n):
    ys, xs = np.nonzero(image[..., 0] == i + 1)
    if len(ys):
      boxes[i] = [ys.min() / h, xs.min() / w, (ys.max() + 1) / h, (xs.max() + 1) / w]
      seen[i] = True
  return boxes, seen


BOXES = [(1, 2, 5, 7), (6, 9, 11, 15), (0, 0, 2, 3)]


def test_a_flip_moves_every_box_with_its_pixels():
  batch = _framed(BOXES, copies=32)
  out = transforms.parse("flip_lr")(jax.random.key(0), batch)
  flipped = 0
  for image, boxes, mask in zip(*(np.asarray(out[k]) for k in ("x", "boxes", "boxes_mask"))):
    expected, seen = _boxes_of_pixels(image, len(BOXES))
    np.testing.assert_allclose(boxes[:3], expected, atol=1e-6)
    assert mask.tolist() == [True] * 3 + [False] and seen.all()
    flipped += not np.array_equal(image, np.asarray(batch["x"][0]))
  assert 8 < flipped < 24  # p = 1/2, each example its own draw


def test_a_crop_moves_and_clips_boxes_and_drops_those_it_cuts_away():
  batch = _framed(BOXES, copies=48)
  out = transforms.parse("crop(8, 10, pad=3)")(jax.random.key(1), batch)
  assert out["x"].shape == (48, 8, 10, 1)
  offsets = set()
  for image, boxes, mask in zip(*(np.asarray(out[k]) for k in ("x", "boxes", "boxes_mask"))):
    expected, seen = _boxes_of_pixels(image, len(BOXES))
    assert mask[:3].tolist() == seen.tolist() and not mask[3]
    np.testing.assert_allclose(boxes[:3][seen], expected[seen], atol=1e-6)
    offsets.add(image.tobytes())
  assert len(offsets) > 20  # each example its own window


def test_center_crop_by_hand():
  x = jnp.arange(H * W, dtype=jnp.float32).reshape(1, H, W, 1)
  out = transforms.parse("center_crop(4, 6)")(jax.random.key(0), {"x": x})["x"]
  np.testing.assert_array_equal(out[0, ..., 0], np.asarray(x)[0, 4:8, 5:11, 0])


def test_a_padded_crop_of_the_image_size_shifts_by_at_most_pad():
  x = jnp.zeros((64, H, W, 1)).at[:, 5, 7].set(1.0)
  out = np.asarray(transforms.parse("crop(pad=2)")(jax.random.key(2), {"x": x})["x"])
  ys, xs = np.nonzero(out[..., 0])[1:]
  assert out.shape == x.shape and len(ys) == 64  # the pixel never leaves a 2-pixel margin
  assert set(ys - 5) == set(xs - 7) == {-2, -1, 0, 1, 2}


@pytest.mark.parametrize("size", [(6, 8), (20, 24)])
def test_resize_matches_pytorch_bilinear_with_antialiasing(size):
  x = jax.random.uniform(jax.random.key(0), (2, H, W, 3))
  ours = transforms.parse(f"resize{size}")(jax.random.key(0), {"x": x})["x"]
  theirs = torch.nn.functional.interpolate(
      torch.from_numpy(np.array(x)).permute(0, 3, 1, 2), size=size, mode="bilinear",
      antialias=True, align_corners=False).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_normalize_per_channel():
  x = jnp.ones((2, 3, 3, 2)) * jnp.array([0.5, 0.25])
  out = transforms.parse("normalize((0.5, 0.0), (2.0, 0.5))")(jax.random.key(0), {"x": x})["x"]
  np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.5])


def test_mixup_mixes_images_and_labels_by_the_same_weight():
  y = jnp.arange(64) % 5
  batch = {"x": jax.nn.one_hot(y, 5), "y": y}  # an image that is its own label
  lams = []
  for seed in range(8):
    out = transforms.parse("mixup(0.4)")(jax.random.key(seed), batch, num_classes=5)
    np.testing.assert_allclose(out["x"], out["y"], atol=1e-6)
    np.testing.assert_allclose(out["y"].sum(-1), 1.0, atol=1e-6)
    lams.append(float(out["y"][np.arange(64), y].min()))  # rows with a partner of another class
  assert len(set(lams)) == 8 and 0.0 < min(lams) and max(lams) < 1.0


def test_an_example_transforms_the_same_whatever_its_batch_mates():
  pipeline = transforms.parse("crop(pad=3)|flip_lr")
  x = jax.random.uniform(jax.random.key(0), (4, H, W, 1))
  other = x.at[1:].set(jax.random.uniform(jax.random.key(1), (3, H, W, 1)))
  a = pipeline(jax.random.key(5), {"x": x})["x"]
  b = pipeline(jax.random.key(5), {"x": other})["x"]
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a, pipeline(jax.random.key(6), {"x": x})["x"])


def test_shifts_and_flips_draw_what_the_classifier_drew_before_the_pipeline():
  """The per-batch draws of the augmentation this replaced (ops/augment.py, by hand here):
  the CNN default's shifts, so every trained number and the sample judge stay."""
  rng = jax.random.fold_in(jax.random.key(3), 7)
  x = jax.random.uniform(jax.random.key(0), (16, 8, 8, 1))
  offsets = jax.random.randint(rng, (16, 2), 0, 5)
  padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
  shifted = np.stack([p[o[0]:o[0] + 8, o[1]:o[1] + 8] for p, o in zip(padded, np.asarray(offsets))])
  np.testing.assert_array_equal(transforms.parse("crop(pad=2)")(rng, {"x": x})["x"], shifted)
  flip = np.asarray(jax.random.bernoulli(jax.random.fold_in(rng, 1), 0.5, (16, 1, 1, 1)))
  out = transforms.parse("crop(pad=2)|flip_lr")(rng, {"x": x})["x"]
  np.testing.assert_array_equal(out, np.where(flip, shifted[:, :, ::-1], shifted))


def test_the_loop_initialises_on_transformed_batches_and_evaluates_transformed(tmp_path):
  """An MLP (its first layer sized by the input) on 8x8 digits resized to 12x12."""
  config = configlib.tiny(configlib.load("mlp"))
  config.transforms, config.eval_transforms = "resize(12)|mixup(0.2)", "resize(12)"
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(summary["test"]["loss"])
  state = train.load_state(config, str(tmp_path))
  assert state.params["Dense_0"]["kernel"].shape[0] == 144
  mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
  resolved = train.resolve(config, data.load(config.dataset, **config.data))
  programs = train.programs(registry.get("classifier"), resolved, mesh)
  batch = data.load(config.dataset, **config.data).test[np.arange(4)]
  outputs = programs.eval(state, batch)
  assert outputs["loss"].shape == (4,) and np.all(np.isfinite(outputs["loss"]))


@pytest.mark.parametrize("spec,field,message", [
    ("crop(pad=2)|rotate(10)", "transforms", "unknown op 'rotate'.*choose from center_crop"),
    ("crop(pad=", "transforms", "cannot read transform 'crop\\(pad='"),
    ("flip_lr(q=1)", "transforms", "bad arguments to 'flip_lr'"),
    ("mixup(0)", "transforms", "mixup needs alpha > 0"),
    ("flip_lr", "eval_transforms", "must be deterministic, but 'flip_lr' is random"),
])
def test_a_bad_spec_is_refused_in_one_sentence(spec, field, message):
  with pytest.raises(ConfigError, match=message):
    transforms.parse(spec, field)


def test_a_bad_spec_in_a_config_is_refused_before_anything_runs():
  config = configlib.load("cnn")
  config.eval_transforms = "crop(pad=1)"
  with pytest.raises(ConfigError, match="eval_transforms must be deterministic"):
    configlib.validate(config, 1)


def test_an_algorithm_that_takes_no_transforms_refuses_them():
  config = configlib.load("vae")
  config.transforms = "flip_lr"
  with pytest.raises(ConfigError, match="algorithm 'vae' takes no config.transforms"):
    configlib.validate(config, 1)


def test_a_crop_larger_than_the_image_is_refused():
  with pytest.raises(ConfigError, match=r"crop\(20, 20\) is larger than the 12x16 image"):
    transforms.parse("crop(20)")(jax.random.key(0), {"x": jnp.zeros((1, H, W, 1))})
