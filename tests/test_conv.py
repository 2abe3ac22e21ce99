"""ops.conv: the convolution with the weight gradient by per-tap matmuls equals lax's, value and
both gradients, for the strides, kernel sizes and paddings the networks use."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from m2m_jax.ops import conv as conv_lib

CASES = [(k, s, p) for k in (1, 2, 3, 4, 5) for s in (1, 2) for p in ("SAME", "VALID")] + [
    (3, 1, ((1, 1), (1, 1))), (4, 2, ((1, 1), (1, 1))), (3, 2, ((0, 1), (2, 0))),
    (5, 2, ((2, 2), (2, 2))), (3, 1, ((-1, 2), (0, 0)))]


def _lax(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=conv_lib.NHWC)


@pytest.mark.parametrize("k,s,padding", CASES)
def test_value_and_gradients_are_lax(k, s, padding):
  kx, kw, kg = jax.random.split(jax.random.key(k * 10 + s), 3)
  x = jax.random.normal(kx, (2, 11, 9, 3))
  w = jax.random.normal(kw, (k, k, 3, 5)) / k
  y, vjp = jax.vjp(lambda x, w: conv_lib.conv(x, w, (s, s), padding), x, w)
  want, want_vjp = jax.vjp(lambda x, w: _lax(x, w, (s, s), padding), x, w)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, y.shape)
  for got, expected in zip(jax.jit(vjp)(g), want_vjp(g)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_rectangular_kernels_and_strides_under_jit():
  x = jax.random.normal(jax.random.key(0), (3, 10, 12, 4))
  w = jax.random.normal(jax.random.key(1), (3, 2, 4, 6))

  def loss(f, w):
    return jnp.sum(jnp.sin(f(x, w, (2, 1), "SAME")))

  got = jax.jit(jax.grad(lambda w: loss(conv_lib.conv, w)))(w)
  np.testing.assert_allclose(got, jax.grad(lambda w: loss(_lax, w))(w), rtol=1e-5, atol=1e-5)


def test_flax_conv_keeps_its_parameters_and_values():
  """nn.Conv with conv_general_dilated=ops.conv's: flax's parameter tree, the same outputs and
  parameter gradients as flax's own."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, conv_lib.MIN_CHANNELS))
  ours = nn.Conv(4, (3, 3), strides=2, conv_general_dilated=conv_lib.conv_general_dilated)
  theirs = nn.Conv(4, (3, 3), strides=2)
  variables = theirs.init(jax.random.key(1), x)
  assert jax.tree.structure(ours.init(jax.random.key(1), x)) == jax.tree.structure(variables)
  grad = lambda m: jax.grad(lambda v: jnp.sum(m.apply(v, x) ** 2))(variables)  # noqa: E731
  np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), rtol=1e-5,
                             atol=1e-6)
  for a, b in zip(jax.tree.leaves(grad(ours)), jax.tree.leaves(grad(theirs))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels,extra", [(32, {"feature_group_count": 2}),
                                            (32, {"rhs_dilation": (2, 2)}),
                                            (conv_lib.MIN_CHANNELS - 1, {})])
def test_other_convolutions_go_to_lax(channels, extra):
  """Grouped, dilated and thin convolutions are lax's own (the same jaxpr); a plain one is not."""
  groups = extra.get("feature_group_count", 1)
  x, w = jnp.ones((1, 8, 8, channels)), jnp.ones((3, 3, channels // groups, 4))
  args = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=conv_lib.NHWC, **extra)
  ours = lambda x, w, **a: conv_lib.conv_general_dilated(x, w, **a)  # noqa: E731
  jaxpr = lambda f, **a: str(jax.make_jaxpr(functools.partial(f, **a))(x, w))  # noqa: E731
  assert jaxpr(ours, **args) == jaxpr(lax.conv_general_dilated, **args)
  if extra:
    plain = dict(args, **{k: (1 if k == "feature_group_count" else (1, 1)) for k in extra})
    plain_w = jnp.ones((3, 3, channels, 4))
    assert "custom_vjp" in str(jax.make_jaxpr(functools.partial(ours, **plain))(x, plain_w))


def test_bfloat16_gradients_keep_the_dtype():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3), jnp.bfloat16)
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4), jnp.bfloat16)
  dx, dw = jax.grad(lambda x, w: jnp.sum(conv_lib.conv(x, w).astype(jnp.float32)),
                    argnums=(0, 1))(x, w)
  assert dx.dtype == dw.dtype == jnp.bfloat16
  want = jax.grad(lambda w: jnp.sum(_lax(x.astype(jnp.float32), w, (1, 1), "SAME")))(
      w.astype(jnp.float32))
  np.testing.assert_allclose(dw.astype(jnp.float32), want, rtol=2e-2, atol=0.1)
