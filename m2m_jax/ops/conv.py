"""Convolutions for XLA:CPU: a 2-D convolution whose weight gradient is a matmul a kernel tap,
and a transposed convolution without the dilated input; drop-ins for ``lax``.

XLA:CPU computes a convolution's forward pass and its input gradient about as fast as PyTorch,
but its weight gradient, another convolution whose window is the whole output, more slowly. The
weight gradient of ``y = conv(x, W)`` (NHWC input, HWIO kernel, strides s) is, per kernel tap
(i, j), one matrix product over every batch position::

  dW[i, j] = sum_{n, p, q} xpad[n, s_h p + i, s_w q + j, :]^T  dy[n, p, q, :]     (C_in, C_out)

the shifted, strided view of the padded input against the output gradient: ``kh * kw`` matmuls of
(C_in, N P Q) by (N P Q, C_out). :func:`conv` keeps ``lax``'s forward pass and input gradient
(its transpose) and computes the weight gradient so; the values are ``lax``'s to float rounding.

Which is faster depends on the layer (``bench/conv.py``; one thread, batch 128): for a strided
3 x 3 convolution the taps win (32 x 32, 16 -> 32, stride 2: 9 ms against XLA's 13-15); with
more taps (4 x 4, stride 2: 12 against 10) or at stride 1 copying each tap's view out of the
input costs what the matmuls save or more (32 x 32, 16 -> 16: 52 ms against 26-28; 14 x 14,
32 -> 64: 20 against 27-30), and thin inputs lose (28 x 28, 1 -> 32: 15 against 4-5).
:func:`conv_general_dilated` so takes the taps for strided 2-D convolutions of at most
``MAX_TAPS`` taps and at least ``MIN_CHANNELS`` input channels, channels last, one feature
group, no dilation, and sends everything else to ``lax.conv_general_dilated`` unchanged.

A transposed convolution of stride s (``lax.conv_transpose``) is a convolution of the input
dilated by s zeros, which XLA:CPU runs slowly and its gradients very slowly (2.0-2.2 s for the
gradients of a 4 x 4, stride-2 layer from 8 x 8 x 128 to 16 x 16 x 64 at batch 128, where
PyTorch takes 45-48 ms). :func:`conv_transpose` computes it without the zeros (a *sub-pixel*
convolution): output row ``s m + a`` (phase a) takes only the kernel taps j = s d + low - a,
from input rows m + d, so each phase is a plain stride-1 convolution of the undilated input with
a part of the kernel (about 65 ms for that layer), and a depth-to-space and a crop lay the
phases out.

:func:`select` names the implementation: ``'xla'`` (``lax`` as is), ``'cpu'`` (the two above) or
``'auto'``, ``'cpu'`` when JAX's default backend is the CPU and ``'xla'`` on GPU and TPU.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from m2m_jax.errors import choose

NHWC = ("NHWC", "HWIO", "NHWC")
MIN_CHANNELS = 16
MAX_TAPS = 9
IMPLS = ("auto", "cpu", "xla")


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
  """``lax.conv_general_dilated``'s signature: :func:`conv` for a strided 2-D NHWC / HWIO
  convolution of at most ``MAX_TAPS`` taps and at least ``MIN_CHANNELS`` input channels with one
  group and no dilation (what flax's ``nn.Conv`` passes for 2-D inputs), ``lax`` otherwise (the
  module docstring says why)."""
  plain = (lhs.ndim == 4 and lhs.shape[-1] >= MIN_CHANNELS and _is_nhwc(dimension_numbers)
           and max(window_strides) > 1 and rhs.shape[0] * rhs.shape[1] <= MAX_TAPS
           and feature_group_count == 1 and batch_group_count == 1
           and preferred_element_type is None
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1))))
  if plain:
    return conv(lhs, rhs, window_strides, padding)
  return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                  dimension_numbers, feature_group_count, batch_group_count,
                                  precision, preferred_element_type)


def transpose_pads(kernel_size: Sequence[int], strides: Sequence[int],
                   padding: str | Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
  """The (low, high) padding of the dilated input that ``lax.conv_transpose`` (and flax's
  ``nn.ConvTranspose``) apply: for 'SAME' and 'VALID' those of the forward convolution it
  transposes, explicit pairs as given."""
  if not isinstance(padding, str):
    return tuple((int(lo), int(hi)) for lo, hi in padding)
  pads = []
  for k, s in zip(kernel_size, strides):
    if padding == "SAME":
      total = k + s - 2
      low = k - 1 if s > k - 1 else -(-total // 2)
    elif padding == "VALID":
      total, low = k + s - 2 + max(k - s, 0), k - 1
    else:
      choose("transposed convolution padding", padding, ("SAME", "VALID"))
    pads.append((low, total - low))
  return tuple(pads)


def _phase_taps(k: int, s: int, low: int) -> list[tuple[list[int], int]]:
  """Along one axis, for each output phase a (rows s m + a): the kernel taps j it takes, which
  meet input rows m + d for d = (j + a - low) / s, in ascending order, and the first such d."""
  phases = []
  for a in range(s):
    taps = [j for j in range(k) if (j + a - low) % s == 0]
    phases.append((taps, (taps[0] + a - low) // s if taps else 0))
  return phases


def conv_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                   padding: str | Sequence[tuple[int, int]] = "SAME") -> jax.Array:
  """``lax.conv_transpose(x, kernel, strides, padding, dimension_numbers=NHWC)`` for x
  (N, H, W, C_in) and kernel (kh, kw, C_in, C_out), computed in sub-pixel form: output phase
  (a, b), the pixels (s_h m + a, s_w n + b), is a stride-1 convolution of x with the taps of the
  kernel that phase takes; phases that take as many taps from the same rows and columns (all of
  them when the kernel size is the stride) share one convolution, their kernels side by side.
  The phases are then interleaved (depth-to-space) and cropped. Equal to ``lax``'s to float
  rounding."""
  strides = tuple(int(s) for s in strides)
  pads = transpose_pads(kernel.shape[:2], strides, padding)
  n, h, w, _ = x.shape
  c_out = kernel.shape[-1]
  sizes = [(size - 1) * s + lo + hi - k + 2
           for size, s, (lo, hi), k in zip((h, w), strides, pads, kernel.shape[:2])]
  rows = [-(-size // s) for size, s in zip(sizes, strides)]
  axes = [[(taps, (-first, m - 1 + len(taps) - size + first)) for taps, first in
           _phase_taps(k, s, lo)] for k, s, (lo, _), m, size in
          zip(kernel.shape[:2], strides, pads, rows, (h, w))]
  groups: dict = {}
  for a, (taps_h, pad_h) in enumerate(axes[0]):
    for b, (taps_w, pad_w) in enumerate(axes[1]):
      if taps_h and taps_w:
        groups.setdefault((len(taps_h), len(taps_w), pad_h, pad_w), []).append((a, b))
  phases = {}
  for (_, _, pad_h, pad_w), members in groups.items():
    stacked = jnp.concatenate([kernel[np.array(axes[0][a][0])][:, np.array(axes[1][b][0])]
                               for a, b in members], axis=-1)
    y = lax.conv_general_dilated(x, stacked, (1, 1), (pad_h, pad_w), dimension_numbers=NHWC)
    phases.update(zip(members, jnp.split(y, len(members), axis=-1)))
  zeros = jnp.zeros((n, rows[0], rows[1], c_out), x.dtype)
  y = jnp.stack([jnp.stack([phases.get((a, b), zeros) for b in range(strides[1])], 3)
                 for a in range(strides[0])], 2)  # (N, M_h, s_h, M_w, s_w, C_out)
  return y.reshape(n, rows[0] * strides[0], rows[1] * strides[1], c_out)[:, :sizes[0], :sizes[1]]


def select(impl: str) -> str:
  """'cpu' or 'xla' for ``impl`` in :data:`IMPLS`: 'auto' is 'cpu' when JAX's default backend
  is the CPU, 'xla' otherwise."""
  choose("conv_impl", impl, IMPLS)
  if impl == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
  return impl
