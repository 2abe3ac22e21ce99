"""The noise-predicting U-Net of DDPM (Ho et al. 2020), small: eps_theta(x_t, t).

The time t enters through a sinusoidal embedding (Vaswani et al.'s positional encoding of the
scalar t) and an MLP, and that vector is added, after a Dense layer of its own, inside EVERY
residual block; the blocks are GroupNorm-swish-conv3x3 twice. The encoder halves the
resolution once per level after the first (stride-2 conv) and the decoder doubles it back
(nearest neighbour, then a conv), concatenating the encoder's activations of the same
resolution (the skips). No self-attention: at 7x7 and below it buys little, and the sampler
runs this network a thousand times per image.
"""

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models.layers import Conv, check_images


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """Sinusoidal embedding of times t (B,) -> (B, dim): ``[sin(t w_k), cos(t w_k)]`` with
  frequencies ``w_k = max_period^(-k / (dim/2))``, k = 0 .. dim/2 - 1 (dim even)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = t.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class GroupNorm(nn.Module):
  """GroupNorm (Wu and He 2018) of (B, H, W, C): each image's channels fall in ``groups``
  groups of C / groups, each normalised by its mean and variance over (H, W, its channels),
  then a learned per-channel scale and bias. Same numbers as ``flax.linen.GroupNorm``,
  computed from per-channel sums (a reduction over H and W only), about four times faster
  on CPU."""

  groups: int
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    size = h * w * (c // self.groups)
    x32 = x.astype(jnp.float32)
    group_sum = lambda v: jnp.repeat(v.sum((1, 2)).reshape(b, self.groups, -1).sum(-1),
                                     c // self.groups, axis=1)[:, None, None, :] / size
    mean = group_sum(x32)
    var = jnp.maximum(group_sum(jnp.square(x32)) - jnp.square(mean), 0.0)
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    return ((x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias).astype(self.dtype)


class ResBlock(nn.Module):
  """GN-swish-conv3x3, + Dense(temb), GN-swish-conv3x3 (zero-initialised), plus the input
  (through a 1x1 conv when the width changes). (B, H, W, C), temb (B, D) -> (B, H, W, features)."""

  features: int
  groups: int
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
    norm = lambda h: GroupNorm(self.groups, dtype=self.dtype)(h)
    conv = functools.partial(Conv, self.features, dtype=self.dtype, impl=self.conv_impl)
    h = conv((3, 3))(nn.swish(norm(x)))
    h = h + nn.Dense(self.features, dtype=self.dtype)(nn.swish(temb))[:, None, None, :]
    h = conv((3, 3), kernel_init=nn.initializers.zeros)(nn.swish(norm(h)))
    if x.shape[-1] != self.features:
      x = conv((1, 1))(x)
    return x + h


class DDPMUNet(nn.Module):
  """eps_theta(x_t, t): images (B, H, W, C) and times (B,) -> predicted noise (B, H, W, C).

  Level i works at resolution H / 2^i with ``base * multipliers[i]`` channels and holds
  ``blocks`` residual blocks on the way down and ``blocks + 1`` on the way up (one per skip);
  the middle holds two. H and W must be multiples of 2^(levels - 1): 28 -> 14 -> 7 with three
  levels, 16 -> 8 -> 4, 32 -> 16 -> 8.

  Attributes:
    base: channels of the first level.
    multipliers: channel multiplier of each level (its length is the number of levels).
    blocks: residual blocks per level on the way down.
    groups: GroupNorm groups; must divide every level's width.
    time_dim: width of the time embedding MLP (0: 4 base, as DDPM).
    conv_impl: the convolutions' implementation, 'auto', 'cpu' or 'xla'
      (:class:`m2m_jax.models.layers.Conv`).
  """

  base: int = 32
  multipliers: Sequence[int] = (1, 2, 2)
  blocks: int = 1
  groups: int = 8
  time_dim: int = 0
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  def _check(self, x: jax.Array, t: jax.Array) -> None:
    widths = [self.base * m for m in self.multipliers]
    if not widths or min(widths) <= 0 or self.blocks <= 0:
      raise ConfigError(f"DDPMUNet needs a positive base, positive multipliers and blocks; got "
                        f"base {self.base}, multipliers {tuple(self.multipliers)}, blocks "
                        f"{self.blocks}.")
    if any(w % self.groups for w in widths):
      raise ConfigError(f"DDPMUNet groups {self.groups} must divide every level's width "
                        f"{widths}.")
    check_images(x, None, 2 ** (len(widths) - 1), "DDPMUNet")
    if t.shape != x.shape[:1]:
      raise DataError(f"DDPMUNet takes one time per image, shape ({x.shape[0]},); got shape "
                      f"{tuple(t.shape)}.")

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, train: bool = False) -> jax.Array:
    """x (B, H, W, C) noisy images, t (B,) integer times -> (B, H, W, C) float32."""
    self._check(x, t)
    dtype, channels = self.dtype, x.shape[-1]
    time_dim = self.time_dim or 4 * self.base
    temb = timestep_embedding(t, self.base)
    temb = nn.Dense(time_dim, dtype=dtype)(nn.swish(nn.Dense(time_dim, dtype=dtype)(temb)))
    block = lambda h, features: ResBlock(features, self.groups, dtype, self.conv_impl)(h, temb)
    conv = functools.partial(Conv, kernel_size=(3, 3), dtype=dtype, impl=self.conv_impl)

    h = conv(self.base)(x.astype(dtype))
    skips = [h]
    last = len(self.multipliers) - 1
    for level, mult in enumerate(self.multipliers):
      for _ in range(self.blocks):
        h = block(h, self.base * mult)
        skips.append(h)
      if level != last:
        h = conv(h.shape[-1], strides=(2, 2))(h)
        skips.append(h)
    h = block(block(h, h.shape[-1]), h.shape[-1])
    for level, mult in reversed(list(enumerate(self.multipliers))):
      for _ in range(self.blocks + 1):
        h = block(jnp.concatenate([h, skips.pop()], axis=-1), self.base * mult)
      if level != 0:
        b, height, width, c = h.shape
        h = jax.image.resize(h, (b, 2 * height, 2 * width, c), "nearest")
        h = conv(c)(h)
    h = nn.swish(GroupNorm(self.groups, dtype=dtype)(h))
    out = conv(channels, kernel_init=nn.initializers.zeros)(h)
    return out.astype(jnp.float32)
