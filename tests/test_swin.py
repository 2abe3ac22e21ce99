"""The Swin Transformer: Swin-T's parameter count, the shifted-window mask against brute
force and against the seed's bug, window attention against the formula, window clamping, a
short training through the loop, and sizes the windows cannot tile refused."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m2m_jax import configlib, train
from m2m_jax.errors import ConfigError
from m2m_jax.models import swin
from m2m_jax.models.layers import num_params


def _seed_swin(**overrides):
  """The seed's Swin: patch 4, width 32, two stages of 2 blocks, 2 heads, window 2, shift 1."""
  return swin.SwinTransformer(**{"num_classes": 10, "embed_dim": 32, "depths": (2, 2),
                                 "num_heads": (2, 2), "window_size": 2, **overrides})


def test_swin_t_has_torchvisions_parameter_count():
  swin_t = swin.SwinTransformer(num_classes=1000, variant="T")
  assert num_params(swin_t, (1, 224, 224, 3)) == 28_288_354


def test_the_seeds_swin_has_its_published_size():
  assert num_params(_seed_swin(), (1, 32, 32, 1)) == 135_282  # "about 135k" in REFERENCE.md


@pytest.mark.parametrize("height,width,window,shift", [(4, 4, 2, 1), (8, 8, 4, 2), (6, 9, 3, 1),
                                                       (8, 8, 4, 0)])
def test_the_mask_lets_tokens_attend_only_within_their_region(height, width, window, shift):
  """Brute force: in the map rolled by -shift, a token at row r came from beyond the bottom
  border when r >= height - shift (likewise for columns); two tokens of a window may attend
  when they wrapped alike in both directions."""
  mask = swin.window_attention_mask(height, width, window, shift)
  windows = [(i, j) for i in range(0, height, window) for j in range(0, width, window)]
  assert mask.shape == (len(windows), window ** 2, window ** 2) and mask.dtype == bool
  for k, (i0, j0) in enumerate(windows):
    tokens = [(i0 + a, j0 + b) for a in range(window) for b in range(window)]
    for (p, (r1, c1)), (q, (r2, c2)) in itertools.product(enumerate(tokens), repeat=2):
      same = ((r1 >= height - shift) == (r2 >= height - shift) and
              (c1 >= width - shift) == (c2 >= width - shift)) if shift else True
      assert mask[k, p, q] == same, (k, p, q)


@pytest.mark.parametrize("use_mask", [True, False])
def test_with_the_mask_no_token_attends_across_the_wrapped_border(use_mask):
  """A shifted block on a 4x4 map, window 2, shift 1: only attention mixes tokens in a block,
  so the outputs that move with token (0, 0)'s input are those of the tokens that attend to
  it: never one across the wrapped border with the mask, and all of its window without it
  (the seed's bug)."""
  block = swin.SwinBlock(heads=2, window=2, shift=1, use_mask=use_mask)
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 8))
  variables = block.init(jax.random.key(1), x)
  moved = x.at[0, 0, 0].add(jax.random.normal(jax.random.key(2), (8,)))
  change = jnp.abs(block.apply(variables, moved) - block.apply(variables, x))[0].max(-1)
  changed = {tuple(int(i) for i in p) for p in np.argwhere(change > 1e-3)}
  # (0, 0)'s rolled window holds it and three tokens from across the border: (0, 3), (3, 0)
  # and (3, 3). With the mask it attends to itself alone.
  assert changed == ({(0, 0)} if use_mask else {(0, 0), (0, 3), (3, 0), (3, 3)})


def test_window_attention_is_the_formula():
  """softmax(Q K^T / sqrt(d) + B[index], masked) V per head and window, by hand."""
  layer = swin.WindowAttention(heads=2, window=2)
  x = jax.random.normal(jax.random.key(0), (1, 4, 4, 8))   # 4 windows of 4 tokens
  mask = swin.window_attention_mask(4, 4, 2, 1)
  variables = layer.init(jax.random.key(1), x, mask)
  out = layer.apply(variables, x, mask)
  p = variables["params"]
  qkv = x @ p["qkv"]["kernel"] + p["qkv"]["bias"]
  bias = p["relative_position_bias_table"][swin.relative_position_index(2)]   # (4, 4, heads)
  expected = np.zeros((1, 4, 4, 8))
  for w, h in itertools.product(range(4), range(2)):
    q, k, v = (qkv[0, w, :, s * 8 + h * 4: s * 8 + h * 4 + 4] for s in range(3))
    logits = np.where(mask[w], q @ k.T / 2.0 + bias[:, :, h], -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    expected[0, w, :, h * 4:(h + 1) * 4] = (weights / weights.sum(-1, keepdims=True)) @ v
  expected = expected @ p["proj"]["kernel"] + p["proj"]["bias"]
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_relative_position_index_reads_each_offset():
  index = swin.relative_position_index(3)
  coords = [(i, j) for i in range(3) for j in range(3)]
  for (a, (i1, j1)), (b, (i2, j2)) in itertools.product(enumerate(coords), repeat=2):
    assert index[a, b] == (i1 - i2 + 2) * 5 + (j1 - j2 + 2)


def test_windows_partition_and_merge_back():
  x = jax.random.normal(jax.random.key(0), (2, 6, 9, 3))
  windows = swin.window_partition(x, 3)
  assert windows.shape == (2, 6, 9, 3)
  np.testing.assert_array_equal(windows[0, 1, 4], x[0, 1, 4])      # window (0, 1), token (1, 1)
  np.testing.assert_array_equal(swin.window_merge(windows, 6, 9), x)


@pytest.mark.parametrize("shape", [(32, 32, 1), (64, 32, 3), (16, 16, 1)])
def test_shapes_and_clamped_windows(shape):
  model = _seed_swin(window_size=4)
  x = jnp.ones((2, *shape))
  logits = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x)[0])
  assert logits.shape == (2, 10)
  # 16x16 -> a 4x4 then 2x2 map: the window clamps to the map, and nothing shifts.
  assert model.windows(4, 4) == [(4, 0), (2, 0)]
  assert model.windows(8, 8) == [(4, 2), (4, 0)]


def test_dropout_path_draws_only_in_training():
  model = _seed_swin(drop_path_rate=0.5, depths=(2,), num_heads=(2,))
  x = jax.random.uniform(jax.random.key(1), (4, 16, 16, 1))
  variables = model.init(jax.random.key(0), x)
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
  a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
  b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(4)})
  assert not np.allclose(a, b)


@pytest.mark.parametrize("overrides,shape,message", [
    ({"window_size": 3}, (1, 32, 32, 1), "Swin stage 1 has a 8x8 token map, which windows of 3x3 "
                                         "do not tile; choose an image size or window_size that"),
    ({"window_size": 7}, (1, 12, 12, 1), "Swin stage 2 merges 2x2 patches, but stage 1 has an "
                                         "odd 3x3 token map."),
    ({"num_heads": (3, 3)}, (1, 32, 32, 1), "Swin stage 1 has width 32, which does not split into "
                                            "3 heads."),
    ({"depths": (2, 2, 2)}, (1, 32, 32, 1), "one depth and one head count per stage"),
    ({"variant": "L"}, (1, 32, 32, 1), "unknown Swin variant 'L'; choose one of: B, S, T."),
])
def test_bad_settings_are_refused_in_one_sentence(overrides, shape, message):
  with pytest.raises(ConfigError) as caught:
    _seed_swin(**overrides).init(jax.random.key(0), jnp.zeros(shape))
  assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_short_training_of_the_default_recipe_cuts_the_loss_twofold(tmp_path):
  """The default preset (mnist5k resized to 32x32, the mask on) at width 16: 80 steps of 32."""
  config = configlib.load("swin")
  config.model.embed_dim = 16
  config.update(num_steps=80, batch_size=32, learning_rate=3e-3, log_every=10, eval_every=80,
                checkpoint_every=80)
  config.data.test_examples = 200
  summary = train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f if '"train"' in line]
  # Measured: 2.37 -> 1.08 and 68% on 200 held-out digits.
  assert rows[0]["loss"] > 2.2 and rows[-1]["loss"] < rows[0]["loss"] / 1.8
  assert summary["test"]["accuracy"] > 0.5
