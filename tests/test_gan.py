"""GAN: the losses by hand, the DCGAN layouts, the alternating updates, snapshots and resume,
a tiny training judged by the sample-quality FD, bad input."""

import functools
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m2m_jax import configlib, data, train
from m2m_jax.algorithms import gan, sample_quality
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.ops import images
from m2m_jax.models.gan import DCGAN, Discriminator, Generator, layout


def test_losses_on_fixed_logits_by_hand():
  zero = jnp.zeros(3)
  np.testing.assert_allclose(gan.discriminator_loss(zero, zero), [2 * math.log(2)] * 3, rtol=1e-6)
  np.testing.assert_allclose(gan.non_saturating_loss(zero), [math.log(2)] * 3, rtol=1e-6)
  np.testing.assert_allclose(gan.saturating_loss(zero), [-math.log(2)] * 3, rtol=1e-6)
  real, fake = jnp.array([2.0, -1.0, 30.0]), jnp.array([-1.0, 3.0, -30.0])
  d = lambda l: 1 / (1 + math.exp(-l))  # D = sigmoid(logit)
  by_hand = [-math.log(d(r)) - math.log(1 - d(f)) for r, f in [(2, -1), (-1, 3)]]
  np.testing.assert_allclose(gan.discriminator_loss(real, fake)[:2], by_hand, rtol=1e-5)
  np.testing.assert_allclose(gan.discriminator_loss(real, fake)[2], 2 * math.exp(-30), rtol=1e-3)
  np.testing.assert_allclose(gan.non_saturating_loss(fake)[:2], [-math.log(d(-1)), -math.log(d(3))],
                             rtol=1e-5)
  np.testing.assert_allclose(gan.saturating_loss(fake)[:2],
                             [math.log(1 - d(-1)), math.log(1 - d(3))], rtol=1e-5)
  np.testing.assert_allclose(gan.non_saturating_loss(jnp.array([-100.0])), [100.0], rtol=1e-6)


def test_non_saturating_gradient_survives_where_the_saturating_one_vanishes():
  """When D rejects the fake (logit -10, D(G(z)) = 4.5e-5), d loss / d logit is -(1 - D) for
  -log D and -D for log(1 - D)."""
  logit = jnp.array(-10.0)
  d = 1 / (1 + math.exp(10))
  non_sat = jax.grad(lambda l: gan.non_saturating_loss(l[None])[0])(logit)
  sat = jax.grad(lambda l: gan.saturating_loss(l[None])[0])(logit)
  np.testing.assert_allclose([non_sat, sat], [-(1 - d), -d], rtol=1e-5)
  assert abs(non_sat / sat) > 2e4
  # Both push the logit up (D(G(z)) towards 1), at the same fixed point D = 1/2 of the game.
  np.testing.assert_allclose(jax.grad(lambda l: gan.saturating_loss(l[None])[0])(0.0), -0.5)


@pytest.mark.parametrize("size, channels, start, halvings", [(16, 1, 4, 2), (28, 1, 7, 2),
                                                              (32, 3, 4, 3)])
def test_layout_and_shapes(size, channels, start, halvings):
  assert layout(size) == (start, halvings)
  model = DCGAN(size=size, channels=channels, width=4)
  z, x = jnp.zeros((2, 100)), jnp.zeros((2, size, size, channels))
  g_vars = jax.eval_shape(lambda: model.init(jax.random.key(0), z, method="generate"))
  d_vars = jax.eval_shape(lambda: model.init(jax.random.key(0), x, method="discriminate"))
  assert list(g_vars["params"]) == ["generator"] and list(d_vars["params"]) == ["discriminator"]
  assert jax.eval_shape(lambda v: model.apply(v, z, method="generate"), g_vars).shape == x.shape
  assert jax.eval_shape(lambda v: model.apply(v, x, method="discriminate"), d_vars).shape == (2,)
  # The deepest maps: 2^k w channels at start x start in both networks.
  g_dense = g_vars["params"]["generator"]["Dense_0"]["kernel"].shape
  assert g_dense == (100, start * start * 2 ** halvings * 4)
  d_last = d_vars["params"]["discriminator"][f"Conv_{halvings}"]["kernel"].shape
  assert d_last == (start, start, 2 ** halvings * 4, 1)


def _count(variables):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


def test_seed_sizes_by_hand():
  """CIFAR-10, w = 64: G 100*512*16 + 16 (512*256 + 256*128 + 128*3) + BatchNorm 2 (512 + 256
  + 128) + bias 3; D 16 (3*128 + 128*256 + 256*512) + 512*16 + BatchNorm 2 (256 + 512) + biases
  128 + 1."""
  model = DCGAN(size=32, channels=3, width=64)
  g = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 100)), method="generate"))
  d = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                        method="discriminate"))
  assert _count(g) == 100 * 512 * 16 + 16 * (512 * 256 + 256 * 128 + 128 * 3) + 2 * 896 + 3
  assert _count(d) == 16 * (3 * 128 + 128 * 256 + 256 * 512) + 512 * 16 + 2 * 768 + 129
  assert (_count(g), _count(d)) == (3_448_579, 2_637_441)


def _tiny(**overrides):
  c = configlib.load("gan", "digits")
  c.model.width, c.batch_size, c.learning_rate = 4, 32, 2e-3
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 60, 10, 60, 30
  c.snapshots, c.snapshot_samples = 4, 3
  c.fd.num_samples, c.fd.judge_epochs = 200, 2.0
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def initial():
  """``(config, dataset, state, batch)``: the tiny config resolved, its data, its state before
  training (as the loop initialises it) and its first batch."""
  dataset = data.load("digits", upsample=2)
  config = train.resolve(_tiny(), dataset)
  batch = dataset.train[data.batch_indices(0, num_examples=len(dataset.train),
                                           batch_size=config.batch_size, seed=config.seed)]
  init_rng = jax.random.split(jax.random.key(config.seed))[0]
  state = jax.jit(lambda key: gan.init(config, key, batch))(init_rng)
  return config, dataset, state, batch


def _adam_first_step(grads, lr):
  """Adam's first update: bias-corrected m = g and v = g^2, so -lr g / (|g| + eps)."""
  return jax.tree.map(lambda g: -lr * g / (jnp.abs(g) + 1e-8), grads)


def _assert_trees(assertion, a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assertion(np.asarray(u), np.asarray(v))


def test_each_update_moves_only_its_player_along_its_own_gradient(initial):
  config, _, state, batch = initial
  real = images.to_model(jnp.asarray(batch["x"]))
  z = jax.random.normal(jax.random.key(3), (len(real), 100))
  fake = jax.random.uniform(jax.random.key(4), real.shape, minval=-1, maxval=1)  # any fakes
  g, d = state.generator, state.discriminator

  def apply_d(params, x):  # D in training mode, straight from the flax module
    return d.apply_fn({"params": params, "batch_stats": d.batch_stats}, x, train=True,
                      method="discriminate", mutable=["batch_stats"])[0]

  def d_loss(params):  # -log D(x) - log(1 - D(G(z))), written out
    sig = jax.nn.sigmoid
    return jnp.mean(-jnp.log(sig(apply_d(params, real))) - jnp.log(1 - sig(apply_d(params, fake))))

  after_d, _ = jax.jit(gan.discriminator_update)(state, real, fake)
  _assert_trees(np.testing.assert_array_equal, after_d.generator, g)
  moved = jax.tree.map(jnp.subtract, after_d.discriminator.params, d.params)
  close = lambda u, v: np.testing.assert_allclose(u, v, atol=1e-2 * config.learning_rate)
  _assert_trees(close, moved,
                _adam_first_step(jax.jit(jax.grad(d_loss))(d.params), config.learning_rate))

  def g_loss(params):  # -log D(G(z)), D fixed
    x = g.apply_fn({"params": params, "batch_stats": g.batch_stats}, z, train=True,
                   method="generate", mutable=["batch_stats"])[0]
    return jnp.mean(-jnp.log(jax.nn.sigmoid(apply_d(d.params, x))))

  after_g, _ = jax.jit(gan.generator_update)(state, z)
  _assert_trees(np.testing.assert_array_equal, after_g.discriminator, d)
  moved = jax.tree.map(jnp.subtract, after_g.generator.params, g.params)
  _assert_trees(close, moved,
                _adam_first_step(jax.jit(jax.grad(g_loss))(g.params), config.learning_rate))
  assert int(after_g.step) == 1 and int(after_d.step) == 0  # the step counts loop steps (G's)


def test_eval_does_not_depend_on_the_batch(initial):
  config, dataset, state, _ = initial
  x = {"x": dataset.test[np.arange(6)]["x"]}
  step = jax.jit(functools.partial(gan.eval_step, config))
  whole = step(state, x)
  parts = [step(state, {"x": x["x"][:3]}), step(state, {"x": x["x"][3:][::-1]})]
  for k in ("loss", "loss_g", "d_real", "d_fake"):
    np.testing.assert_allclose(whole[k], np.concatenate([parts[0][k], parts[1][k][::-1]]),
                               rtol=1e-5)
  logit = lambda p: jnp.log(p / (1 - p))
  np.testing.assert_allclose(
      whole["loss"], gan.discriminator_loss(logit(whole["d_real"]), logit(whole["d_fake"])),
      rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """The tiny GAN trained once through the loop (60 steps, checkpoints at 30 and 60)."""
  workdir = str(tmp_path_factory.mktemp("gan"))
  config = _tiny()
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_tiny_gan_trains_and_its_samples_move_towards_the_data(tiny_run, initial):
  config, workdir, summary = tiny_run
  test = summary["test"]
  assert {"loss", "loss_g", "d_real", "d_fake", "fd", "fd_real", "confidence",
          "classes"} <= set(test)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  losses = [r["loss"] for r in rows if r["split"] == "train"]
  assert losses[0] < 1.4 and min(losses) < losses[0] / 1.3  # D learns to tell real from fake
  # The untrained generator's samples, judged by the same judge, are much further from the data.
  _, dataset, untrained, _ = initial
  before = gan.sample_metrics(config, untrained, dataset)
  assert test["fd"] < before["fd"] / 2 and test["fd_real"] == before["fd_real"]
  for name in ("samples_over_training", "samples", "discriminator", "curves"):
    assert os.path.exists(os.path.join(workdir, "figures", f"{name}.png"))


def test_snapshots_fill_at_their_steps_and_survive_a_kill(tiny_run, initial, tmp_path):
  config, workdir, summary = tiny_run
  state = train.load_state(config, workdir)
  np.testing.assert_array_equal(state.snapshot_steps, [0, 20, 40, 60])
  assert gan.snapshot_schedule(config.num_steps, config.snapshots) == (0, 20, 40, 60)
  snaps = np.asarray(state.snapshots)
  sample = jax.jit(gan.sample)
  np.testing.assert_allclose(snaps[-1], sample(state, state.fixed_z), atol=1e-6)
  untrained = initial[2]  # the loop's initial state: the same key and first batch
  np.testing.assert_allclose(snaps[0], sample(untrained, untrained.fixed_z), atol=1e-6)
  assert all(np.abs(snaps[i + 1] - snaps[i]).mean() > 1e-3 for i in range(3))
  # Killed just after the checkpoint at step 30: the rerun resumes there and ends identically.
  killed = str(tmp_path / "killed")
  shutil.copytree(workdir, killed)
  shutil.rmtree(os.path.join(killed, "checkpoints", "60"))
  resumed = train.train_and_evaluate(config, killed)
  assert resumed["resumed_from_step"] == 30 and resumed["test"] == summary["test"]
  _assert_trees(np.testing.assert_array_equal, train.load_state(config, killed), state)


def test_bad_input_is_refused(tmp_path):
  with pytest.raises(ConfigError, match="unknown generator_loss 'wasserstein'"):
    train.train_and_evaluate(_tiny(generator_loss="wasserstein"), str(tmp_path / "a"))
  with pytest.raises(ConfigError, match="gan trains the model 'dcgan'; got model_name 'cnn'"):
    train.train_and_evaluate(_tiny(model_name="cnn"), str(tmp_path / "b"))
  with pytest.raises(ConfigError, match="snapshots must be at least 2"):
    train.train_and_evaluate(_tiny(snapshots=1), str(tmp_path / "c"))
  with pytest.raises(ConfigError, match=r"beta1 .* must lie in \[0, 1\); got 1.5"):
    train.train_and_evaluate(_tiny(beta1=1.5), str(tmp_path / "d"))
  with pytest.raises(DataError, match="needs an even size above 4; got 7"):
    layout(7)
  with pytest.raises(DataError, match="square images of shape"):
    Discriminator(4).init(jax.random.key(0), jnp.zeros((1, 16, 12, 1)))
  with pytest.raises(DataError, match=r"noise of shape \(B, latent_dim\)"):
    Generator(16, 1, 4).init(jax.random.key(0), jnp.zeros((1, 4, 4, 100)))
  with pytest.raises(DataError, match=r"for images of shape \(16, 16, 1\); got shape \(16, 16, 3"):
    DCGAN(16, 1, 4).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), method="discriminate")
  with pytest.raises(DataError, match="gan needs square images"):
    gan.init(_tiny(), jax.random.key(0), {"x": np.zeros((2, 64))})


def test_presets():
  """seed: the original's CIFAR-10 DCGAN (w = 64, z of 100, Adam 2e-4 with beta1 0.5); every
  preset judges its samples (the CIFAR-10 seed's run on mock data is the loop's tfds path, tested
  with the other seed presets)."""
  seed = configlib.load("gan", "seed")
  assert (seed.dataset, seed.model.width, seed.model.latent_dim, seed.learning_rate, seed.beta1,
          seed.generator_loss) == ("tfds:cifar10", 64, 100, 2e-4, 0.5, "non_saturating")
  for preset in ("default", "digits", "mnist", "seed"):
    config = configlib.load("gan", preset)
    assert config.fd.keys() == sample_quality.default_config().keys()
    assert config.fd.num_samples == -1 and config.model_name == "dcgan"
