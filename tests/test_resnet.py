"""ResNets: shapes and parameter counts against torchvision's, identity blocks, BatchNorm modes,
bad input, a short training. BatchNorm on 8 devices against 1: the contract suite."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m2m_jax import configlib, train
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models import resnet
from m2m_jax.ops import optim


def _shapes(model, shape):
  """(number of parameters, output shape) without allocating or running anything."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  return sum(p.size for p in jax.tree.leaves(variables["params"])), out


# torchvision.models.resnet18(num_classes=10) and resnet50(num_classes=10) have exactly these
# many parameters (BatchNorm's running statistics are not parameters in either library).
@pytest.mark.parametrize("make,count", [(resnet.ResNet18, 11_181_642),
                                        (resnet.ResNet34, 21_289_802),
                                        (resnet.ResNet50, 23_528_522)])
def test_parameter_counts_equal_torchvision(make, count):
  n, out = _shapes(make(num_classes=10), (2, 64, 64, 3))
  assert n == count and out.shape == (2, 10)


@pytest.mark.parametrize("shape", [(1, 32, 32, 3), (3, 64, 96, 3), (2, 224, 224, 1)])
def test_backbone_returns_every_stage_at_strides_4_to_32(shape):
  _, features = _shapes(resnet.ResNetBackbone(), shape)
  b, h, w, _ = shape
  assert [f.shape for f in features] == [(b, h // s, w // s, c) for s, c in
                                         ((4, 64), (8, 128), (16, 256), (32, 512))]


def test_bottleneck_backbone_widths_and_cifar_strides():
  _, features = _shapes(resnet.ResNetBackbone((1, 1, 1), block="bottleneck", width=8,
                                              stem="cifar"), (2, 16, 24, 1))
  assert [f.shape for f in features] == [(2, 16, 24, 32), (2, 8, 12, 64), (2, 4, 6, 128)]


def test_resnet20_has_the_papers_size():
  n, out = _shapes(resnet.ResNet20(num_classes=10), (4, 32, 32, 3))
  assert out.shape == (4, 10)
  assert 0.26e6 < n < 0.28e6  # He et al. (2016), table 6: 0.27M


@pytest.mark.parametrize("block,features", [(resnet.BasicBlock, 8), (resnet.Bottleneck, 2)])
@pytest.mark.parametrize("train", [False, True])
def test_block_with_zero_initialised_last_batchnorm_is_the_identity(block, features, train):
  x = jax.nn.relu(jax.random.normal(jax.random.key(1), (4, 8, 8, 8)))  # post-ReLU input
  module = block(features)
  variables = module.init(jax.random.key(0), x)
  y = module.apply(variables, x, train=train, mutable=["batch_stats"])[0] if train else \
      module.apply(variables, x)
  np.testing.assert_array_equal(y, x)
  # Without the zero initialisation the residual branch contributes.
  variables = block(features, zero_init_residual=False).init(jax.random.key(0), x)
  assert not np.allclose(block(features, zero_init_residual=False).apply(variables, x), x)


def test_projection_shortcut_where_the_shape_changes():
  x = jnp.ones((2, 8, 8, 4))
  variables = resnet.BasicBlock(8, strides=2).init(jax.random.key(0), x)
  assert "projection" in variables["params"]
  assert resnet.BasicBlock(8, strides=2).apply(variables, x).shape == (2, 4, 4, 8)
  assert "projection" not in resnet.BasicBlock(4).init(jax.random.key(0), x)["params"]


def test_batchnorm_uses_the_batch_in_training_and_running_statistics_in_evaluation():
  model = resnet.ResNet((1,), width=4, stem="cifar", num_classes=3)
  x = 3.0 + jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
  variables = model.init(jax.random.key(1), x)
  _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  stem = updates["batch_stats"]["backbone"]["stem_bn"]
  # momentum 0.9: running mean = 0.9 * 0 + 0.1 * batch mean of the stem convolution's output.
  conv = jax.lax.conv_general_dilated(
      x, variables["params"]["backbone"]["stem_conv"]["kernel"], (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(stem["mean"], 0.1 * conv.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
  # In evaluation, each example's logits do not depend on the rest of the batch.
  full = model.apply(variables, x)
  np.testing.assert_allclose(model.apply(variables, x[:3]), full[:3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,message", [
    ((2, 32, 32, 3), "ResNet was built for 1-channel images; got 3 channels"),
    ((2, 30, 30, 1), "so height and width must be multiples of 32; got 30x30"),
    ((32, 32, 1), r"ResNet takes images of shape \(B, H, W, C\); got shape \(32, 32, 1\)")])
def test_bad_input_is_named(shape, message):
  with pytest.raises(DataError, match=message):
    _shapes(resnet.ResNet18(in_channels=1), shape)


def test_unknown_block_or_stem_is_named():
  with pytest.raises(ConfigError, match="unknown block 'wide'; choose one of: basic, bottleneck"):
    _shapes(resnet.ResNet(block="wide"), (1, 32, 32, 3))
  with pytest.raises(ConfigError, match="unknown stem 'vit'; choose one of: cifar, imagenet"):
    _shapes(resnet.ResNet(stem="vit"), (1, 32, 32, 3))


def test_imagenet_stem_on_8x8_digits_is_refused_before_training(tmp_path):
  config = configlib.load("resnet")
  config.data.upsample, config.model.stem = 1, "imagenet"
  with pytest.raises(DataError, match="multiples of 16; got 8x8"):
    train.train_and_evaluate(config, str(tmp_path))


def test_warmup_longer_than_the_run_is_refused(tmp_path):
  config = configlib.load("resnet")
  config.num_steps = 20
  with pytest.raises(ConfigError, match=r"warmup_steps 50 must lie in \[0, num_steps = 20\)"):
    train.train_and_evaluate(config, str(tmp_path))


def test_adam_with_weight_decay_is_refused():
  config = configlib.load("resnet")
  config.optimizer = "adam"
  with pytest.raises(ConfigError, match="adamw, sgd or momentum"):
    configlib.validate(config, 1)


def _short(config, steps=150):
  config.num_steps, config.log_every, config.eval_every, config.checkpoint_every = steps, 20, steps, steps
  return config


def test_a_short_training_cuts_the_loss_fivefold(tmp_path):
  config = _short(configlib.load("resnet"))
  config.warmup_steps = 20
  summary = train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f if '"train"' in line]
  assert rows[0]["loss"] > 2.0 and rows[-1]["loss"] < rows[0]["loss"] / 5
  assert summary["test"]["accuracy"] > 0.9
  assert {"confusion.png", "curves.png"} <= set(os.listdir(tmp_path / "figures"))


def test_momentum_with_weight_decay_adds_the_l2_gradient():
  config = configlib.load("resnet")
  config.learning_rate, config.schedule, config.weight_decay = 0.1, "constant", 0.01
  config.warmup_steps = 0
  tx = optim.optimizer(config)
  w, g = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.5])
  updates, _ = tx.update(g, tx.init(w), w)
  np.testing.assert_allclose(updates, -0.1 * (g + 0.01 * w), rtol=1e-6)


@pytest.mark.parametrize("preset", ["cifar10", "resnet18"])
def test_cifar_presets_flip_colour_images(preset):
  """The CIFAR presets (trained on mock CIFAR-10 by the contract suite)."""
  config = configlib.load("resnet", preset)
  assert (config.dataset, config.transforms, config.model.in_channels) == (
      "tfds:cifar10", "crop(pad=4)|flip_lr", 3)
