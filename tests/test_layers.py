"""The transformer's shared parts (m2m_jax.models.layers) against PyTorch: the pre-norm encoder
block against ``torch.nn.TransformerEncoderLayer(norm_first=True)`` and the patch embedding
against a strided ``Conv2d``, with the same random weights; stochastic depth by its definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from m2m_jax.errors import DataError
from m2m_jax.models import layers

B, N, D, HEADS, MLP = 3, 7, 16, 4, 32


def _dense(linear: torch.nn.Linear) -> dict:
  return {"kernel": linear.weight.detach().numpy().T, "bias": linear.bias.detach().numpy()}


def _norm(norm: torch.nn.LayerNorm) -> dict:
  return {"scale": norm.weight.detach().numpy(), "bias": norm.bias.detach().numpy()}


def _attention(mha: torch.nn.MultiheadAttention) -> dict:
  """PyTorch's packed (3D, D) in-projection as flax's per-head (D, heads, D / heads) kernels."""
  w, b = mha.in_proj_weight.detach().numpy(), mha.in_proj_bias.detach().numpy()
  head = D // HEADS
  split = {name: (w[i * D:(i + 1) * D].T.reshape(D, HEADS, head),
                  b[i * D:(i + 1) * D].reshape(HEADS, head))
           for i, name in enumerate(("query", "key", "value"))}
  out = mha.out_proj
  return {**{name: {"kernel": k, "bias": v} for name, (k, v) in split.items()},
          "out": {"kernel": out.weight.detach().numpy().T.reshape(HEADS, head, D),
                  "bias": out.bias.detach().numpy()}}


@pytest.mark.parametrize("causal", [False, True])
def test_encoder_block_equals_pytorchs_pre_norm_layer(causal):
  torch.manual_seed(0)
  reference = torch.nn.TransformerEncoderLayer(D, HEADS, MLP, dropout=0.0, activation="gelu",
                                               layer_norm_eps=1e-6, batch_first=True,
                                               norm_first=True).eval()
  params = {"norm1": _norm(reference.norm1), "norm2": _norm(reference.norm2),
            "attention": _attention(reference.self_attn),
            "mlp": {"fc1": _dense(reference.linear1), "fc2": _dense(reference.linear2)}}
  x = np.random.default_rng(0).normal(size=(B, N, D)).astype(np.float32)
  block = layers.EncoderBlock(HEADS, MLP)
  assert jax.tree.structure(block.init(jax.random.key(0), x)["params"]) == jax.tree.structure(params)
  mask = torch_mask = None
  if causal:
    torch_mask = torch.nn.Transformer.generate_square_subsequent_mask(N)
    mask = jnp.tril(jnp.ones((1, 1, N, N), bool))
  with torch.no_grad():
    expected = reference(torch.from_numpy(x), src_mask=torch_mask, is_causal=causal).numpy()
  np.testing.assert_allclose(block.apply({"params": params}, x, mask), expected, atol=2e-5)


def test_patch_embedding_equals_a_strided_convolution():
  torch.manual_seed(0)
  conv = torch.nn.Conv2d(3, D, kernel_size=4, stride=4)
  x = np.random.default_rng(0).uniform(size=(2, 8, 12, 3)).astype(np.float32)
  with torch.no_grad():
    expected = conv(torch.from_numpy(x).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2).numpy()
  params = {"projection": {"kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                           "bias": conv.bias.detach().numpy()}}
  tokens = layers.PatchEmbedding(4, D).apply({"params": params}, x)
  assert tokens.shape == (2, 6, D)  # (8 / 4) x (12 / 4) patches, row by row
  np.testing.assert_allclose(tokens, expected, atol=1e-5)
  with pytest.raises(DataError, match=r"into 4x4 patches, so H and W must be multiples of 4; "
                                      r"got shape \(2, 8, 10, 3\)"):
    layers.PatchEmbedding(4, D).init(jax.random.key(0), x[:, :, :10])


def test_drop_path_drops_whole_examples_and_keeps_the_expectation():
  x = jnp.ones((4000, 5, 2))
  y = np.asarray(layers.drop_path(x, 0.25, jax.random.key(0)))
  per_example = y.reshape(4000, -1)
  np.testing.assert_allclose(np.unique(per_example), [0.0, 1 / 0.75])  # dropped whole, or scaled
  assert (per_example == per_example[:, :1]).all()
  assert abs((per_example[:, 0] > 0).mean() - 0.75) < 0.02 and abs(y.mean() - 1.0) < 0.03
  assert layers.drop_path(x, 0.0, None) is x


def test_encoder_block_is_deterministic_in_eval_and_draws_in_train():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(B, N, D)), jnp.float32)
  block = layers.EncoderBlock(HEADS, MLP, dropout=0.1, attention_dropout=0.1, drop_path=0.5)
  variables = block.init(jax.random.key(0), x)
  a = block.apply(variables, x)
  np.testing.assert_array_equal(a, block.apply(variables, x))
  train = lambda seed: block.apply(variables, x, train=True, rngs={"dropout": jax.random.key(seed)})
  np.testing.assert_array_equal(train(1), train(1))
  assert not np.allclose(train(1), train(2)) and not np.allclose(train(1), a)
