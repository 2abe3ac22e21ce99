"""The from-scratch MLP: hand backprop vs jax.grad, hand Adam vs optax, real training, bad input."""

import functools
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from m2m_jax import configlib, train
from m2m_jax.algorithms import classifier
from m2m_jax.algorithms import mlp_scratch as mlp
from m2m_jax.errors import ConfigError, DataError

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _config(name: str, preset: str | None = None) -> ml_collections.ConfigDict:
  path = os.path.join(CONFIGS, f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"{name}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def _mean_loss(params, x, y, activation):
  return mlp.softmax_cross_entropy(mlp.forward(params, x, activation)[0], y)[0].mean()


@functools.partial(jax.jit, static_argnums=3)
def _backward_and_grads(params, x, y, activation):
  """The hand-written backward pass and jax.grad's, in one program (not op by op)."""
  logits, cache = mlp.forward(params, x, activation)
  losses, dlogits = mlp.softmax_cross_entropy(logits, y)
  ce_grad = jax.grad(lambda z: mlp.softmax_cross_entropy(z, y)[0].mean())(logits)
  return (logits, losses, dlogits, ce_grad, mlp.backward(params, cache, dlogits),
          jax.grad(_mean_loss)(params, x, y, activation))


@pytest.mark.parametrize("activation", sorted(mlp.ACTIVATIONS))
@pytest.mark.parametrize("sizes, batch", [((5, 3), 4), ((7, 16, 4), 9), ((12, 32, 16, 10), 33)])
def test_backward_equals_jax_grad(activation: str, sizes: tuple[int, ...], batch: int):
  kp, kx, ky = jax.random.split(jax.random.key(sum(sizes) + batch), 3)
  params = mlp.init_params(kp, sizes)
  params = [(w, b + 0.1 * jax.random.normal(kx, b.shape)) for w, b in params]  # non-zero biases
  x = jax.random.normal(kx, (batch, sizes[0]))
  y = jax.random.randint(ky, (batch,), 0, sizes[-1])
  logits, losses, dlogits, ce_grad, hand, auto = _backward_and_grads(params, x, y, activation)
  assert jax.tree.structure(hand) == jax.tree.structure(auto)
  for h, a in zip(jax.tree.leaves(hand), jax.tree.leaves(auto)):
    assert h.shape == a.shape
    np.testing.assert_allclose(h, a, atol=1e-5, rtol=0)
  np.testing.assert_allclose(losses, optax.softmax_cross_entropy_with_integer_labels(logits, y),
                             atol=1e-6)
  np.testing.assert_allclose(dlogits, ce_grad, atol=1e-7)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
  logits = jnp.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
  losses, dlogits = mlp.softmax_cross_entropy(logits, jnp.array([1, 2]))
  np.testing.assert_allclose(losses, [1000.0, np.log(3.0)], rtol=1e-6)
  np.testing.assert_allclose(dlogits, [[0.5, -0.5, 0.0], [1 / 6, 1 / 6, -1 / 3]], atol=1e-7)


def test_forward_shapes_and_he_init():
  params = mlp.init_params(jax.random.key(0), (64, 512, 10))
  assert [(w.shape, b.shape) for w, b in params] == [((64, 512), (512,)), ((512, 10), (10,))]
  np.testing.assert_allclose(params[0][0].std(), np.sqrt(2 / 64), rtol=0.03)
  assert not any(b.any() for _, b in params)
  logits, (inputs, slopes) = mlp.forward(params, jnp.ones((3, 8, 8, 1)))
  assert logits.shape == (3, 10) and [h.shape for h in inputs] == [(3, 64), (3, 512)]
  assert [s.shape for s in slopes] == [(3, 512)]


@pytest.mark.parametrize("lr", [1e-2, optax.cosine_decay_schedule(3e-2, 100)])
def test_adam_matches_optax_on_a_fixed_gradient_sequence(lr):
  # Jitted, as in train_step and in optax: 1 - 0.999^t keeps only ~4 digits in float32 at small
  # t, and XLA's fused pow rounds 0.999^t differently from the eager one-op pow.
  params = mlp.init_params(jax.random.key(0), (6, 5, 3))
  scale = lambda t: 10.0 ** (t % 4 - 2)  # gradients of 0.01 to 10: Adam must not care
  grads = [jax.tree.map(lambda p, k=jax.random.key(t): scale(t) * jax.random.normal(k, p.shape),
                        params) for t in range(100)]
  tx, update = optax.adam(lr), jax.jit(mlp.adam_update)
  mine, ours, theirs, opt = params, mlp.adam_init(params), params, tx.init(params)
  for g in grads:  # the schedule at the step count, as optax and mlp_scratch.train_step take it
    mine, ours = update(g, ours, mine, lr(ours.count) if callable(lr) else lr)
    updates, opt = tx.update(g, opt, theirs)
    theirs = optax.apply_updates(theirs, updates)
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
      np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  assert int(ours.count) == 100
  for a, b in zip(jax.tree.leaves((ours.mu, ours.nu)), jax.tree.leaves((opt[0].mu, opt[0].nu))):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


def test_adam_matches_optax_minimising_a_quadratic():
  target = jax.random.normal(jax.random.key(1), (4, 3))
  grad = lambda p: [(p[0][0] - target, 2 * p[0][1])]  # of 0.5 |W - target|^2 + |b|^2
  params = [(jnp.zeros((4, 3)), jnp.ones((3,)))]
  tx, update = optax.adam(0.05), jax.jit(mlp.adam_update)
  mine, ours, theirs, opt = params, mlp.adam_init(params), params, tx.init(params)
  for _ in range(100):
    mine, ours = update(grad(mine), ours, mine, 0.05)
    updates, opt = tx.update(grad(theirs), opt, theirs)
    theirs = optax.apply_updates(theirs, updates)
  for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
  np.testing.assert_allclose(mine[0][0], target, atol=0.05)


def _short(**overrides) -> ml_collections.ConfigDict:
  c = _config("mlp_scratch")
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 200, 50, 100, 100
  c.update(overrides)
  return c


def test_short_training_on_digits(tmp_path):
  config = _short()
  summary = train.train_and_evaluate(config, str(tmp_path))
  sizes = (64, *config.model.hidden, 10)
  assert summary["test"]["accuracy"] >= 0.95  # 0.969-0.975 over seeds 0-4
  assert summary["test"]["loss"] < 0.2  # 0.09-0.11
  with open(tmp_path / "metrics.jsonl") as f:
    train_losses = [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]
  assert len(train_losses) == 4 and train_losses[0] > 2 * train_losses[-1]
  assert summary["num_params"] == sum(m * n + n for m, n in zip(sizes[:-1], sizes[1:]))
  assert {"curves.png", "confusion.png"} <= set(os.listdir(tmp_path / "figures"))


def test_flax_mlp_config_builds_the_same_network():
  scratch, flax_mlp = _config("mlp_scratch"), _config("mlp")
  assert flax_mlp.model.hidden == scratch.model.hidden
  for field in ("dataset", "optimizer", "learning_rate", "schedule", "batch_size", "num_epochs"):
    assert flax_mlp[field] == scratch[field], field
  batch = {"x": np.zeros((2, 8, 8, 1), np.float32), "y": np.zeros(2, np.int32)}
  scratch.num_classes = flax_mlp.num_classes = 10
  count = lambda state: sum(np.size(p) for p in jax.tree.leaves(state.params))
  assert count(mlp.init(scratch, jax.random.key(0), batch)) == count(
      classifier.init(flax_mlp, jax.random.key(0), batch))


@pytest.mark.parametrize("preset", ["default", "mnist5k", "mnist", "seed"])
def test_presets_validate(preset: str):
  for name in ("mlp_scratch", "mlp"):
    configlib.validate(_config(name, preset), num_devices=1)


def test_label_out_of_range_is_refused():
  c = _config("mlp_scratch")
  c.num_classes = 10
  batch = {"x": np.zeros((2, 8, 8, 1), np.float32), "y": np.array([3, 10], np.int32)}
  with pytest.raises(DataError, match=r"labels must lie in \[0, 10\), got 3..10"):
    mlp.init(c, jax.random.key(0), batch)


@pytest.mark.parametrize("field, value, message", [
    ("model.hidden", (64, 0), "model.hidden must be positive integer widths"),
    ("model.hidden", (64.5,), "model.hidden must be positive integer widths"),
    ("model.activation", "gelu", "unknown activation 'gelu'"),
    ("optimizer", "sgd", "mlp_scratch implements Adam only"),
    ("dtype", "bfloat16", "float32 only"),
])
def test_bad_config_is_refused(field: str, value, message: str):
  c = _config("mlp_scratch")
  if field.startswith("model."):
    c.model[field[len("model."):]] = value
  else:
    c[field] = value
  with pytest.raises(ConfigError, match=message):
    configlib.validate(c, num_devices=1)
