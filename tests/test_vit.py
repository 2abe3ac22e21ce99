"""The Vision Transformer: parameter counts of the published layouts, shapes, position
embeddings, attention against the formula, the seed's block, a short training through the
loop, and bad settings refused."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m2m_jax import configlib, train
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models import vit
from m2m_jax.models.layers import num_params


def _small(**overrides):
  return vit.ViT(**{"num_classes": 10, "patch_size": 4, "width": 32, "depth": 2, "mlp_dim": 64,
                    "num_heads": 4, **overrides})


@pytest.mark.parametrize("variant,count", [("B/16", 86_567_656), ("S/16", 22_050_664)])
def test_parameter_counts_are_torchvisions(variant, count):
  """The original layout (a class token with its own position embedding), as torchvision's
  vit_b_16 and the timm / torchvision S/16 count it."""
  def model(cls_posemb):
    return vit.ViT(num_classes=1000, variant=variant, pool_type="tok", posemb="learn",
                   cls_posemb=cls_posemb)

  assert num_params(model(True), (1, 224, 224, 3)) == count
  # big_vision's order: the class token gets no position embedding, one row of D fewer.
  width = vit.VARIANTS[variant[0]][0]
  assert num_params(model(False), (1, 224, 224, 3)) == count - width


def test_the_seeds_vit_has_its_published_size():
  """Patch 4, width 100, 3 post-norm blocks of 4 full-width heads, MLP 200, a class token:
  about 615k parameters, as REFERENCE.md reports."""
  model = vit.ViT(num_classes=10, patch_size=4, width=100, depth=3, mlp_dim=200, num_heads=4,
                  block="seed", pool_type="tok", cls_posemb=True, head_zeroinit=False)
  assert num_params(model, (1, 32, 32, 3)) == 618_510
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  assert params["block0"]["attention"]["query"]["kernel"].shape == (100, 4, 100)  # full width


@pytest.mark.parametrize("pool,posemb,shape,patch", [
    ("gap", "learn", (32, 32, 3), 4), ("tok", "sincos2d", (28, 28, 1), 7),
    ("map", "learn", (16, 24, 1), 8), ("tok", "learn", (16, 24, 1), 4),
    ("map", "sincos2d", (32, 32, 3), 8), ("gap", "sincos2d", (28, 28, 1), 14)])
def test_shapes(pool, posemb, shape, patch):
  model = _small(pool_type=pool, posemb=posemb, patch_size=patch)
  x = jax.random.uniform(jax.random.key(1), (3, *shape))
  variables = model.init(jax.random.key(0), x)
  logits = model.apply(variables, x)
  assert logits.shape == (3, 10) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(logits, 0.0)  # the head starts at zero
  n = (shape[0] // patch) * (shape[1] // patch)
  assert ("pos_embedding" in variables["params"]) == (posemb == "learn")
  if posemb == "learn":
    assert variables["params"]["pos_embedding"].shape == (1, n, 32)
  assert ("cls" in variables["params"]) == (pool == "tok")
  assert ("map_head" in variables["params"]) == (pool == "map")


def test_variant_sets_the_layout_and_bfloat16_computes_in_it():
  model = vit.ViT(num_classes=10, variant="Ti/8", dtype=jnp.bfloat16, head_zeroinit=False)
  assert model.settings() == {"patch_size": 8, "width": 192, "depth": 12, "mlp_dim": 768,
                              "num_heads": 3}
  x = jnp.ones((2, 16, 16, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  assert jax.tree.leaves(variables)[0].dtype == jnp.float32
  assert jax.eval_shape(model.apply, variables, x).dtype == jnp.bfloat16


def test_sincos2d_is_big_visions_formula():
  pe = vit.posemb_sincos_2d(3, 5, 8)
  assert pe.shape == (1, 15, 8)
  omega = 1.0 / 10_000 ** (np.arange(2) / 1)
  row, col = 2, 4  # token 2 * 5 + 4
  np.testing.assert_allclose(pe[0, 14], np.concatenate([
      np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)]))
  with pytest.raises(ConfigError, match="must be divisible by 4; got width 30"):
    _small(posemb="sincos2d", width=30, num_heads=3).init(jax.random.key(0),
                                                          jnp.zeros((1, 8, 8, 1)))


def test_attention_is_the_formula():
  """The first block's attention equals softmax(Q K^T / sqrt(d)) V per head, then the output
  projection, computed by hand from its parameters."""
  model = _small(depth=1, pool_type="gap")
  x = jax.random.normal(jax.random.key(2), (2, 16, 16, 1))
  variables = model.init(jax.random.key(0), x)
  _, inter = model.apply(variables, x, capture_intermediates=True)
  block = inter["intermediates"]["block0"]
  z = block["norm1"]["__call__"][0]                       # LN(z_0), (B, N, D)
  out = block["attention"]["__call__"][0]
  p = variables["params"]["block0"]["attention"]
  q, k, v = (jnp.einsum("bnd,dhk->bhnk", z, p[n]["kernel"]) + p[n]["bias"][None, :, None]
             for n in ("query", "key", "value"))
  weights = jax.nn.softmax(q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1]), axis=-1)
  heads = weights @ v                                     # (B, h, N, d)
  expected = jnp.einsum("bhnk,hkd->bnd", heads, p["out"]["kernel"]) + p["out"]["bias"]
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_dropout_and_stochastic_depth_draw_only_in_training():
  model = _small(dropout=0.1, drop_path_rate=0.2, head_zeroinit=False)
  x = jax.random.uniform(jax.random.key(1), (4, 16, 16, 1))
  variables = model.init(jax.random.key(0), x)
  evaluated = model.apply(variables, x)
  np.testing.assert_array_equal(evaluated, model.apply(variables, x))
  a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
  b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(4)})
  assert not np.allclose(a, b) and not np.allclose(a, evaluated)


@pytest.mark.parametrize("overrides,shape,error,message", [
    ({"patch_size": 5}, (1, 16, 16, 1), ConfigError,
     "ViT patch size 5 does not divide the 16x16 images; use a patch size that divides both"),
    ({"width": 30}, (1, 16, 16, 1), ConfigError,
     "ViT width 30 does not split into 4 heads; use a width divisible by num_heads."),
    ({"variant": "XL/16"}, (1, 16, 16, 1), ConfigError, "unknown ViT variant 'XL'; choose one of"),
    ({"variant": "B/x"}, (1, 16, 16, 1), ConfigError, "the patch size after '/' must be a number"),
    ({"pool_type": "max"}, (1, 16, 16, 1), ConfigError, "unknown ViT pool_type 'max'"),
    ({"cls_posemb": True}, (1, 16, 16, 1), ConfigError,
     "cls_posemb gives the class token a learned position embedding"),
    ({}, (16, 16, 1), DataError, "ViT takes images of shape (B, H, W, C); got shape (16, 16, 1)."),
])
def test_bad_settings_and_input_are_refused_in_one_sentence(overrides, shape, error, message):
  with pytest.raises(error) as caught:
    _small(**overrides).init(jax.random.key(0), jnp.zeros(shape))
  assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_short_training_of_the_default_recipe_cuts_the_loss_threefold(tmp_path):
  """The default preset's recipe (AdamW with its weight-decay mask, warmup and cosine,
  clipping), 150 steps of a 2-block ViT on 16x16 digits, without label smoothing (its floor
  would hide the factor) and shifts."""
  config = configlib.load("vit")
  config.model.update(width=32, depth=2, mlp_dim=64)
  config.update(num_steps=150, warmup_steps=10, learning_rate=5e-3, label_smoothing=0.0,
                transforms="", log_every=10, eval_every=150, checkpoint_every=150)
  summary = train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f if '"train"' in line]
  # Measured: 2.30 -> 0.74 and 74.5% held-out accuracy.
  assert rows[0]["loss"] > 2.2 and rows[-1]["loss"] < rows[0]["loss"] / 2.5
  assert summary["test"]["accuracy"] > 0.6
  assert {"confusion.png", "curves.png"} <= set(os.listdir(tmp_path / "figures"))
