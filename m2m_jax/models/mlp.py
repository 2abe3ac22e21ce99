"""Multilayer perceptron: h_{l+1} = act(h_l W_l + b_l), logits = h_L W_L + b_L."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """An MLP classifier on flattened inputs.

  Attributes:
    hidden: widths of the hidden layers.
    num_classes: number of output logits.
    activation: ``'relu'``, ``'sigmoid'`` or ``'tanh'``.
    dtype: compute dtype; parameters stay float32.
  """

  hidden: Sequence[int] = (128, 64)
  num_classes: int = 10
  activation: str = "relu"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: (B, ...) -> logits (B, num_classes)."""
    act = {"relu": nn.relu, "sigmoid": nn.sigmoid, "tanh": jnp.tanh}[self.activation]
    h = x.reshape(x.shape[0], -1).astype(self.dtype)
    for width in self.hidden:
      h = act(nn.Dense(width, dtype=self.dtype, kernel_init=nn.initializers.he_normal())(h))
    return nn.Dense(self.num_classes, dtype=self.dtype)(h)


class Linear(nn.Module):
  """A linear model on flattened inputs: logits = x W + b (multinomial logistic regression)."""

  num_classes: int = 10
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: (B, ...) -> logits (B, num_classes)."""
    h = x.reshape(x.shape[0], -1).astype(self.dtype)
    return nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
