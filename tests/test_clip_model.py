"""The CLIP model (m2m_jax.models.clip) against OpenAI's PyTorch CLIP: weights converted with
``from_openai`` from randomly initialised models give the same normalised embeddings and
logits, and the same parameter count; the causal text tower, the ResNet image tower, the
temperature's clamp, and bad input refused in one sentence."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import OPENAI_SMALL as SMALL
from conftest import openai_model as _openai_model
from m2m_jax import models
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models import clip
from m2m_jax.models.clip import CLIP, from_openai

def _tokens(batch: int, length: int, vocab: int, ends: list[int], seed: int = 0) -> np.ndarray:
  """Texts of random ids below EOT = vocab - 1, each ending with EOT at ``ends[i]``, then 0."""
  rng = np.random.default_rng(seed)
  tokens = np.zeros((batch, length), np.int64)
  for i, end in enumerate(ends):
    tokens[i, :end] = rng.integers(1, vocab - 1, end)
    tokens[i, end] = vocab - 1
  return tokens


def _num_params(model: CLIP, image_size: int) -> int:
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)),
      jnp.zeros((1, model.context_length), jnp.int32)))
  return sum(math.prod(v.shape) for v in jax.tree.leaves(shapes["params"]))


def _check_against_openai(reference: torch.nn.Module, images: np.ndarray, tokens: np.ndarray,
                          **heads) -> dict:
  """Converts ``reference``'s weights and compares both towers and the logits; returns the
  largest differences."""
  model, variables = from_openai(reference.state_dict(), **heads)
  with torch.no_grad():
    u = reference.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2))  # NCHW
    v = reference.encode_text(torch.from_numpy(tokens))
    u, v = (t / t.norm(dim=-1, keepdim=True) for t in (u, v))
    logits = (reference.logit_scale.exp() * u @ v.T).numpy()
    u, v = u.numpy(), v.numpy()
  tokens = jnp.asarray(tokens, jnp.int32)
  image_emb = model.apply(variables, images, method=CLIP.encode_image)
  text_emb = model.apply(variables, tokens, method=CLIP.encode_text)
  both_image, both_text, log_scale = model.apply(variables, images, tokens)
  np.testing.assert_array_equal(both_image, image_emb)
  np.testing.assert_array_equal(both_text, text_emb)
  ours = np.exp(log_scale) * image_emb @ text_emb.T
  np.testing.assert_allclose(image_emb, u, atol=1e-4)
  np.testing.assert_allclose(text_emb, v, atol=1e-4)
  np.testing.assert_allclose(ours, logits, atol=1e-4 * np.abs(logits).max())
  assert image_emb.shape == (len(images), model.embed_dim) and text_emb.dtype == jnp.float32
  count = sum(p.numel() for p in reference.parameters())
  assert _num_params(model, images.shape[1]) == count
  return {"image": float(np.abs(image_emb - u).max()), "text": float(np.abs(text_emb - v).max()),
          "logits": float(np.abs(ours - logits).max()), "params": count}


@pytest.mark.parametrize("vision_width", [64, 128])  # OpenAI's width // 64: 1 and 2 heads
def test_converted_weights_give_openais_embeddings_and_logits(vision_width):
  reference = _openai_model(**{**SMALL, "vision_width": vision_width})
  images = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)
  tokens = _tokens(4, 16, 100, ends=[1, 6, 12, 15])
  _check_against_openai(reference, images, tokens, text_heads=4)
  # numpy arrays convert as tensors do.
  _, from_tensors = from_openai(reference.state_dict(), text_heads=4)
  _, from_arrays = from_openai({k: v.numpy() for k, v in reference.state_dict().items()},
                               text_heads=4)
  jax.tree.map(np.testing.assert_array_equal, from_tensors, from_arrays)


@pytest.mark.slow
def test_vit_b32_equals_openais_and_has_its_size():
  reference = _openai_model(**dict(zip(SMALL, (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12))))
  images = np.random.default_rng(1).normal(size=(2, 224, 224, 3)).astype(np.float32)
  tokens = _tokens(3, 77, 49408, ends=[5, 40, 76])
  diffs = _check_against_openai(reference, images, tokens)  # heads by OpenAI's width // 64
  assert diffs["params"] == 151_277_313


def test_the_b32_variant_has_openais_size_and_layout():
  model = CLIP(variant="B/32")
  assert _num_params(model, 224) == 151_277_313  # OpenAI's ViT-B/32, counted in PyTorch
  assert model.settings() == {
      "embed_dim": 512, "patch_size": 32, "image_width": 768, "image_depth": 12,
      "image_heads": 12, "text_width": 512, "text_depth": 12, "text_heads": 8, "eot_id": 49407}
  assert models.get("clip") is CLIP


def _small_model(**overrides) -> CLIP:
  return CLIP(**{"embed_dim": 16, "patch_size": 8, "image_width": 32, "image_depth": 1,
                 "image_heads": 2, "text_width": 32, "text_depth": 2, "text_heads": 4,
                 "vocab_size": 50, "context_length": 12, **overrides})


def test_text_embedding_ignores_tokens_after_the_end_of_text():
  """The causal mask: what follows the (first) EOT token cannot reach its position."""
  model = _small_model()
  tokens = jnp.asarray(_tokens(2, 12, 50, ends=[4, 7]), jnp.int32)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), tokens)
  encode = jax.jit(lambda t: model.apply(variables, t, method=CLIP.encode_text))
  before = encode(tokens)
  after = encode(tokens.at[:, 8:].set(jnp.arange(8, 12) * 3))       # after the EOT of both
  np.testing.assert_allclose(after, before, atol=1e-6)
  after = encode(tokens.at[0, 6].set(49).at[1, 9].set(49))          # a second EOT, later
  np.testing.assert_allclose(after, before, atol=1e-6)
  assert not np.allclose(encode(tokens.at[:, 2].set(7)), before)     # before it: it changes


def test_resnet_image_tower_and_the_temperature():
  model = _small_model(image_tower="resnet", resnet_stages=(1, 1), resnet_block="basic",
                       resnet_width=8, resnet_stem="cifar")
  images = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
  tokens = jnp.asarray(_tokens(2, 10, 50, ends=[3, 9]), jnp.int32)
  variables = model.init(jax.random.key(0), images, tokens)
  assert set(variables) == {"params", "batch_stats"}
  image_emb, text_emb, log_scale = model.apply(variables, images, tokens)
  assert image_emb.shape == (3, 16) and text_emb.shape == (2, 16)
  np.testing.assert_allclose(jnp.linalg.norm(image_emb, axis=-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(text_emb, axis=-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(log_scale, np.log(1 / 0.07), rtol=1e-6)
  emb, updates = model.apply(variables, images, train=True, mutable=["batch_stats"],
                             method=CLIP.encode_image)
  assert emb.shape == (3, 16) and "batch_stats" in updates
  # The stored temperature is unclamped; the one used stops at 100.
  variables["params"]["logit_scale"] = jnp.asarray(7.0)
  assert float(model.apply(variables, images, tokens)[2]) == pytest.approx(np.log(100.0))
  # ResNet stage widths 8, 16 -> a 16-wide pooled feature, projected without a bias.
  assert variables["params"]["image_projection"]["kernel"].shape == (16, 16)
  assert "bias" not in variables["params"]["image_projection"]


def test_the_vit_tower_is_openais_layout_and_the_default_vit_is_unchanged():
  """The options CLIP added to the ViT leave its default parameter tree as it was."""
  from m2m_jax.models.vit import ViT
  x = jnp.zeros((1, 16, 16, 3))
  params = jax.eval_shape(lambda: _small_model().init(
      jax.random.key(0), x, jnp.zeros((1, 12), jnp.int32)))["params"]["image"]
  assert "bias" not in params["embedding"]["projection"] and "head" not in params
  assert params["pre_norm"]["scale"].shape == (32,) and params["pos_embedding"].shape == (1, 5, 32)
  plain = jax.eval_shape(lambda: ViT(patch_size=8, width=32, depth=1, num_heads=2).init(
      jax.random.key(0), x))["params"]
  assert "pre_norm" not in plain and "bias" in plain["embedding"]["projection"]


@pytest.mark.parametrize("overrides,tokens,error,message", [
    ({}, np.zeros((2, 13), np.int32), DataError,
     "CLIP texts are at most context_length=12 tokens; got 13"),
    ({}, np.full((2, 5), 50, np.int32), DataError, "CLIP token ids must lie in 0..49"),
    ({}, np.zeros((2, 5), np.float32), DataError, "CLIP takes token ids of shape (B, T) and an "
                                                  "integer dtype; got shape (2, 5) of float32."),
    ({"text_width": 30}, np.zeros((2, 5), np.int32), ConfigError,
     "CLIP text_width 30 does not split into 4 heads; use a width divisible by text_heads."),
    ({"image_heads": 3}, np.zeros((2, 5), np.int32), ConfigError,
     "ViT width 32 does not split into 3 heads"),
    ({"eot_id": 50}, np.zeros((2, 5), np.int32), ConfigError, "CLIP eot_id 50 is not a token id"),
    ({"variant": "S/16"}, np.zeros((2, 5), np.int32), ConfigError, "unknown CLIP variant 'S'"),
    ({"image_tower": "vgg"}, np.zeros((2, 5), np.int32), ConfigError,
     "unknown CLIP image_tower 'vgg'"),
])
def test_bad_settings_and_input_are_refused_in_one_sentence(overrides, tokens, error, message):
  with pytest.raises(error) as caught:
    _small_model(**overrides).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), tokens)
  assert message in str(caught.value) and "\n" not in str(caught.value)


def test_from_openai_refuses_what_it_cannot_convert():
  state_dict = _openai_model(**SMALL).state_dict()
  resnet = {"visual.layer1.0.conv1.weight": np.zeros((64, 64, 1, 1)), **{
      k: v for k, v in state_dict.items() if not k.startswith("visual.")}}
  cases = [
      (resnet, {}, ConfigError, "converts OpenAI's ViT image towers only; this state dict holds "
                                "a ModifiedResNet"),
      ({"weight": np.zeros(3)}, {}, DataError, "this one has no 'visual.proj'"),
      ({**state_dict, "extra.weight": np.zeros(3)}, {"text_heads": 4}, DataError,
       "found entries it does not know in this state dict ('extra.weight')"),
      (state_dict, {}, ConfigError, "the text tower of width 48 does not split into width // 64 "
                                    "heads (OpenAI's rule); pass text_heads="),
  ]
  for bad, kwargs, error, message in cases:
    with pytest.raises(error) as caught:
      from_openai(bad, **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)
  assert clip.LOGIT_SCALE_MAX == pytest.approx(np.log(100.0))
