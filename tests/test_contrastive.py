"""The contrastive losses (m2m_jax.ops.contrastive): against numpy references and a closed form,
their gradients against finite differences, 8 devices against 1, and the inputs they refuse."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, xla_flags
from m2m_jax.errors import DataError
from m2m_jax.ops import contrastive
from m2m_jax.ops.contrastive import clip_loss, l2_normalize, siglip_bias_init, siglip_loss

RTOL = 1e-5
# (log_scale, bias): t = 1, 10, 100 (CLIP's ceiling); bias 0, about -log B, SigLIP's -10.
SCALES_BIASES = [(0.0, 0.0), (math.log(10.0), -math.log(8.0)), (math.log(100.0), -10.0)]


def _pairs(batch: int, width: int, seed: int = 0, dtype=np.float32) -> tuple[np.ndarray, ...]:
  """Random L2-normalised (image, text) embeddings, (batch, width) each."""
  x = np.random.default_rng(seed).normal(size=(2, batch, width))
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  return x[0].astype(dtype), x[1].astype(dtype)


def _numpy_clip(image, text, log_scale) -> float:
  logits = np.exp(log_scale) * image.astype(np.float64) @ text.astype(np.float64).T
  diagonal = np.diag(logits)
  rows = np.log(np.sum(np.exp(logits), axis=1)) - diagonal
  cols = np.log(np.sum(np.exp(logits), axis=0)) - diagonal
  return 0.5 * (rows.mean() + cols.mean())


def _numpy_siglip(image, text, log_scale, bias) -> float:
  logits = np.exp(log_scale) * image.astype(np.float64) @ text.astype(np.float64).T + bias
  z = 2 * np.eye(len(image)) - 1
  return np.sum(np.log1p(np.exp(-z * logits))) / len(image)  # -log sigmoid(x) = log(1 + e^-x)


@pytest.mark.parametrize("log_scale, bias", SCALES_BIASES)
@pytest.mark.parametrize("batch", [2, 8])
def test_losses_match_numpy(batch, log_scale, bias):
  image, text = _pairs(batch, 16, seed=batch)
  s, b = np.float32(log_scale), np.float32(bias)
  clip, siglip = clip_loss(image, text, s), siglip_loss(image, text, s, b)
  assert clip.dtype == siglip.dtype == jnp.float32 and clip.shape == siglip.shape == ()
  np.testing.assert_allclose(clip, _numpy_clip(image, text, s), rtol=RTOL)
  np.testing.assert_allclose(siglip, _numpy_siglip(image, text, s, b), rtol=RTOL)


def _numpy_multi_positive(image, text, log_scale, bias, positives) -> tuple[float, float]:
  """Both losses written from the definition, with the diagonal and ``positives`` the matches:
  CLIP's targets spread evenly over each row's and each column's matches."""
  logits = np.exp(log_scale) * image.astype(np.float64) @ text.astype(np.float64).T
  match = positives | np.eye(len(image), dtype=bool)
  log_rows = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
  log_cols = logits - np.log(np.sum(np.exp(logits), axis=0, keepdims=True))
  rows = [-np.mean(log_rows[i, match[i]]) for i in range(len(image))]
  cols = [-np.mean(log_cols[match[:, j], j]) for j in range(len(image))]
  z = np.where(match, 1.0, -1.0)
  siglip = np.sum(np.log1p(np.exp(-z * (logits + bias)))) / len(image)
  return 0.5 * (np.mean(rows) + np.mean(cols)), siglip


@pytest.mark.parametrize("log_scale, bias", SCALES_BIASES)
def test_shared_captions_are_positives(log_scale, bias):
  """Texts 1 and 4 describe images 0 and 3 too (a caption shared); row 0's target is then 1/3
  on texts 0, 1 and 4, column 1's 1/2 on images 0 and 1, and SigLIP's z is +1 on those."""
  image, text = _pairs(6, 16, seed=3)
  positives = np.zeros((6, 6), bool)
  positives[0, [1, 4]] = positives[3, 4] = True
  s, b = np.float32(log_scale), np.float32(bias)
  clip, siglip = _numpy_multi_positive(image, text, s, b, positives)
  np.testing.assert_allclose(clip_loss(image, text, s, positives), clip, rtol=RTOL)
  np.testing.assert_allclose(siglip_loss(image, text, s, b, positives), siglip, rtol=RTOL)
  none = np.zeros((6, 6), bool)  # no shared caption: the diagonal alone, as without positives
  np.testing.assert_allclose(clip_loss(image, text, s, none), clip_loss(image, text, s),
                             rtol=RTOL)
  np.testing.assert_allclose(siglip_loss(image, text, s, b, none), siglip_loss(image, text, s, b),
                             rtol=RTOL)
  with pytest.raises(DataError, match=r"clip_loss: positives must be \(batch, batch\) = "
                                      r"\(6, 6\); got shape \(6, 5\)\."):
    clip_loss(image, text, s, positives[:, :5])


def test_two_orthogonal_pairs_give_the_closed_form():
  # image = text = (e1, e2): logits = t I. Each row and column is a 2-way softmax of (t, 0):
  # CLIP = log(1 + e^-t). SigLIP: each row has -log sigmoid(t + b) - log sigmoid(-b).
  eye = np.eye(2, dtype=np.float32)
  t, b = 2.0, -1.0
  np.testing.assert_allclose(clip_loss(eye, eye, np.log(t)), math.log1p(math.exp(-t)), rtol=RTOL)
  np.testing.assert_allclose(siglip_loss(eye, eye, np.log(t), b), 2 * math.log1p(math.exp(-1)),
                             rtol=RTOL)


def test_bfloat16_embeddings_give_the_float32_loss_of_their_values():
  image, text = _pairs(4, 8)
  image16, text16 = jnp.asarray(image, jnp.bfloat16), jnp.asarray(text, jnp.bfloat16)
  up = np.asarray(image16, np.float32), np.asarray(text16, np.float32)
  for loss, extra in ((clip_loss, ()), (siglip_loss, (-1.0,))):
    value = loss(image16, text16, 2.0, *extra)
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(value, loss(*up, 2.0, *extra), rtol=RTOL)


def test_losses_jit_and_take_a_scale_of_shape_one():
  image, text = _pairs(4, 8)
  s = np.array([2.0], np.float32)  # a (1,) parameter, as big_vision keeps its temperature
  np.testing.assert_allclose(jax.jit(clip_loss)(image, text, s), clip_loss(image, text, 2.0),
                             rtol=RTOL)
  np.testing.assert_allclose(jax.jit(siglip_loss)(image, text, s, s),
                             siglip_loss(image, text, 2.0, 2.0), rtol=RTOL)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_gradients_are_finite_and_equal_finite_differences(loss):
  image, text = _pairs(4, 6, seed=1)
  f = {"clip": lambda i, t, s: clip_loss(i, t, s),
       "siglip": lambda i, t, s: siglip_loss(i, t, s, -1.5)}[loss]
  # float32, at CLIP's ceiling t = 100 and with the matches already perfect: finite.
  for args in ((image, text, np.float32(math.log(100.0))), (image, image, np.float32(5.0))):
    grads = jax.grad(f, argnums=(0, 1, 2))(*args)
    assert all(np.isfinite(g).all() for g in grads)
  # float64 (in this block only): each gradient along random directions equals the central
  # difference (f(x + hv) - f(x - hv)) / 2h, whose error is about h^2 + 1e-16 / h.
  with jax.enable_x64(True):
    args = [jnp.asarray(image, jnp.float64), jnp.asarray(text, jnp.float64),
            jnp.asarray(math.log(10.0), jnp.float64)]
    grads = jax.grad(f, argnums=(0, 1, 2))(*args)
    assert all(g.dtype == jnp.float64 for g in grads)
    rng, h = np.random.default_rng(0), 1e-6
    for k, g in enumerate(grads):
      for _ in range(3):
        v = rng.normal(size=np.shape(args[k]))
        plus, minus = list(args), list(args)
        plus[k], minus[k] = args[k] + h * v, args[k] - h * v
        difference = (f(*plus) - f(*minus)) / (2 * h)
        np.testing.assert_allclose(np.vdot(g, v), difference, rtol=1e-6, atol=1e-9)


def test_l2_normalize():
  x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
  np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]], rtol=RTOL)
  image, _ = _pairs(3, 5)
  np.testing.assert_allclose(l2_normalize(7 * image.T, axis=0), image.T, rtol=RTOL)
  # A zero vector: finite value and gradient; the dtype is kept.
  assert np.isfinite(jax.grad(lambda x: l2_normalize(x).sum())(x)).all()
  assert l2_normalize(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16


def test_siglip_bias_init_predicts_the_positive_rate():
  for batch in (2, 8, 1024):
    np.testing.assert_allclose(jax.nn.sigmoid(siglip_bias_init(batch)), 1 / batch, rtol=RTOL)
  with pytest.raises(DataError, match=r"at least 2 pairs .*; got 1\."):
    siglip_bias_init(1)


E = np.zeros((4, 8), np.float32)
BAD = [
    ((E[0], E[0]), r"must be 2-D \(batch, width\); got shapes \(8,\) and \(8,\)"),
    ((E[None], E[None]), r"must be 2-D .* got shapes \(1, 4, 8\) and \(1, 4, 8\)"),
    ((E, E[:3]), r"the same \(batch, width\); got \(4, 8\) and \(3, 8\)"),
    ((E, E[:, :5]), r"the same \(batch, width\); got \(4, 8\) and \(4, 5\)"),
    ((E[:1], E[:1]), r"needs a batch of at least 2 pairs .*; got 1\."),
]


@pytest.mark.parametrize("embeddings, message", BAD)
@pytest.mark.parametrize("name", ["clip_loss", "siglip_loss"])
def test_bad_input_is_refused_in_one_sentence(name, embeddings, message):
  loss = getattr(contrastive, name)
  args = (*embeddings, 0.0) + ((0.0,) if name == "siglip_loss" else ())
  with pytest.raises(DataError, match=f"^{name}: .*{message}"):
    loss(*args)
  with pytest.raises(DataError, match=message):  # static shapes: refused under jit too
    jax.jit(loss)(*args)


def test_a_scale_or_bias_that_is_not_a_scalar_is_refused():
  image, text = _pairs(4, 8)
  with pytest.raises(DataError, match=r"clip_loss: log_scale must be a scalar; got shape \(4,\)"):
    clip_loss(image, text, np.zeros(4))
  with pytest.raises(DataError, match=r"siglip_loss: bias must be a scalar; got shape \(2, 2\)"):
    siglip_loss(image, text, 0.0, np.zeros((2, 2)))


# One process on 8 CPU devices: each loss and its gradients, jitted on a global batch of 16
# sharded over 'data', against the same jitted function on the unsharded arrays (one device);
# and the per-device loss (each device's 2 pairs contrasted only with each other, averaged).
EIGHT_DEVICES = """
import json, math
import jax, numpy as np
from jax.sharding import PartitionSpec as P
from m2m_jax import parallel
from m2m_jax.ops import contrastive as c

mesh = parallel.make_mesh()
x = np.random.default_rng(0).normal(size=(2, 16, 8)).astype(np.float32)
image, text = (np.asarray(c.l2_normalize(e)) for e in x)
scalars = {"clip": (np.float32(math.log(10.0)),),
           "siglip": (np.float32(math.log(10.0)), np.float32(c.siglip_bias_init(16)))}
losses = {"clip": c.clip_loss, "siglip": c.siglip_loss}
sharded = [jax.device_put(e, parallel.batch_sharded(mesh)) for e in (image, text)]
out = {"devices": len(sharded[0].sharding.device_set)}
for name, loss in losses.items():
  args = scalars[name]
  step = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(2 + len(args)))))
  (one, one_grads), (eight, eight_grads) = step(image, text, *args), step(*sharded, *args)
  per_device = jax.jit(jax.shard_map(
      lambda i, t, *a: jax.lax.pmean(loss(i, t, *a), "data"), mesh=mesh,
      in_specs=(P("data"), P("data")) + (P(),) * len(args), out_specs=P()))(*sharded, *args)
  out[name] = {"one": [float(one), *(np.asarray(g).tolist() for g in one_grads)],
               "eight": [float(eight), *(np.asarray(g).tolist() for g in eight_grads)],
               "grad_devices": len(eight_grads[0].sharding.device_set),
               "per_device": float(per_device)}
print(json.dumps(out))
"""


def test_eight_devices_see_the_global_batch():
  env = dict(os.environ, XLA_FLAGS=xla_flags(8), JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["devices"] == 8
  for name in ("clip", "siglip"):
    got = out[name]
    assert got["grad_devices"] == 8  # the embeddings' gradients stay sharded over 'data'
    for one, eight in zip(got["one"], got["eight"]):  # the loss, then each gradient
      np.testing.assert_allclose(eight, one, rtol=RTOL, atol=1e-7, err_msg=name)
    # Each device's 2 pairs see 1 negative instead of 15: another, easier objective.
    assert got["per_device"] < 0.9 * got["one"][0], (name, got["per_device"], got["one"][0])
