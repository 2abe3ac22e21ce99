"""Colorization and denoising: colour spaces, PSNR, models, corruption, photos, training."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m2m_jax import configlib, data, train
from m2m_jax.algorithms import denoise
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models.autoencoder import ColorizationNet, DenoisingAE
from m2m_jax.models.layers import num_params
from m2m_jax.ops import color, metrics

# sRGB -> CIE Lab (D65), worked by hand from the formulas in m2m_jax/ops/color.py.
LAB_REFERENCE = [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),
    ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
    ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
    ((0.5, 0.5, 0.5), (53.3890, 0.0, 0.0)),
]


def test_rgb_to_lab_reference_values():
  rgb, lab = (np.array(v, np.float32) for v in zip(*LAB_REFERENCE))
  np.testing.assert_allclose(jax.jit(color.rgb_to_lab)(rgb), lab, atol=2e-3)
  np.testing.assert_allclose(jax.jit(color.lab_to_rgb)(lab), rgb, atol=1e-5)


def test_lab_round_trip_and_grey():
  rgb = np.random.default_rng(0).uniform(size=(4, 5, 6, 3)).astype(np.float32)
  np.testing.assert_allclose(jax.jit(lambda v: color.lab_to_rgb(color.rgb_to_lab(v)))(rgb), rgb,
                             atol=1e-5)
  grey = jax.jit(color.rgb_to_grey)(rgb)
  assert grey.shape == (4, 5, 6, 1) and 0 <= grey.min() and grey.max() <= 1
  neutral = np.linspace(0, 1, 11, dtype=np.float32)[:, None].repeat(3, axis=1)  # a = b = 0
  np.testing.assert_allclose(jax.jit(lambda v: color.grey_to_rgb(color.rgb_to_grey(v)))(neutral),
                             neutral, atol=1e-5)
  for f in (color.rgb_to_lab, color.lab_to_rgb):  # finite gradients, black included
    assert np.all(np.isfinite(jax.jit(jax.grad(lambda v: f(v).sum()))(jnp.zeros(3))))


def test_mse_and_psnr_by_hand():
  target = jnp.zeros((2, 2, 2, 1))
  prediction = target.at[0, 0, 0, 0].set(0.2).at[1].set(0.1)
  # image 0: one error of 0.2 in 4 pixels -> 0.04 / 4 = 0.01; image 1: every pixel off by 0.1.
  np.testing.assert_allclose(metrics.mse_per_image(prediction, target), [0.01, 0.01], rtol=1e-6)
  np.testing.assert_allclose(metrics.psnr(jnp.array([0.01, 0.001, 1.0, 0.0])),
                             [20.0, 30.0, 0.0, 100.0], rtol=1e-6)


def _output_shape(model, x):
  """The output shape of ``model`` on ``x``, traced by ``jax.eval_shape`` (no arithmetic)."""
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  return jax.eval_shape(model.apply, variables, x).shape


@pytest.mark.parametrize("size", [(8, 8), (16, 24), (32, 32), (40, 64)])
def test_colorization_net_shapes(size):
  x = jnp.zeros((2, *size, 1))
  assert _output_shape(ColorizationNet(width=2, output="lab"), x) == (2, *size, 2)
  assert _output_shape(ColorizationNet(width=2, output="rgb"), x) == (2, *size, 3)


def _random_variables(model, x):
  """Variables of ``model`` for input ``x`` filled with N(0, 1) numbers (unit BatchNorm
  variances): no initializer runs, so nothing but the forward pass compiles."""
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  fill = lambda path, s: (np.ones if path[-1].key == "var" else
                          lambda shape, _: rng.normal(size=shape))(s.shape, None).astype(np.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("output, low", [("lab", -1), ("rgb", 0)])
def test_colorization_net_output_is_bounded(output, low):
  model = ColorizationNet(width=2, output=output)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 1)) * 10, jnp.float32)
  y = jax.jit(model.apply)(_random_variables(model, x), x)
  assert low <= y.min() and y.max() <= 1 and y.std() > 0


@pytest.mark.parametrize("size, channels, bottleneck", [((16, 16), 1, None), ((32, 32), 3, 4),
                                                        ((24, 40), 3, None)])
def test_denoising_ae_shapes(size, channels, bottleneck):
  model = DenoisingAE(widths=(4, 8, 16), bottleneck=bottleneck, channels=channels)
  x = jnp.zeros((2, *size, channels))
  assert _output_shape(model, x) == x.shape
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  code = jax.eval_shape(lambda v: model.apply(v, x, method="encode"), variables)
  assert code.shape == (2, size[0] // 8, size[1] // 8, bottleneck or 16)


def test_denoising_ae_output_is_an_image():
  model = DenoisingAE(widths=(4, 8), channels=1)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 1)) * 10, jnp.float32)
  y = jax.jit(model.apply)(_random_variables(model, x), x)
  assert 0 <= y.min() and y.max() <= 1 and y.std() > 0


def test_original_sizes():
  assert num_params(ColorizationNet(width=64, output="rgb"), (1, 32, 32, 1)) == 15_006_723
  assert num_params(DenoisingAE(), (1, 32, 32, 3)) == 741_379  # code 4x4x256 = 4,096 > 3,072
  assert num_params(DenoisingAE(bottleneck=16), (1, 32, 32, 3)) < 741_379


def test_bad_input_is_refused():
  with pytest.raises(DataError, match="built for 1-channel images; got 3 channels"):
    ColorizationNet(width=2).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  with pytest.raises(DataError, match="multiples of 8; got 20x32"):
    ColorizationNet(width=2).init(jax.random.key(0), jnp.zeros((1, 20, 32, 1)))
  with pytest.raises(DataError, match="built for 3-channel images; got 1 channels"):
    DenoisingAE(widths=(4, 8)).init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  with pytest.raises(DataError, match="multiples of 4; got 16x18"):
    DenoisingAE(widths=(4, 8)).init(jax.random.key(0), jnp.zeros((1, 16, 18, 3)))
  with pytest.raises(ConfigError, match="unknown ColorizationNet output 'hsv'"):
    ColorizationNet(width=2, output="hsv").init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(ConfigError, match="bottleneck must be a positive"):
    DenoisingAE(bottleneck=0).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_corruption_is_drawn_per_image():
  x = jnp.full((2, 16, 16, 3), 0.5)  # two identical images
  noisy = denoise.corrupt(jax.random.key(0), x, "salt_pepper", 0.2)
  hit = noisy != 0.5
  assert np.asarray(hit[0] != hit[1]).any()  # the original's shared mask made these equal
  assert 0.15 < float(hit.mean()) < 0.25 and set(np.unique(noisy)) == {0.0, 0.5, 1.0}
  pepper = denoise.corrupt(jax.random.key(0), x, "pepper", 0.1)
  assert set(np.unique(pepper)) == {0.0, 0.5} and 0.07 < float((pepper == 0).mean()) < 0.13
  gauss = denoise.corrupt(jax.random.key(0), x, "gaussian", 2.0)
  assert gauss.min() == 0 and gauss.max() == 1 and float(gauss.std()) > 0.3
  again = denoise.corrupt(jax.random.key(1), x, "salt_pepper", 0.2)
  assert np.asarray(again != noisy).any()  # a new step, a new draw


def test_eval_corruption_does_not_depend_on_the_batch():
  x = jnp.asarray(data.load("digits", upsample=2).test[np.arange(6)]["x"])
  noisy = jax.jit(lambda images: denoise.eval_corrupt(images, "salt_pepper", 0.2))
  whole = noisy(x)
  reversed_ = noisy(x[::-1])[::-1]
  pieces = jnp.concatenate([noisy(x[:3]), noisy(x[3:])])
  np.testing.assert_array_equal(whole, reversed_)
  np.testing.assert_array_equal(whole, pieces)
  hit = whole != x
  assert np.asarray(hit[0] != hit[1]).any()


def test_photos_hold_out_a_band_no_training_crop_overlaps(monkeypatch):
  import sklearn.datasets
  # Photos whose pixels hold their own column index, so every crop says where it came from.
  column = np.broadcast_to(np.arange(640)[None, :, None], (427, 640, 3)).astype(np.float64)
  fake = type("Bunch", (), {"images": [column * 255 / 640] * 2})
  monkeypatch.setattr(sklearn.datasets, "load_sample_images", lambda: fake)
  # data.load keeps the datasets it generated: these fake photos get a cache of their own.
  monkeypatch.setattr(data, "_offline", functools.lru_cache(maxsize=1)(data._offline.__wrapped__))
  ds = data.load("photos")
  cols = lambda split: np.rint(split[np.arange(len(split))]["x"][..., 0] * 640).astype(int)
  train_cols, test_cols = cols(ds.train), cols(ds.test)
  assert np.all((train_cols < 256) | (train_cols >= 352))
  assert np.all((test_cols >= 256) & (test_cols < 352))
  assert (len(ds.train), len(ds.test), ds.num_classes) == (3200, 78, None)


def test_photos_are_rgb_crops_with_horizontal_mirrors():
  ds = data.load("photos", stride=32)
  x = ds.train[np.arange(len(ds.train))]["x"]
  y = ds.train[np.arange(len(ds.train))]["y"]
  assert x.shape[1:] == (32, 32, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
  n = int((y == 0).sum()) // 2  # the first photo: n crops, then their mirrors
  np.testing.assert_array_equal(x[n:2 * n], x[:n, :, ::-1])
  again = data.load("photos", stride=32)  # deterministic
  np.testing.assert_array_equal(ds.test[np.arange(5)]["x"], again.test[np.arange(5)]["x"])
  with pytest.raises(ConfigError, match="size <= 96"):
    data.load("photos", size=128)


def _tiny(name, steps=40, **overrides):
  c = configlib.load(name)
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = steps, 10, steps, steps
  c.update(overrides)
  return c


def _train_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]


def test_tiny_colorization_trains(tmp_path):
  """The head starts at zero chroma, the grey image (the test metrics of the untrained model
  are the grey baseline's); 40 steps of 16 crops colour the test crops better than grey
  (measured: 19.52 dB against 18.56)."""
  config = _tiny("colorize", steps=40, batch_size=16, learning_rate=5e-3)
  config.model.width = 4
  summary = train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "summary.json") as f:
    test = json.load(f)["test"]
  assert set(test) == {"loss", "mse", "psnr", "mse_grey", "psnr_grey", "chroma", "chroma_true"}
  assert test == summary["test"] and 0 < test["chroma"] < test["chroma_true"]
  assert test["psnr"] > test["psnr_grey"] + 0.5 and test["mse"] < test["mse_grey"]
  assert (tmp_path / "figures" / "colorized.png").exists()


def test_tiny_denoising_trains(tmp_path):
  config = _tiny("denoise", steps=150, batch_size=32, learning_rate=5e-3)
  config.model.widths = (8, 16, 32)
  summary = train.train_and_evaluate(config, str(tmp_path))
  losses = _train_losses(tmp_path)
  assert losses[-1] < losses[0] / 2.5
  with open(tmp_path / "summary.json") as f:
    test = json.load(f)["test"]
  assert set(test) == {"mse", "psnr", "mse_noisy", "psnr_noisy"} and test == summary["test"]
  assert test["psnr"] > test["psnr_noisy"] + 2
  assert (tmp_path / "figures" / "denoised.png").exists()


def test_bad_configs_are_refused(tmp_path):
  with pytest.raises(ConfigError, match="unknown noise 'speckle'"):
    train.train_and_evaluate(_tiny("denoise", noise="speckle"), str(tmp_path / "a"))
  with pytest.raises(ConfigError, match="noise_level must lie in"):
    train.train_and_evaluate(_tiny("denoise", noise_level=1.5), str(tmp_path / "b"))
  with pytest.raises(ConfigError, match="trains the model 'denoising_ae'; got model_name 'cnn'"):
    train.train_and_evaluate(_tiny("denoise", model_name="cnn"), str(tmp_path / "c"))
  hsv = _tiny("colorize")
  hsv.model.output = "hsv"
  with pytest.raises(ConfigError, match="unknown colorize model.output 'hsv'"):
    train.train_and_evaluate(hsv, str(tmp_path / "d"))
  with pytest.raises(DataError, match="colorize needs RGB images"):
    train.train_and_evaluate(_tiny("colorize", dataset="digits", data={"upsample": 2}),
                             str(tmp_path / "e"))


def test_seed_presets_are_the_originals():
  """The seed presets' settings (each trains on mock CIFAR-10 in the contract suite)."""
  config = configlib.load("denoise", "seed")
  assert (config.dataset, config.noise, config.noise_level, config.batch_size) == (
      "tfds:cifar10", "pepper", 0.1, 256) and config.model.widths == (64, 128, 256)
  config = configlib.load("colorize", "seed")
  assert (config.dataset, config.model.width, config.model.output) == ("tfds:cifar10", 64, "rgb")
  assert (config.batch_size, config.num_epochs) == (16, 3.0)


@pytest.mark.slow
@pytest.mark.parametrize("name, preset, floor, baseline", [
    ("colorize", "default", 22.5, "psnr_grey"), ("denoise", "default", 21.0, "psnr_noisy"),
    ("denoise", "bottleneck", 20.0, "psnr_noisy")])
def test_preset_reaches_its_stated_psnr(name, preset, floor, baseline, tmp_path):
  summary = train.train_and_evaluate(configlib.load(name, preset), str(tmp_path))
  assert summary["test"]["psnr"] >= floor > summary["test"][baseline] + 2
