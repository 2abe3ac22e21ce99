"""Convolutional classifiers.

Output size of a convolution or pooling along one axis, for input n, kernel k, padding p and
stride s: ``floor((n + 2p - k) / s) + 1``.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from m2m_jax.models.layers import Conv, check_images, max_pool


class CNN(nn.Module):
  """The flax/examples MNIST shape: [conv3x3(f) -> ReLU -> avgpool2]* -> dense -> ReLU -> dense.

  Attributes:
    features: output channels of each conv block (default conv32, conv64).
    dense: width of the hidden dense layer.
    num_classes: number of logits.
    dtype: compute dtype; parameters stay float32.
    conv_impl: the convolutions' implementation, 'auto', 'cpu' or 'xla'
      (:class:`m2m_jax.models.layers.Conv`).
  """

  features: Sequence[int] = (32, 64)
  dense: int = 256
  num_classes: int = 10
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: (B, H, W, C) with H and W divisible by 2**len(features) -> logits (B, num_classes)."""
    check_images(x, None, 2 ** len(self.features), "CNN")
    h = x.astype(self.dtype)
    for f in self.features:
      h = nn.relu(Conv(f, (3, 3), dtype=self.dtype, impl=self.conv_impl)(h))
      h = nn.avg_pool(h, (2, 2), strides=(2, 2))
    h = h.reshape(h.shape[0], -1)
    h = nn.relu(nn.Dense(self.dense, dtype=self.dtype)(h))
    self.sow("intermediates", "features", h)  # (B, dense): the Fréchet distance's features
    return nn.Dense(self.num_classes, dtype=self.dtype)(h)


class SimpleCNN(nn.Module):
  """The original Math2Model ``SimpleCNN`` (622 parameters on 28x28x1, 10 classes).

  conv 1->4 k5 s2 (28 -> 12), ReLU, maxpool 2 (-> 6), conv 4->4 k3 p1 (-> 6), ReLU,
  maxpool 2 (-> 3), flatten 36, linear 36 -> 10. ``conv_impl``: as :class:`CNN`'s.
  """

  channels: int = 4
  num_classes: int = 10
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: (B, H, W, C) -> logits (B, num_classes)."""
    check_images(x, None, 1, "SimpleCNN")
    h = x.astype(self.dtype)
    conv = functools.partial(Conv, self.channels, dtype=self.dtype, impl=self.conv_impl)
    h = nn.relu(conv((5, 5), strides=(2, 2), padding="VALID")(h))
    h = max_pool(h, 2)
    h = nn.relu(conv((3, 3), padding=((1, 1), (1, 1)))(h))
    h = max_pool(h, 2)
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(self.num_classes, dtype=self.dtype)(h)
