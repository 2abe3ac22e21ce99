"""The convolutional variational autoencoder: an encoder q(z | x) and a decoder p(x | z).

The encoder halves the resolution with stride-2 4x4 convolutions (ReLU after each), flattens
the last map and maps it with two linear heads to the mean and the log-variance of a diagonal
Gaussian over the latent code. The decoder mirrors it: a linear map from the code to the last
map, then stride-2 4x4 transposed convolutions back to the image, the last one linear. Along
one axis a 'SAME' stride-2 convolution maps n to ceil(n / 2) and a transposed one maps n to 2n,
so d of each return H only when H is a multiple of 2^d: 28x28 takes d <= 2, 16x16 d <= 4,
32x32 d <= 5.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models.layers import Conv, ConvTranspose, check_images


class VAE(nn.Module):
  """The original VAE (widths (32, 64, 128), latent 20 on 32x32x3: 456,043 parameters).

  encoder: x (B, H, W, C) -> [conv4x4 s2 -> ReLU] per width -> flatten (B, h w widths[-1])
  -> linear heads -> mean, logvar (B, latent); h = H / 2^d, w = W / 2^d, d = len(widths).
  decoder: z (B, latent) -> linear -> (B, h, w, widths[-1]) -> ReLU -> [convT4x4 s2 -> ReLU]
  through the reversed widths -> convT4x4 s2 to C channels, linear: (B, H, W, C) logits. The
  pixel mean is ``sigmoid(logits)``, in (0, 1): the Bernoulli parameter, or the Gaussian mean.

  Attributes:
    image_shape: (H, W, C) of the images; H and W multiples of 2^len(widths).
    widths: encoder channels, halving the resolution at each (the original's (32, 64, 128)).
    latent: dimension of the code z (the original's 20).
    learn_scale: add a parameter ``log_scale`` (C,), the log standard deviation of a Gaussian
      likelihood per channel (starting at log 0.1); the model itself never uses it.
    conv_impl: the convolutions' implementation, 'auto', 'cpu' or 'xla'
      (:class:`m2m_jax.models.layers.Conv`).
  """

  image_shape: Sequence[int] = (32, 32, 3)
  widths: Sequence[int] = (32, 64, 128)
  latent: int = 20
  learn_scale: bool = False
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  def setup(self):
    if not self.widths or min(self.widths) < 1:
      raise ConfigError(f"VAE widths must be positive channel counts; got {tuple(self.widths)}.")
    if self.latent < 1:
      raise ConfigError(f"VAE latent must be a positive dimension; got {self.latent}.")
    height, width, channels = self.image_shape
    check_images(jnp.zeros((1, height, width, channels)), channels, 2 ** len(self.widths), "VAE")
    conv = dict(kernel_size=(4, 4), strides=(2, 2), padding="SAME", dtype=self.dtype,
                impl=self.conv_impl)
    self.down = [Conv(f, **conv) for f in self.widths]
    self.mean_head = nn.Dense(self.latent, dtype=self.dtype)
    self.logvar_head = nn.Dense(self.latent, dtype=self.dtype)
    self.base = (height >> len(self.widths), width >> len(self.widths), self.widths[-1])
    self.expand = nn.Dense(self.base[0] * self.base[1] * self.base[2], dtype=self.dtype)
    self.up = ([ConvTranspose(f, **conv) for f in reversed(self.widths[:-1])]
               + [ConvTranspose(channels, **conv)])
    if self.learn_scale:
      self.log_scale = self.param("log_scale", nn.initializers.constant(jnp.log(0.1)),
                                  (channels,))

  def encode(self, x: jnp.ndarray, train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """x: (B, H, W, C) in [0, 1] -> (mean, logvar), each (B, latent) float32."""
    check_images(x, self.image_shape[-1], 2 ** len(self.widths), "VAE")
    if tuple(x.shape[1:]) != tuple(self.image_shape):
      raise DataError(f"VAE was built for images of shape {tuple(self.image_shape)}; got "
                      f"{tuple(x.shape[1:])}.")
    h = x.astype(self.dtype)
    for conv in self.down:
      h = nn.relu(conv(h))
    h = h.reshape(h.shape[0], -1)
    return (self.mean_head(h).astype(jnp.float32), self.logvar_head(h).astype(jnp.float32))

  def decode(self, z: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """z: (B, latent) -> pixel logits (B, H, W, C) float32."""
    h = nn.relu(self.expand(z.astype(self.dtype))).reshape(z.shape[0], *self.base)
    for conv_t in self.up[:-1]:
      h = nn.relu(conv_t(h))
    return self.up[-1](h).astype(jnp.float32)

  def __call__(self, x: jnp.ndarray, train: bool = False):
    """x: (B, H, W, C) -> (logits of the decoded posterior mean (B, H, W, C), mean, logvar
    (B, latent)): the deterministic pass, which also creates every parameter."""
    mean, logvar = self.encode(x)
    return self.decode(mean), mean, logvar
