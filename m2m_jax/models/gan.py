"""DCGAN (Radford, Metz and Chintala, 2016): a transposed-convolution generator and a
convolutional discriminator, the seed's layout generalised over the image size.

The seed's 32x32 layout (w = ``width``, 64 there), written with the size after each layer:

  generator      z (100) -> convT 4x4 -> 8w @ 4x4 -> convT s2 -> 4w @ 8x8 -> convT s2 -> 2w @ 16x16
                 -> convT s2 -> C @ 32x32 -> tanh     (BatchNorm + ReLU after every hidden layer)
  discriminator  x @ 32x32 -> conv s2 -> 2w @ 16x16 (LeakyReLU 0.2, no BatchNorm) -> conv s2
                 -> 4w @ 8x8 -> conv s2 -> 8w @ 4x4 (BatchNorm + LeakyReLU 0.2) -> conv 4x4 valid
                 -> 1 logit

Every strided layer has a 4x4 kernel and padding 1 (PyTorch's), so a stride-2 convolution maps
n to ``floor((n + 2 - 4) / 2) + 1 = n / 2`` for even n and a stride-2 transposed convolution maps
n back to 2n (:func:`_upsample`). For another size S, ``layout(S)`` halves S while it is
even and above 4: 32 -> 4 in three halvings (the seed's), 28 -> 7 in two (MNIST), 16 -> 4 in two
(digits upsampled 2x). With k halvings down to s, the generator maps z to 2^k w channels at
s x s (the seed's transposed convolution with an s x s kernel on a 1x1 input, which is a dense
layer and computed as one), then doubles the resolution k times with 2^(k-1) w, ..., 2w, C
channels; the discriminator mirrors it, 2w, ..., 2^k w channels from S down to s, then an s x s
valid convolution to one logit. Weights start as N(0, 0.02) and BatchNorm scales as N(1, 0.02),
the DCGAN paper's initialisation; only layers without a BatchNorm after them carry a bias.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from m2m_jax.errors import DataError
from m2m_jax.models.layers import Conv, ConvTranspose, batch_norm

LATENT_DIM = 100  # the seed's noise dimension
weight_init = nn.initializers.normal(0.02)


def scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """BatchNorm scales drawn from N(1, 0.02) (the DCGAN initialisation)."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def layout(size: int) -> tuple[int, int]:
  """``(s, k)``: the resolution s the networks reach from ``size`` by k halvings, halving while
  the size is even and above 4 (32 -> (4, 3), 28 -> (7, 2), 16 -> (4, 2)); refuses a size that
  cannot be halved once."""
  s, k = size, 0
  while s % 2 == 0 and s > 4:
    s, k = s // 2, k + 1
  if k == 0:
    raise DataError(f"DCGAN halves the image size at least once, down to 4 or an odd size, so it "
                    f"needs an even size above 4; got {size}.")
  return s, k


def _upsample(features: int, dtype, impl: str, use_bias: bool = True) -> ConvTranspose:
  """A 4x4 transposed convolution of stride 2 and PyTorch's padding 1 (lax's (2, 2)): (B, H, W,
  C) -> (B, 2H, 2W, features)."""
  return ConvTranspose(features, (4, 4), (2, 2), padding=((2, 2), (2, 2)), use_bias=use_bias,
                       kernel_init=weight_init, dtype=dtype, impl=impl)


def _norm(train: bool, dtype) -> nn.BatchNorm:
  return batch_norm(train, dtype, scale_init=scale_init)()


class Generator(nn.Module):
  """z (B, latent_dim) -> images (B, size, size, channels) in (-1, 1) (see the module docstring).

  Attributes:
    size: height and width of the images.
    channels: image channels C.
    width: w; the hidden widths are 2^k w, ..., 2w for k = ``layout(size)[1]``.
    conv_impl: the transposed convolutions' implementation (:class:`m2m_jax.models.layers.Conv`).
  """

  size: int = 32
  channels: int = 3
  width: int = 64
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if z.ndim != 2:
      raise DataError(f"Generator takes noise of shape (B, latent_dim); got shape "
                      f"{tuple(z.shape)}.")
    s, k = layout(self.size)
    h = nn.Dense(s * s * 2 ** k * self.width, use_bias=False, kernel_init=weight_init,
                 dtype=self.dtype)(z.astype(self.dtype))
    h = nn.relu(_norm(train, self.dtype)(h.reshape(z.shape[0], s, s, 2 ** k * self.width)))
    for i in range(k - 1, 0, -1):
      h = _upsample(2 ** i * self.width, self.dtype, self.conv_impl, use_bias=False)(h)
      h = nn.relu(_norm(train, self.dtype)(h))
    h = _upsample(self.channels, self.dtype, self.conv_impl)(h)
    return jnp.tanh(h).astype(jnp.float32)


class Discriminator(nn.Module):
  """Images (B, S, S, C) in [-1, 1] -> logits (B,) of "real" (see the module docstring).

  Attributes:
    width: w; the widths are 2w, ..., 2^k w for k = ``layout(S)[1]``.
    conv_impl: the convolutions' implementation (:class:`m2m_jax.models.layers.Conv`).
  """

  width: int = 64
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
      raise DataError(f"Discriminator takes square images of shape (B, S, S, C); got shape "
                      f"{tuple(x.shape)}.")
    s, k = layout(x.shape[1])
    conv = functools.partial(Conv, kernel_size=(4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                             kernel_init=weight_init, dtype=self.dtype, impl=self.conv_impl)
    h = nn.leaky_relu(conv(2 * self.width)(x.astype(self.dtype)), 0.2)
    for i in range(2, k + 1):
      h = nn.leaky_relu(_norm(train, self.dtype)(conv(2 ** i * self.width, use_bias=False)(h)), 0.2)
    h = conv(1, kernel_size=(s, s), strides=(1, 1), padding="VALID")(h)
    return h.reshape(x.shape[0]).astype(jnp.float32)


class DCGAN(nn.Module):
  """The generator and the discriminator as one module with two methods, so each has its own
  parameters (``{'generator': ...}`` and ``{'discriminator': ...}``), trained apart.

  ``init(key, z, method='generate')`` creates the generator's variables only, and
  ``init(key, x, method='discriminate')`` the discriminator's.

  Attributes:
    size, channels: the images' height and width, and channels.
    width: w of both networks (the seed's CIFAR-10 DCGAN: 64).
    latent_dim: length of the noise z.
    conv_impl: the convolutions' implementation, 'auto', 'cpu' or 'xla'
      (:class:`m2m_jax.models.layers.Conv`).
  """

  size: int = 32
  channels: int = 3
  width: int = 64
  latent_dim: int = LATENT_DIM
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  def setup(self):
    self.generator = Generator(self.size, self.channels, self.width, self.dtype, self.conv_impl)
    self.discriminator = Discriminator(self.width, self.dtype, self.conv_impl)

  def generate(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """z (B, latent_dim) -> images (B, size, size, channels) in (-1, 1)."""
    return self.generator(z, train)

  def discriminate(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Images (B, size, size, channels) in [-1, 1] -> logits (B,)."""
    if x.shape[1:] != (self.size, self.size, self.channels):
      raise DataError(f"this DCGAN was built for images of shape ({self.size}, {self.size}, "
                      f"{self.channels}); got shape {tuple(x.shape[1:])}.")
    return self.discriminator(x, train)

  def __call__(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """D(G(z)): logits (B,)."""
    return self.discriminate(self.generate(z, train), train)
