"""ops.conv and layers.Conv / ConvTranspose: the convolution with the weight gradient by per-tap
matmuls and the sub-pixel transposed convolution equal lax's, value and both gradients, for the
strides, kernel sizes and paddings the networks use; every conv model computes the same function
with either implementation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from m2m_jax import models
from m2m_jax.errors import ConfigError
from m2m_jax.models import layers
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
                                            (conv_lib.MIN_CHANNELS - 1, {}),
                                            (32, {"window_strides": (1, 1)}),
                                            (32, {"kernel": (4, 4)})])
def test_other_convolutions_go_to_lax(channels, extra):
  """Grouped, dilated, thin, stride-1 and 4x4 convolutions are lax's own (the same jaxpr); a
  plain strided 3x3 one is not."""
  extra = dict(extra)
  groups = extra.get("feature_group_count", 1)
  kernel = extra.pop("kernel", (3, 3))
  x, w = jnp.ones((1, 8, 8, channels)), jnp.ones((*kernel, channels // groups, 4))
  args = dict(window_strides=(2, 1), padding="SAME", dimension_numbers=conv_lib.NHWC)
  args.update(extra)
  ours = lambda x, w, **a: conv_lib.conv_general_dilated(x, w, **a)  # noqa: E731
  jaxpr = lambda f, **a: str(jax.make_jaxpr(functools.partial(f, **a))(x, w))  # noqa: E731
  assert jaxpr(ours, **args) == jaxpr(lax.conv_general_dilated, **args)
  if extra and "window_strides" not in extra and kernel == (3, 3):
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


TRANSPOSE_CASES = [(k, s, p) for k in (1, 2, 3, 4, 5) for s in (1, 2) for p in ("SAME", "VALID")
                   ] + [(4, 2, ((2, 2), (2, 2))), (3, 2, ((0, 1), (2, 0))), (3, 3, "SAME"),
                        (2, 3, ((1, 0), (0, 1)))]


@pytest.mark.parametrize("k,s,padding", TRANSPOSE_CASES)
def test_transposed_convolution_value_and_gradients_are_lax(k, s, padding):
  """The sub-pixel form against lax.conv_transpose, on odd sizes."""
  kx, kw, kg = jax.random.split(jax.random.key(k * 10 + s), 3)
  x = jax.random.normal(kx, (2, 5, 6, 3))
  w = jax.random.normal(kw, (k, k, 3, 4)) / k
  lax_t = lambda x, w: lax.conv_transpose(x, w, (s, s), padding,  # noqa: E731
                                          dimension_numbers=conv_lib.NHWC)
  y, vjp = jax.vjp(lambda x, w: conv_lib.conv_transpose(x, w, (s, s), padding), x, w)
  want, want_vjp = jax.vjp(lax_t, x, w)
  assert y.shape == want.shape
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  g = jax.random.normal(kg, y.shape)
  for got, expected in zip(jax.jit(vjp)(g), want_vjp(g)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_transposed_convolution_impulse_response():
  """A hand-computed case: the DCGAN's 4x4 stride-2 layer (PyTorch padding 1, lax's (2, 2)).
  Pixel (i, j)'s response is the kernel at rows 2i - 1 .. 2i + 2, columns 2j - 1 .. 2j + 2,
  rotated by 180 degrees (flax's convention; PyTorch's is unrotated)."""
  one = jnp.zeros((1, 4, 4, 1)).at[0, 1, 2, 0].set(1.0)
  kernel = jnp.arange(16.0).reshape(4, 4, 1, 1)
  layer = layers.ConvTranspose(1, (4, 4), (2, 2), padding=((2, 2), (2, 2)), use_bias=False,
                               impl="cpu")
  out = jax.jit(layer.apply)({"params": {"kernel": kernel}}, one)
  assert out.shape == (1, 8, 8, 1)
  np.testing.assert_array_equal(out[0, 1:5, 3:7, 0], kernel[::-1, ::-1, 0, 0])
  assert float(jnp.abs(out).sum()) == float(kernel.sum())


@pytest.mark.parametrize("module,kwargs", [
    (layers.Conv, dict(kernel_size=(3, 3), strides=2)),
    (layers.Conv, dict(kernel_size=(1, 1), use_bias=False)),
    (layers.ConvTranspose, dict(kernel_size=(4, 4), strides=(2, 2))),
    (layers.ConvTranspose, dict(kernel_size=(2, 2), strides=(2, 2), padding="VALID"))])
def test_layers_keep_flax_parameters_and_values(module, kwargs):
  """layers.Conv / ConvTranspose with impl 'cpu' and 'xla' have flax's parameter tree and
  initial values and compute flax's function and parameter gradients; 'xla' is flax's own
  program."""
  flax_module = {layers.Conv: nn.Conv, layers.ConvTranspose: nn.ConvTranspose}[module]
  x = jax.random.normal(jax.random.key(0), (2, 8, 6, conv_lib.MIN_CHANNELS))
  theirs = flax_module(5, **kwargs)
  variables = theirs.init(jax.random.key(1), x)
  loss = lambda m: lambda v: jnp.sum(jnp.sin(m.apply(v, x)))  # noqa: E731
  for impl in ("cpu", "xla"):
    ours = module(5, impl=impl, **kwargs)
    mine = ours.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, mine) == jax.tree.map(jnp.shape, variables)
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(variables)):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), rtol=1e-5,
                               atol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.grad(loss(ours))(variables)),
                    jax.tree.leaves(jax.grad(loss(theirs))(variables))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
  jaxpr = lambda m: str(jax.make_jaxpr(m.apply)(variables, x))  # noqa: E731
  assert jaxpr(module(5, impl="xla", **kwargs)) == jaxpr(theirs)
  assert jaxpr(module(5, impl="auto", **kwargs)) == jaxpr(module(5, impl="cpu", **kwargs))


def test_select_by_backend_and_bad_impl():
  assert conv_lib.select("auto") == ("cpu" if jax.default_backend() == "cpu" else "xla")
  assert [conv_lib.select(i) for i in ("cpu", "xla")] == ["cpu", "xla"]
  with pytest.raises(ConfigError, match="conv_impl 'gpu'; choose one of: auto, cpu, xla"):
    layers.Conv(4, (3, 3), impl="gpu")
  with pytest.raises(ConfigError, match="conv_impl"):
    models.get("unet")(conv_impl="fast").init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


# Every conv model with a strided convolution of MIN_CHANNELS inputs or a transposed one (where
# the two implementations differ; the CNNs' are the same program either way), tiny: (registry
# name, constructor arguments, call arguments' shapes).
CONV_MODELS = [
    ("resnet", dict(stage_sizes=(1, 1), width=16, stem="cifar"), [(2, 8, 8, 3)]),
    ("unet", dict(widths=(16, 32)), [(2, 8, 8, 1)]),
    ("vae", dict(image_shape=(8, 8, 1), widths=(16, 16), latent=4), [(2, 8, 8, 1)]),
    ("colorization_net", dict(width=4), [(2, 8, 8, 1)]),
    ("denoising_ae", dict(widths=(16, 16), bottleneck=4, channels=1), [(2, 8, 8, 1)]),
    ("dcgan", dict(size=16, channels=1, width=8, latent_dim=4), [(2, 4)]),
    ("ddpm_unet", dict(base=16, multipliers=(1, 2), groups=4), [(2, 8, 8, 1), (2,)]),
]


@pytest.mark.parametrize("name,kwargs,shapes", CONV_MODELS, ids=[m[0] for m in CONV_MODELS])
def test_every_conv_model_is_the_same_function_with_either_impl(name, kwargs, shapes):
  """The model with conv_impl 'cpu' has the parameter tree of 'xla' and, on those parameters,
  its output and parameter gradient."""
  args = [jnp.zeros(s, jnp.int32) if len(s) == 1 else
          jax.random.uniform(jax.random.key(i), s) for i, s in enumerate(shapes)]
  build = lambda impl: models.get(name)(conv_impl=impl, **kwargs)  # noqa: E731
  variables = build("xla").init(jax.random.key(0), *args)
  assert jax.tree.structure(build("cpu").init(jax.random.key(0), *args)) == \
      jax.tree.structure(variables)

  def loss(impl, params):
    out = build(impl).apply({**variables, "params": params}, *args, train=True,
                            mutable=["batch_stats"])[0]
    return sum(jnp.sum(jnp.sin(o)) for o in jax.tree.leaves(out)), out

  (_, want), want_grad = jax.value_and_grad(functools.partial(loss, "xla"), has_aux=True)(
      variables["params"])
  (_, got), got_grad = jax.jit(jax.value_and_grad(functools.partial(loss, "cpu"),
                                                  has_aux=True))(variables["params"])
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(b).max())))


@pytest.mark.parametrize("shape,window", [((2, 8, 6, 3), 2), ((1, 7, 9, 2), 2), ((2, 9, 9, 1), 3)])
def test_max_pool_is_flax_max_pool(shape, window):
  """layers.max_pool equals nn.max_pool (VALID, stride = window, odd sizes cropped alike), and so
  does its gradient on inputs without ties."""
  x = jax.random.normal(jax.random.key(0), shape)
  theirs = lambda x: nn.max_pool(x, (window, window), strides=(window, window))  # noqa: E731
  np.testing.assert_array_equal(layers.max_pool(x, window), theirs(x))
  g = jax.random.normal(jax.random.key(1), theirs(x).shape)
  grad = lambda f: jax.vjp(f, x)[1](g)[0]  # noqa: E731
  np.testing.assert_array_equal(grad(lambda x: layers.max_pool(x, window)), grad(theirs))


@pytest.mark.parametrize("name,kwargs", [("cnn", dict(features=(16, 16), dense=8)),
                                         ("simple_cnn", dict(channels=16))])
def test_cnns_are_one_program_with_either_impl(name, kwargs):
  """The CNNs have no strided convolution of MIN_CHANNELS inputs: 'cpu' and 'xla' give the same
  program (traced, not compiled)."""
  x = jnp.zeros((2, 28, 28, 1))
  build = lambda impl: models.get(name)(conv_impl=impl, **kwargs)  # noqa: E731
  variables = build("xla").init(jax.random.key(0), x)
  jaxpr = lambda impl: str(jax.make_jaxpr(jax.grad(  # noqa: E731
      lambda v: jnp.sum(build(impl).apply(v, x))))(variables))
  assert jaxpr("cpu") == jaxpr("xla")
