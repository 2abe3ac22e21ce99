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
n back to 2n (:class:`ConvTranspose2x`). For another size S, ``layout(S)`` halves S while it is
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
import numpy as np

from m2m_jax.errors import DataError
from m2m_jax.models.layers import batch_norm

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


# PHASES[a, t, k] = 1 when output phase a (even 0 / odd 1) takes kernel tap k from the input at
# offset t - 1: out[2m] = x[m-1] K[0] + x[m] K[2] and out[2m+1] = x[m] K[1] + x[m+1] K[3].
PHASES = np.zeros((2, 3, 4), np.float32)
PHASES[0, 0, 0] = PHASES[0, 1, 2] = PHASES[1, 1, 1] = PHASES[1, 2, 3] = 1.0


class ConvTranspose2x(nn.Module):
  """A 4x4 transposed convolution with stride 2 and PyTorch padding 1: (B, H, W, Cin) ->
  (B, 2H, 2W, features); the same function as ``nn.ConvTranspose(features, (4, 4), (2, 2),
  padding=((2, 2), (2, 2)))`` with the same kernel (4, 4, Cin, features).

  Computed by its phase decomposition: along each axis the even outputs take taps 0 and 2 of the
  kernel, the odd ones taps 1 and 3 (``PHASES``), so one 3x3 stride-1 convolution to 4 x features
  channels (one group per phase pair) followed by a depth-to-space gives all four phases. On a
  CPU its gradient is about 3x faster than XLA's transposed convolution, which dilates the input
  with zeros first.
  """

  features: int
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    cin = x.shape[-1]
    kernel = self.param("kernel", weight_init, (4, 4, cin, self.features), jnp.float32)
    k3 = jnp.einsum("atk,bsl,klio->tsiabo", PHASES, PHASES, kernel)
    k3 = k3.reshape(3, 3, cin, 4 * self.features).astype(self.dtype)
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), k3, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    b, h, w, _ = y.shape
    y = y.reshape(b, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(b, 2 * h, 2 * w, self.features)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


def _norm(train: bool, dtype) -> nn.BatchNorm:
  return batch_norm(train, dtype, scale_init=scale_init)()


class Generator(nn.Module):
  """z (B, latent_dim) -> images (B, size, size, channels) in (-1, 1) (see the module docstring).

  Attributes:
    size: height and width of the images.
    channels: image channels C.
    width: w; the hidden widths are 2^k w, ..., 2w for k = ``layout(size)[1]``.
  """

  size: int = 32
  channels: int = 3
  width: int = 64
  dtype: jnp.dtype = jnp.float32

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
      h = ConvTranspose2x(2 ** i * self.width, use_bias=False, dtype=self.dtype)(h)
      h = nn.relu(_norm(train, self.dtype)(h))
    return jnp.tanh(ConvTranspose2x(self.channels, dtype=self.dtype)(h)).astype(jnp.float32)


class Discriminator(nn.Module):
  """Images (B, S, S, C) in [-1, 1] -> logits (B,) of "real" (see the module docstring).

  Attributes:
    width: w; the widths are 2w, ..., 2^k w for k = ``layout(S)[1]``.
  """

  width: int = 64
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
      raise DataError(f"Discriminator takes square images of shape (B, S, S, C); got shape "
                      f"{tuple(x.shape)}.")
    s, k = layout(x.shape[1])
    conv = functools.partial(nn.Conv, kernel_size=(4, 4), strides=(2, 2),
                             padding=((1, 1), (1, 1)), kernel_init=weight_init, dtype=self.dtype)
    h = nn.leaky_relu(conv(2 * self.width)(x.astype(self.dtype)), 0.2)
    for i in range(2, k + 1):
      h = nn.leaky_relu(_norm(train, self.dtype)(conv(2 ** i * self.width, use_bias=False)(h)), 0.2)
    h = nn.Conv(1, (s, s), padding="VALID", kernel_init=weight_init, dtype=self.dtype)(h)
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
  """

  size: int = 32
  channels: int = 3
  width: int = 64
  latent_dim: int = LATENT_DIM
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.generator = Generator(self.size, self.channels, self.width, self.dtype)
    self.discriminator = Discriminator(self.width, self.dtype)

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
