"""Building blocks shared by the model families: input checks, parameter counts, normalisation
layers and the transformer's parts (patch embedding, MLP block, stochastic depth, pre-norm encoder block).

Every model file takes these from here rather than from another family's file, so that a
change to, say, BatchNorm's momentum is one change everywhere.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from m2m_jax.errors import DataError, choose


def check_images(x: jnp.ndarray, channels: int | None, multiple: int, model: str) -> None:
  """Refuses input that is not (B, H, W, C) with C = ``channels`` (when given) and H, W
  divisible by ``multiple``; shapes are static, so this also holds under ``jit``."""
  if x.ndim != 4:
    raise DataError(f"{model} takes images of shape (B, H, W, C); got shape {tuple(x.shape)}.")
  if channels is not None and x.shape[-1] != channels:
    raise DataError(f"{model} was built for {channels}-channel images; got {x.shape[-1]} "
                    f"channels (shape {tuple(x.shape)}).")
  h, w = x.shape[1:3]
  if h % multiple or w % multiple:
    raise DataError(f"{model} halves its input {multiple.bit_length() - 1} times, so height "
                    f"and width must be multiples of {multiple}; got {h}x{w}.")


def num_params(model: nn.Module, input_shape: tuple[int, ...]) -> int:
  """The number of parameters of ``model`` for inputs of ``input_shape`` (batch first),
  counted from shapes alone: ``init`` is traced, nothing is allocated."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape)))
  return sum(math.prod(v.shape) for v in jax.tree.leaves(shapes["params"]))


def batch_norm(train: bool, dtype: jnp.dtype, **kwargs):
  """torchvision's BatchNorm as a layer factory: running statistics with momentum 0.9 (PyTorch's
  0.1), epsilon 1e-5; batch statistics when ``train``, the running ones otherwise."""
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                           epsilon=1e-5, dtype=dtype, **kwargs)


def quick_gelu(x: jnp.ndarray) -> jnp.ndarray:
  """OpenAI CLIP's sigmoid approximation of GELU: x * sigmoid(1.702 x)."""
  return x * jax.nn.sigmoid(1.702 * x)


# The MLP's nonlinearity by name: 'gelu' is the exact x * Phi(x) (PyTorch's default and the
# original ViT's), 'quick_gelu' OpenAI CLIP's approximation.
ACTIVATIONS = {"gelu": functools.partial(nn.gelu, approximate=False), "quick_gelu": quick_gelu}


class PatchEmbedding(nn.Module):
  """ViT's linear projection of flattened patches: (B, H, W, C) -> (B, H/p * W/p, width) tokens
  in row-major patch order, one p x p convolution of stride p (the same map as flattening each
  patch and multiplying by a (p*p*C, width) matrix); ``use_bias=False`` drops its bias (CLIP)."""

  patch: int
  width: int
  dtype: jnp.dtype = jnp.float32
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    p = self.patch
    if x.ndim != 4 or x.shape[1] % p or x.shape[2] % p:
      raise DataError(f"PatchEmbedding cuts images (B, H, W, C) into {p}x{p} patches, so H and W "
                      f"must be multiples of {p}; got shape {tuple(x.shape)}.")
    x = nn.Conv(self.width, (p, p), strides=p, padding="VALID", use_bias=self.use_bias,
                dtype=self.dtype, name="projection")(x)
    return x.reshape(x.shape[0], -1, self.width)


class MlpBlock(nn.Module):
  """The transformer's position-wise MLP: (..., D) -> Dense(hidden) -> activation -> dropout ->
  Dense(D) -> dropout -> (..., D). ``activation``: 'gelu' (exact, as in PyTorch and the
  original ViT) or 'quick_gelu' (x * sigmoid(1.702 x), OpenAI CLIP's)."""

  hidden: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  activation: str = "gelu"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    choose("MLP activation", self.activation, ACTIVATIONS)
    width = x.shape[-1]
    x = ACTIVATIONS[self.activation](nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Dense(width, dtype=self.dtype, name="fc2")(x)
    return nn.Dropout(self.dropout, deterministic=not train)(x)


def drop_path(x: jnp.ndarray, rate: float, rng: jax.Array) -> jnp.ndarray:
  """Stochastic depth on a residual branch x (B, ...): each example's branch is dropped with
  probability ``rate`` and kept scaled by 1 / (1 - rate), so its expectation is x."""
  if rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class EncoderBlock(nn.Module):
  """A pre-norm transformer encoder block on tokens x (B, N, D):

    x <- x + DropPath(Dropout(MHA(LN(x), mask)))
    x <- x + DropPath(MLP(LN(x)))

  ``mask`` (B, 1 or heads, N, N) is True where a query may attend to a key (None: everywhere;
  ``nn.make_causal_mask`` for a text encoder). Dropout and stochastic depth draw from the
  ``'dropout'`` rng stream in train mode (:func:`m2m_jax.algorithms.nets.apply` supplies it).
  ``activation`` is the MLP's (see :class:`MlpBlock`); ``norm_epsilon`` the LayerNorms' epsilon
  (1e-6, big_vision's; PyTorch's and OpenAI CLIP's is 1e-5).
  """

  heads: int
  mlp_dim: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  drop_path: float = 0.0
  dtype: jnp.dtype = jnp.float32
  activation: str = "gelu"
  norm_epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None,
               train: bool = False) -> jnp.ndarray:
    def residual(branch):
      return drop_path(branch, self.drop_path if train else 0.0,
                       self.make_rng("dropout") if train and self.drop_path else None)

    y = nn.LayerNorm(epsilon=self.norm_epsilon, dtype=self.dtype, name="norm1")(x)
    y = nn.MultiHeadDotProductAttention(self.heads, dtype=self.dtype,
                                        dropout_rate=self.attention_dropout,
                                        deterministic=not train, name="attention")(y, mask=mask)
    x = x + residual(nn.Dropout(self.dropout, deterministic=not train)(y))
    y = nn.LayerNorm(epsilon=self.norm_epsilon, dtype=self.dtype, name="norm2")(x)
    mlp = MlpBlock(self.mlp_dim, self.dropout, self.dtype, self.activation, name="mlp")
    return x + residual(mlp(y, train))
