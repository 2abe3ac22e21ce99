"""Convolutional autoencoders: a residual colorizer and a denoiser.

Both halve the resolution with stride-2 3x3 convolutions and double it back with stride-2 3x3
transposed convolutions. Along one axis a convolution maps size n to ``floor((n + 2p - k) / s) + 1``
and a transposed convolution maps n to ``s n`` with 'SAME' padding, so three of each take
H -> H/8 -> H, which is why H and W must be multiples of 8.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from m2m_jax.errors import ConfigError, choose
from m2m_jax.models.layers import Conv, ConvTranspose, batch_norm, check_images
from m2m_jax.models.resnet import BasicBlock

OUTPUTS = {"lab": 2, "rgb": 3}  # output channels of each ColorizationNet head


class ColorizationNet(nn.Module):
  """The original residual colorizer, with its bugs fixed; w = ``width`` (64 in the original).

  grey (H, W, 1) -> BasicBlock w -> conv s2 2w (H/2) -> conv s2 4w (H/4) -> BasicBlock 8w
  -> conv s2 16w (H/8) -> convT s2 8w (H/4) -> convT s2 4w (H/2) -> convT s2 2w (H)
  -> conv1x1 w -> ReLU -> conv1x1 -> the head. Every conv and convT but the 1x1s is followed by
  BatchNorm and ReLU. The original's fixes: no dead grayscale branch; a ReLU between the two
  1x1 maps (two linear maps in a row are one linear map); a bounded head. The Lab head starts
  at zero, so the untrained network answers zero chroma: exactly the grey image, the baseline.

  Attributes:
    width: channels of the first block; the original's 64 gives 15.0M parameters.
    output: ``'lab'`` predicts the two chroma channels (a, b) / 110 through tanh, in (-1, 1);
      ``'rgb'`` predicts RGB through a sigmoid, in (0, 1) (the original's head, unbounded there).
    zero_init_residual: start each block's last BatchNorm scale at 0; False, as the original
      (PyTorch initialises BatchNorm scales to 1). Both blocks change the width, so their
      shortcut is a 1x1 projection and neither starts as the identity either way.
    conv_impl: the convolutions' implementation, 'auto', 'cpu' or 'xla'
      (:class:`m2m_jax.models.layers.Conv`).
  """

  width: int = 64
  output: str = "lab"
  zero_init_residual: bool = False
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: (B, H, W, 1) grey in [0, 1], H and W multiples of 8 -> (B, H, W, 2) for ``'lab'`` or
    (B, H, W, 3) for ``'rgb'``."""
    choose("ColorizationNet output", self.output, OUTPUTS)
    check_images(x, 1, 8, "ColorizationNet")
    w, dtype = self.width, self.dtype
    norm = batch_norm(train, dtype)
    block = functools.partial(BasicBlock, zero_init_residual=self.zero_init_residual, dtype=dtype,
                              conv_impl=self.conv_impl)
    conv = functools.partial(Conv, dtype=dtype, impl=self.conv_impl)

    def down(h, features):
      return nn.relu(norm()(conv(features, (3, 3), (2, 2))(h)))

    def up(h, features):
      return nn.relu(norm()(ConvTranspose(features, (3, 3), (2, 2), dtype=dtype,
                                          impl=self.conv_impl)(h)))

    h = block(w)(x.astype(dtype), train)
    h = down(h, 2 * w)
    h = down(h, 4 * w)
    h = block(8 * w)(h, train)
    h = down(h, 16 * w)
    for features in (8 * w, 4 * w, 2 * w):
      h = up(h, features)
    h = nn.relu(conv(w, (1, 1))(h))
    lab = self.output == "lab"
    init = nn.initializers.zeros if lab else nn.linear.default_kernel_init
    h = conv(OUTPUTS[self.output], (1, 1), kernel_init=init)(h)
    return jnp.tanh(h) if lab else nn.sigmoid(h)


class DenoisingAE(nn.Module):
  """The original convolutional denoising autoencoder, with an optional undercomplete code.

  encoder: [conv3x3 s2 -> ReLU] for each of ``widths`` (H -> H/8 with three), then, when
  ``bottleneck`` is set, a linear 1x1 convolution to ``bottleneck`` channels: the code.
  decoder: [convT3x3 s2 -> ReLU] back through the reversed widths, the last convT to the input's
  channels with a sigmoid. The code holds (H/2^d)(W/2^d) times its channel count numbers: the
  original's 4x4x256 = 4,096 for a 32x32x3 = 3,072 image, more than the input, so nothing
  forced it to compress; ``bottleneck=16`` holds 256, a twelfth of it.

  Attributes:
    widths: encoder channels, halving the resolution at each (the original's (64, 128, 256)).
    bottleneck: code channels of an undercomplete code, or None for the original (the last
      encoder map is the code).
    channels: input (and output) channels.
    conv_impl: the convolutions' implementation, 'auto', 'cpu' or 'xla'
      (:class:`m2m_jax.models.layers.Conv`).
  """

  widths: Sequence[int] = (64, 128, 256)
  bottleneck: int | None = None
  channels: int = 3
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  def setup(self):
    if not self.widths or min(self.widths) < 1:
      raise ConfigError(f"DenoisingAE widths must be positive channel counts; got {self.widths}.")
    if self.bottleneck is not None and self.bottleneck < 1:
      raise ConfigError(f"DenoisingAE bottleneck must be a positive channel count or None; got "
                        f"{self.bottleneck}.")
    conv = functools.partial(Conv, dtype=self.dtype, impl=self.conv_impl)
    conv_t = functools.partial(ConvTranspose, kernel_size=(3, 3), strides=(2, 2),
                               dtype=self.dtype, impl=self.conv_impl)
    self.down = [conv(f, (3, 3), (2, 2)) for f in self.widths]
    self.code = None if self.bottleneck is None else conv(self.bottleneck, (1, 1))
    self.up = [conv_t(f) for f in reversed(self.widths[:-1])] + [conv_t(self.channels)]

  def encode(self, x: jnp.ndarray) -> jnp.ndarray:
    """x: (B, H, W, channels) in [0, 1] -> code (B, H / 2^d, W / 2^d, c), d = len(widths)."""
    check_images(x, self.channels, 2 ** len(self.widths), "DenoisingAE")
    h = x.astype(self.dtype)
    for conv in self.down:
      h = nn.relu(conv(h))
    return h if self.code is None else self.code(h)

  def decode(self, code: jnp.ndarray) -> jnp.ndarray:
    """code (B, h, w, c) -> image (B, 2^d h, 2^d w, channels) in (0, 1)."""
    h = code
    for conv_t in self.up[:-1]:
      h = nn.relu(conv_t(h))
    return nn.sigmoid(self.up[-1](h))

  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: (B, H, W, channels), H and W multiples of 2^len(widths) -> reconstruction, same shape."""
    return self.decode(self.encode(x))
