"""U-Net (Ronneberger et al. 2015): an encoder that halves the resolution, a decoder that
doubles it back, and skip connections that hand each decoder level the encoder's map of the
same size.

Output size along one axis, input n, kernel k, padding p, stride s:
  convolution            out = floor((n + 2p - k) / s) + 1   (3x3, p = 1, s = 1: out = n)
  max pooling 2x2, s 2   out = floor(n / 2)
  transposed convolution out = (n - 1) s - 2p + k            (2x2, p = 0, s = 2: out = 2n)
so each level keeps the size through its convolutions, and the decoder's up-sampling lands
exactly on the encoder's size when every pooling halves an even size: H and W must be
multiples of 2**depth. The skips bring back the fine detail that pooling threw away; the
decoder only has to decide which of those edges belong to the object.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from m2m_jax.errors import ConfigError
from m2m_jax.models.layers import Conv, ConvTranspose, batch_norm, check_images, max_pool


class DoubleConv(nn.Module):
  """[conv3x3 -> BatchNorm -> ReLU] twice: (B, H, W, C) -> (B, H, W, features)."""

  features: int
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    conv = functools.partial(Conv, self.features, (3, 3), use_bias=False, dtype=self.dtype,
                             impl=self.conv_impl)
    norm = batch_norm(train, self.dtype)
    x = nn.relu(norm()(conv()(x)))
    return nn.relu(norm()(conv()(x)))


class UNet(nn.Module):
  """U-Net with two conv-BN-ReLU per level; the logits of ``out_channels`` masks, no sigmoid.

  With widths (w_0, ..., w_D): encoder levels w_0 .. w_{D-1}, each a DoubleConv followed by a
  2x2 max pool, the bottleneck w_D at 1/2**D of the input size, and decoder levels
  w_{D-1} .. w_0, each a 2x2 stride-2 transposed convolution, the encoder map of that level
  concatenated on the channels, and a DoubleConv; a 1x1 convolution gives the logits.

  Attributes:
    widths: channels of each level, the last one the bottleneck; depth D = len(widths) - 1
      poolings. (64, 128, 256, 512, 1024) is the paper's network.
    out_channels: number of masks (1 for foreground / background).
    in_channels: the input channels the network is built for (None: whatever ``init`` sees).
    dtype: compute dtype; parameters stay float32.
    conv_impl: the convolutions' implementation, 'auto', 'cpu' or 'xla'
      (:class:`m2m_jax.models.layers.Conv`).
  """

  widths: Sequence[int] = (16, 32, 64)
  out_channels: int = 1
  in_channels: int | None = None
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: (B, H, W, C), H and W multiples of 2**depth -> logits (B, H, W, out_channels)."""
    if not self.widths or min(self.widths) < 1 or self.out_channels < 1:
      raise ConfigError(f"U-Net needs at least one positive width and out_channels >= 1; got "
                        f"widths {tuple(self.widths)}, out_channels {self.out_channels}.")
    *levels, bottleneck = self.widths
    check_images(x, self.in_channels, 2 ** len(levels), "U-Net")
    h, skips = x.astype(self.dtype), []
    for i, width in enumerate(levels):
      h = DoubleConv(width, self.dtype, self.conv_impl, name=f"down{i}")(h, train)
      skips.append(h)
      h = max_pool(h, 2)
    h = DoubleConv(bottleneck, self.dtype, self.conv_impl, name="bottleneck")(h, train)
    for i in reversed(range(len(levels))):
      h = ConvTranspose(levels[i], (2, 2), strides=(2, 2), padding="VALID", dtype=self.dtype,
                        impl=self.conv_impl, name=f"up{i}")(h)
      h = DoubleConv(levels[i], self.dtype, self.conv_impl, name=f"dec{i}")(
          jnp.concatenate([skips[i], h], axis=-1), train)
    return Conv(self.out_channels, (1, 1), dtype=self.dtype, impl=self.conv_impl,
                name="head")(h)
