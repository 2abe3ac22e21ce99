"""ops/optim.py: schedules against PyTorch's schedulers and by hand, AdamW's weight-decay mask
against torch.optim.AdamW with a no-decay parameter group, clipping, per-part recipes, label
smoothing against torch's cross-entropy, the parameters' EMA by hand, and the dropout key that nets.apply hands a model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from m2m_jax import configlib
from m2m_jax.algorithms import nets
from m2m_jax.errors import ConfigError
from m2m_jax.ops import optim


def _config(**fields) -> ml_collections.ConfigDict:
  config = configlib.base()
  config.update({"num_steps": 100, "learning_rate": 0.1, **fields})
  return config


def _torch_rates(scheduler_fn, steps: int, lr: float = 0.1) -> np.ndarray:
  opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
  scheduler, rates = scheduler_fn(opt), []
  for _ in range(steps):
    rates.append(opt.param_groups[0]["lr"])
    opt.step()
    scheduler.step()
  return np.array(rates)


def test_step_schedule_is_pytorchs_step_lr():
  rates = optim.schedule(_config(schedule="step", decay_every=30, decay_factor=0.1))
  expected = _torch_rates(lambda o: torch.optim.lr_scheduler.StepLR(o, 30, gamma=0.1), 100)
  np.testing.assert_allclose([rates(t) for t in range(100)], expected, rtol=1e-6)


def test_cosine_is_pytorchs_cosine_annealing():
  rates = optim.schedule(_config(schedule="cosine"))
  expected = _torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 100), 100)
  np.testing.assert_allclose([rates(t) for t in range(100)], expected, rtol=1e-5, atol=1e-8)


def test_warmup_rises_linearly_then_the_schedule_runs_over_the_rest():
  linear = optim.schedule(_config(schedule="linear", warmup_steps=10))
  np.testing.assert_allclose([linear(t) for t in (0, 5, 10, 55, 100)],
                             [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-7)
  constant = optim.schedule(_config(schedule="constant", warmup_steps=4))
  np.testing.assert_allclose([constant(t) for t in (0, 1, 4, 99)], [0.0, 0.025, 0.1, 0.1],
                             atol=1e-7)
  cosine = optim.schedule(_config(schedule="warmup_cosine", warmup_steps=10))
  np.testing.assert_allclose([cosine(t) for t in (5, 10, 55, 100)],
                             [0.05, 0.1, 0.05, 0.0], atol=1e-7)


@pytest.mark.parametrize("fields,message", [
    ({"schedule": "exponential"}, "unknown schedule 'exponential'"),
    ({"schedule": "step"}, "the step schedule needs decay_every > 0; got 0"),
    ({"warmup_steps": 100}, r"warmup_steps 100 must lie in \[0, num_steps = 100\)"),
    ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
])
def test_bad_recipes_are_refused(fields, message):
  with pytest.raises(ConfigError, match=message):
    optim.optimizer(_config(**fields))


def test_negative_clipping_is_refused_by_validate():
  config = configlib.load("mlp")
  config.grad_clip_norm = -1.0
  with pytest.raises(ConfigError, match="grad_clip_norm must be >= 0"):
    configlib.validate(config, 1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4])
def test_cross_entropy_smooths_labels_as_torch(smoothing):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
  labels = rng.integers(0, 5, size=6)
  expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels),
                                               reduction="none", label_smoothing=smoothing)
  loss = optim.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), smoothing)
  np.testing.assert_allclose(loss, expected.numpy(), rtol=1e-5, atol=1e-6)
  by_hand = -((1 - smoothing) * jax.nn.log_softmax(logits)[np.arange(6), labels]
              + smoothing * jax.nn.log_softmax(logits).mean(-1))
  np.testing.assert_allclose(loss, by_hand, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_of_target_distributions_equals_pytorch(smoothing):
  """Mixed-up labels: rows of a distribution over the K classes."""
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
  targets = rng.dirichlet(np.ones(5), size=6).astype(np.float32)
  expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(targets),
                                               reduction="none", label_smoothing=smoothing)
  loss = optim.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), smoothing)
  np.testing.assert_allclose(loss, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_label_smoothing_out_of_range_is_refused():
  config = configlib.load("cnn")
  config.label_smoothing = 1.0
  with pytest.raises(ConfigError, match=r"label_smoothing must lie in \[0, 1\); got 1.0"):
    configlib.validate(config, 1)
  with pytest.raises(ValueError, match="label_smoothing must lie in"):
    optim.cross_entropy(jnp.zeros((1, 3)), jnp.zeros(1, jnp.int32), -0.1)


def test_params_ema_averages_the_parameters_each_update_leads_to():
  np.testing.assert_allclose([optim.ema_decay_at(0, 0.999), optim.ema_decay_at(90, 0.999),
                              optim.ema_decay_at(10**6, 0.999)], [0.1, 0.91, 0.999], rtol=1e-6)
  tx = optim.with_ema(optim.optimizer(_config(optimizer="sgd", learning_rate=0.5)), 0.6)
  assert tx is optim.with_ema(optim.optimizer(_config(optimizer="sgd", learning_rate=0.5)), 0.6)
  params = {"w": jnp.array([1.0, -2.0])}
  state, ema = tx.init(params), np.array([1.0, -2.0])
  np.testing.assert_array_equal(optim.ema_params(state)["w"], ema)
  for n, grad in enumerate([[2.0, 0.0], [-4.0, 2.0], [1.0, 1.0]], start=1):
    updates, state = tx.update({"w": jnp.array(grad)}, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(updates["w"], -0.5 * np.array(grad))  # passed through
    d = min(0.6, (1 + n) / (10 + n))  # 0.18, 0.25, 0.31
    ema = d * ema + (1 - d) * np.asarray(params["w"])
    np.testing.assert_allclose(optim.ema_params(state)["w"], ema, rtol=1e-6)


PARAMS = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
          "LayerNorm_0": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
          "Embed_0": {"embedding": jnp.ones((10, 4))},
          "pos_embedding": jnp.ones((1, 5, 4)),
          "Conv_0": {"kernel": jnp.ones((3, 3, 1, 2))}}


def test_decay_mask_keeps_matrices_and_kernels_only():
  mask = optim.decay_mask(PARAMS)
  assert mask == {"Dense_0": {"kernel": True, "bias": False},
                  "LayerNorm_0": {"scale": False, "bias": False},
                  "Embed_0": {"embedding": False}, "pos_embedding": False,
                  "Conv_0": {"kernel": True}}


def test_adamw_decays_what_the_mask_says_as_torch_adamw_with_a_no_decay_group():
  rng = np.random.default_rng(0)
  w, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)
  grads = [(rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32))
           for _ in range(5)]
  tx = optim.optimizer(_config(optimizer="adamw", learning_rate=0.01, weight_decay=0.1))
  params = {"Dense_0": {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}}
  state = tx.init(params)
  tw, tb = torch.nn.Parameter(torch.tensor(w)), torch.nn.Parameter(torch.tensor(b))
  opt = torch.optim.AdamW([{"params": [tw], "weight_decay": 0.1},
                           {"params": [tb], "weight_decay": 0.0}], lr=0.01)
  for gw, gb in grads:
    updates, state = tx.update({"Dense_0": {"kernel": gw, "bias": gb}}, state, params)
    params = optax.apply_updates(params, updates)
    tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
    opt.step()
  np.testing.assert_allclose(params["Dense_0"]["kernel"], tw.detach().numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(params["Dense_0"]["bias"], tb.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_clipping_scales_the_gradient_to_the_global_norm():
  tx = optim.optimizer(_config(optimizer="sgd", learning_rate=1.0, grad_clip_norm=1.0))
  grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}  # global norm 5
  updates, _ = tx.update(grads, tx.init(grads))
  np.testing.assert_allclose(updates["a"], [-0.6, 0.0], rtol=1e-6)
  np.testing.assert_allclose(updates["b"], [-0.8], rtol=1e-6)
  small = {"a": jnp.array([0.3, 0.0]), "b": jnp.array([0.4])}  # under the norm: untouched
  updates, _ = tx.update(small, tx.init(small))
  np.testing.assert_allclose(updates["b"], [-0.4], rtol=1e-6)


def test_per_part_recipes_freeze_and_slow_down_their_parts():
  config = _config(optimizer="sgd", learning_rate=1.0)
  tx = optim.per_part(config, lambda path: path[0],
                      {"backbone": {"learning_rate": 0.1}, "head": {}, "frozen": None})
  params = {"backbone": jnp.ones(2), "head": jnp.ones(2), "frozen": jnp.ones(2)}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["backbone"], [-0.1, -0.1], rtol=1e-6)
  np.testing.assert_allclose(updates["head"], [-1.0, -1.0], rtol=1e-6)
  np.testing.assert_allclose(updates["frozen"], [0.0, 0.0])


def test_per_part_refuses_an_unknown_part_or_field():
  config = _config()
  with pytest.raises(ConfigError, match="part 'head' overrides \\['momentum'\\]"):
    optim.per_part(config, lambda path: path[0], {"head": {"momentum": 0.5}})
  tx = optim.per_part(config, lambda path: path[0], {"head": {}})
  with pytest.raises(ConfigError, match="parameter backbone is in part 'backbone'"):
    tx.init({"backbone": jnp.ones(2)})


def test_equal_recipes_are_one_object():
  assert optim.optimizer(_config()) is optim.optimizer(_config())


class _Dropout(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    return nn.Dropout(0.5, deterministic=not train)(nn.Dense(8)(x))


def test_nets_apply_gives_the_model_its_dropout_key():
  model, x = _Dropout(), jnp.ones((4, 8))
  variables = model.init(jax.random.key(0), x, train=False)
  state = nets.State.create(apply_fn=model.apply, params=variables["params"],
                            tx=optax.sgd(0.1), batch_stats={})
  one, _ = nets.apply(state, state.params, x, True, jax.random.key(1))
  same, _ = nets.apply(state, state.params, x, True, jax.random.key(1))
  other, _ = nets.apply(state, state.params, x, True, jax.random.key(2))
  clean, _ = nets.apply(state, state.params, x, False, jax.random.key(1))
  np.testing.assert_array_equal(one, same)
  assert not np.array_equal(one, other)
  zeros = np.mean(np.asarray(one) == 0)
  assert 0.25 < zeros < 0.75, zeros  # about half dropped
  np.testing.assert_allclose(clean, model.apply(variables, x, train=False))
