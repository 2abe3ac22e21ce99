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
from m2m_jax.ops import conv as conv_ops


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


class Conv(nn.Conv):
  """flax's ``nn.Conv`` (the same attributes and parameter tree) whose convolution ``impl``
  chooses (:func:`m2m_jax.ops.conv.select`): 'cpu' computes the weight gradient of strided
  convolutions of up to 3x3 taps by a matmul a tap
  (:func:`m2m_jax.ops.conv.conv_general_dilated`), 'xla' is ``lax``'s, 'auto' the first on a CPU
  backend and the second on GPU and TPU."""

  impl: str = "auto"

  def __post_init__(self):
    if conv_ops.select(self.impl) == "cpu":
      object.__setattr__(self, "conv_general_dilated", conv_ops.conv_general_dilated)
    super().__post_init__()


class ConvTranspose(nn.ConvTranspose):
  """flax's ``nn.ConvTranspose`` (the same attributes and parameter tree, kernel
  (kh, kw, C_in, C_out)) whose 2-D form ``impl`` 'cpu' computes without dilating the input
  (:func:`m2m_jax.ops.conv.conv_transpose`); 'xla' is ``lax.conv_transpose``, 'auto' the first
  on a CPU backend and the second on GPU and TPU. Kernel dilation, masks, circular padding and
  ``transpose_kernel`` go to flax's."""

  impl: str = "auto"

  @nn.compact
  def __call__(self, inputs: jnp.ndarray) -> jnp.ndarray:
    kernel_size = ((self.kernel_size,) * 2 if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))
    plain = (inputs.ndim == 4 and len(kernel_size) == 2 and self.mask is None
             and not self.transpose_kernel and self.padding != "CIRCULAR"
             and self.kernel_dilation in (None, 1, (1, 1)))
    if not plain or conv_ops.select(self.impl) == "xla":
      return super().__call__(inputs)
    strides = self.strides or 1
    strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
    kernel = self.param("kernel", self.kernel_init,
                        kernel_size + (inputs.shape[-1], self.features), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    y = conv_ops.conv_transpose(inputs, kernel, strides, nn.linear.canonicalize_padding(
        self.padding, 2))
    return y if bias is None else y + bias


def max_pool(x: jnp.ndarray, window: int) -> jnp.ndarray:
  """``nn.max_pool(x, (window, window), strides=(window, window))``: the max of each
  non-overlapping window x window block, (B, H, W, C) -> (B, H // window, W // window, C), the
  rows and columns past the last whole block dropped. Computed as the elementwise maximum of the
  window^2 strided views x[:, i::window, j::window], whose gradient XLA:CPU runs 27 times faster
  than reduce_window's select-and-scatter (1.9 ms against 50 for (128, 28, 28, 32)). Where a
  block holds tied maxima the gradient is shared among them, where flax's gives it to one."""
  h, w = x.shape[1] // window * window, x.shape[2] // window * window
  views = [x[:, i:h:window, j:w:window] for i in range(window) for j in range(window)]
  return functools.reduce(jnp.maximum, views)


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
