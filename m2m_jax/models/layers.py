"""Building blocks shared by the model families: input checks and normalisation layers.

Every model file takes these from here rather than from another family's file, so that a
change to, say, BatchNorm's momentum is one change everywhere.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from m2m_jax.errors import DataError


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


def batch_norm(train: bool, dtype: jnp.dtype, **kwargs):
  """torchvision's BatchNorm as a layer factory: running statistics with momentum 0.9 (PyTorch's
  0.1), epsilon 1e-5; batch statistics when ``train``, the running ones otherwise."""
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                           epsilon=1e-5, dtype=dtype, **kwargs)
