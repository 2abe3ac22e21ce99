"""A 2-D convolution whose weight gradient is fast on XLA:CPU, a drop-in for
``lax.conv_general_dilated`` (and flax's ``nn.Conv(conv_general_dilated=...)``).

XLA:CPU computes a convolution's forward pass and its input gradient about as fast as PyTorch,
but its weight gradient, another convolution whose window is the whole output, 2.6 to 4 times
slower. The weight gradient of ``y = conv(x, W)`` (NHWC input, HWIO kernel, strides s) is, per
kernel tap (i, j), one matrix product over every batch position::

  dW[i, j] = sum_{n, p, q} xpad[n, s_h p + i, s_w q + j, :]^T  dy[n, p, q, :]     (C_in, C_out)

the shifted, strided view of the padded input against the output gradient: ``kh * kw`` matmuls of
(C_in, N P Q) by (N P Q, C_out), which XLA:CPU runs at PyTorch's speed. :func:`conv` keeps
``lax``'s forward pass and input gradient (its transpose) and computes the weight gradient so;
the values are ``lax``'s to float rounding.

It covers the convolutions of the project's networks: 2-D, channels last, one feature group,
no dilation. :func:`conv_general_dilated` sends anything else, and inputs of fewer than
``MIN_CHANNELS`` channels (a first layer on grey images, where a tap's matmul is too thin: 6.0 ms
against XLA's 3.4 for 28 x 28, 1 -> 32 at batch 128), to ``lax.conv_general_dilated`` unchanged.
``bench/conv.py`` times the three (XLA, per-tap, PyTorch).
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")
MIN_CHANNELS = 16


def _pads(x_shape, k_shape, strides, padding) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(x_shape[1:3], k_shape[:2], strides, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
          pads: tuple[tuple[int, int], ...]) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=NHWC)


def _conv_fwd(x, kernel, strides, pads):
  return _conv(x, kernel, strides, pads), (x, kernel)


def kernel_gradient(x: jax.Array, dy: jax.Array, kernel_size: tuple[int, int],
                    strides: tuple[int, int], pads: Sequence[tuple[int, int]]) -> jax.Array:
  """dL/dW (kh, kw, C_in, C_out) of ``y = conv(x, W)`` from x (N, H, W, C_in) and dL/dy
  (N, P, Q, C_out): a matmul a kernel tap (the module docstring's sum)."""
  (kh, kw), (sh, sw) = kernel_size, strides
  n, p, q, c_out = dy.shape
  c_in = x.shape[-1]
  padded = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0),
                                               (0, 0, 0)))
  rows = dy.reshape(n * p * q, c_out)
  taps = [lax.slice(padded, (0, i, j, 0), (n, i + (p - 1) * sh + 1, j + (q - 1) * sw + 1, c_in),
                    (1, sh, sw, 1)).reshape(n * p * q, c_in)
          for i in range(kh) for j in range(kw)]
  grads = [lax.dot_general(t, rows, (((0,), (0,)), ((), ())),
                           preferred_element_type=jnp.float32) for t in taps]
  return jnp.stack(grads).reshape(kh, kw, c_in, c_out)


def _conv_bwd(strides, pads, residuals, dy):
  x, kernel = residuals
  forward = functools.partial(lax.conv_general_dilated, rhs=kernel, window_strides=strides,
                              padding=pads, dimension_numbers=NHWC)
  dx, = jax.linear_transpose(forward, x)(dy)
  dw = kernel_gradient(x, dy, kernel.shape[:2], strides, pads)
  return dx, dw.astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
         padding: str | Sequence[tuple[int, int]] = "SAME") -> jax.Array:
  """x (N, H, W, C_in) convolved with kernel (kh, kw, C_in, C_out) -> (N, P, Q, C_out), as
  ``lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC)``, with the
  weight gradient by per-tap matmuls (:func:`kernel_gradient`). ``padding``: 'SAME', 'VALID' or
  ((top, bottom), (left, right))."""
  strides = tuple(int(s) for s in strides)
  return _conv(x, kernel, strides, _pads(x.shape, kernel.shape, strides, padding))


def _is_nhwc(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  return tuple(dimension_numbers) == NHWC


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None) -> jax.Array:
  """``lax.conv_general_dilated``'s signature: :func:`conv` for a 2-D NHWC / HWIO convolution
  of at least ``MIN_CHANNELS`` input channels with one group and no dilation (what flax's
  ``nn.Conv`` passes for 2-D inputs), ``lax`` otherwise."""
  plain = (lhs.ndim == 4 and lhs.shape[-1] >= MIN_CHANNELS and _is_nhwc(dimension_numbers)
           and feature_group_count == 1 and batch_group_count == 1
           and preferred_element_type is None
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1))))
  if plain:
    return conv(lhs, rhs, window_strides, padding)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, batch_group_count,
                                  precision, preferred_element_type)
