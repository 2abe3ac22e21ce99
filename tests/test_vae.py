"""The VAE: KL and likelihoods against hand and scipy values, the reparameterisation, the
model's shapes and size, a tiny training through the loop, and bad input."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from m2m_jax import configlib, data, train
from m2m_jax.algorithms import vae
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models.vae import VAE
from m2m_jax.ops import distributions


def test_gaussian_kl_by_hand_and_by_the_general_formula():
  # KL(N(mu, s^2) || N(0, 1)) = (s^2 + mu^2 - 1 - log s^2) / 2 per dimension, summed:
  # (1 + 1 - 1 - 0) / 2 = 0.5; (e + 0 - 1 - 1) / 2 = (e - 2) / 2; the standard normal: 0.
  mean = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  logvar = jnp.array([[0.0, 1.0], [0.0, 0.0]])
  np.testing.assert_allclose(distributions.gaussian_kl(mean, logvar), [0.5 + (math.e - 2) / 2, 0.0],
                             rtol=1e-6)
  # KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2, at
  # m2 = 0, s2 = 1, summed over dimensions.
  rng = np.random.default_rng(0)
  m, lv = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
  s = np.exp(lv / 2)
  general = np.sum(np.log(1 / s) + (s ** 2 + m ** 2) / 2 - 0.5, axis=1)
  np.testing.assert_allclose(distributions.gaussian_kl(jnp.asarray(m), jnp.asarray(lv)), general, rtol=1e-5)


def test_gaussian_kl_against_monte_carlo():
  """E_q[log q(z) - log p(z)] over 400,000 draws, within four standard errors."""
  m, lv = np.array([0.7, -1.2, 0.1]), np.array([-0.5, 0.8, 0.0])
  s = np.exp(lv / 2)
  z = m + s * np.random.default_rng(1).normal(size=(400_000, 3))
  ratio = np.sum(stats.norm.logpdf(z, m, s) - stats.norm.logpdf(z), axis=1)
  kl = float(distributions.gaussian_kl(jnp.asarray(m)[None], jnp.asarray(lv)[None])[0])
  assert abs(ratio.mean() - kl) < 4 * ratio.std() / math.sqrt(len(ratio))


def test_bernoulli_log_likelihood_by_hand():
  # image 0: logit 0 (p = 1/2) at x = 1, logit log 3 (p = 3/4) at x = 1/4;
  # image 1: logits +-100 at x = 1 and 0, a near-certain right answer: about 0, finite.
  logits = jnp.array([[0.0, math.log(3)], [100.0, -100.0]]).reshape(2, 1, 2, 1)
  x = jnp.array([[1.0, 0.25], [1.0, 0.0]]).reshape(2, 1, 2, 1)
  hand = math.log(0.5) + 0.25 * math.log(0.75) + 0.75 * math.log(0.25)
  np.testing.assert_allclose(distributions.bernoulli_log_likelihood(logits, x), [hand, 0.0], atol=1e-6)
  # The cross-entropy of continuous x is least at sigmoid(l) = x, where it is the entropy:
  # log 2 a pixel at x = 1/2, 0 for binary pixels.
  x = jnp.array([0.5, 0.5, 0.2, 1.0]).reshape(1, 2, 2, 1)
  entropy = 2 * math.log(2) - (0.2 * math.log(0.2) + 0.8 * math.log(0.8))
  np.testing.assert_allclose(distributions.bernoulli_entropy(x), [entropy], rtol=1e-6)
  best = (jnp.log(x) - jnp.log1p(-x)).at[..., -1, -1, :].set(50.0)  # sigmoid(l) = x
  np.testing.assert_allclose(-distributions.bernoulli_log_likelihood(best, x), [entropy], rtol=1e-5)
  assert float(-distributions.bernoulli_log_likelihood(best + 0.3, x)[0]) > entropy + 0.01


def test_gaussian_log_likelihood_against_scipy():
  rng = np.random.default_rng(2)
  mean, x = rng.uniform(size=(2, 3, 4, 4, 2))
  log_scale = np.array([-2.0, 0.5])  # one sigma per channel
  expected = stats.norm.logpdf(x, mean, np.exp(log_scale)).reshape(3, -1).sum(axis=1)
  got = distributions.gaussian_log_likelihood(jnp.asarray(mean), jnp.asarray(log_scale), jnp.asarray(x))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # d/d log sigma of sum_p (-u_p^2 / 2 - log sigma), u = (x - mean) / sigma: sum_p (u_p^2 - 1),
  # zero where sigma^2 is the mean squared error.
  grad = jax.grad(lambda ls: distributions.gaussian_log_likelihood(mean, ls, x).sum())(0.3)
  np.testing.assert_allclose(grad, np.sum((x - mean) ** 2 / math.exp(0.6) - 1), rtol=1e-4)


def test_elbo_terms_weigh_the_kl_by_beta():
  mean, logvar = jnp.array([[1.0, 0.0]]), jnp.zeros((1, 2))  # KL = 0.5
  terms = vae.elbo_terms(jnp.array([-10.0]), mean, logvar, beta=4.0)
  np.testing.assert_allclose([terms[k][0] for k in ("recon", "kl", "neg_elbo", "loss")],
                             [10.0, 0.5, 10.5, 12.0], rtol=1e-6)


def test_reparameterisation_has_the_right_moments_and_gradients():
  key, n = jax.random.key(3), 200_000
  mean = jnp.full((n, 2), jnp.array([2.0, -1.0]))
  logvar = jnp.full((n, 2), jnp.log(jnp.array([9.0, 0.25])))
  z = np.asarray(distributions.reparameterise(key, mean, logvar))
  np.testing.assert_allclose(z.mean(axis=0), [2.0, -1.0], atol=4 * 3 / math.sqrt(n))
  np.testing.assert_allclose(z.var(axis=0), [9.0, 0.25], rtol=0.02)
  # z = mean + exp(logvar / 2) eps: dz/dmean = 1, dz/dlogvar = exp(logvar / 2) eps / 2.
  m, lv = jnp.array([0.3, -0.4]), jnp.array([0.2, -1.0])
  eps = (distributions.reparameterise(key, m, lv) - m) / jnp.exp(lv / 2)
  g_mean, g_logvar = jax.grad(lambda a, b: distributions.reparameterise(key, a, b).sum(), (0, 1))(m, lv)
  np.testing.assert_allclose(g_mean, [1.0, 1.0])
  np.testing.assert_allclose(g_logvar, jnp.exp(lv / 2) * eps / 2, rtol=1e-6)
  assert np.all(np.asarray(g_logvar) != 0)


def _shapes(model, x):
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  logits, mean, logvar = jax.eval_shape(model.apply, variables, x)
  params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
  return logits.shape, mean.shape, logvar.shape, params


@pytest.mark.parametrize("shape, widths", [((28, 28, 1), (8, 16)), ((16, 16, 1), (4, 8, 16)),
                                           ((32, 32, 3), (32, 64, 128))])
def test_model_shapes(shape, widths):
  x = jnp.zeros((2, *shape))
  logits, mean, logvar, _ = _shapes(VAE(image_shape=shape, widths=widths, latent=5), x)
  assert logits == x.shape and mean == logvar == (2, 5)


def test_seed_model_is_the_original_size():
  # conv 3->32->64->128 (4x4): 1,568 + 32,832 + 131,200; heads 2 x (2,048 x 20 + 20) = 81,960;
  # linear 20 -> 2,048: 43,008; convT 128->64->32->3: 131,136 + 32,800 + 1,539.
  *_, params = _shapes(VAE(), jnp.zeros((1, 32, 32, 3)))
  assert params == 456_043
  config = configlib.load("vae", "seed")
  assert (config.dataset, tuple(config.model.widths), config.model.latent) == (
      "tfds:cifar10", (32, 64, 128), 20)
  assert (config.learning_rate, config.batch_size, config.num_epochs, config.beta,
          config.likelihood, config.binarize) == (1e-3, 256, 15.0, 1.0, "bernoulli", False)


def test_bad_model_input_is_refused():
  with pytest.raises(DataError, match="halves its input 3 times, so height and width must be "
                                      "multiples of 8; got 28x28"):
    VAE(image_shape=(28, 28, 1)).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  with pytest.raises(DataError, match=r"built for images of shape \(16, 16, 1\); got \(8, 8, 1\)"):
    VAE(image_shape=(16, 16, 1), widths=(4,)).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(ConfigError, match="latent must be a positive dimension; got 0"):
    VAE(image_shape=(8, 8, 1), widths=(4,), latent=0).init(jax.random.key(0),
                                                           jnp.zeros((1, 8, 8, 1)))


def _tiny(steps=150, **overrides):
  c = configlib.load("vae", "digits")
  c.model.widths, c.model.latent = (8, 16), 4
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = steps, 25, steps, steps
  c.batch_size, c.learning_rate = 32, 3e-3
  c.fd.num_samples, c.fd.judge_epochs = 64, 2.0
  c.update(overrides)
  return c


def test_bad_configs_and_data_are_refused(tmp_path):
  iris = _tiny(dataset="iris")
  iris.data = ml_collections.ConfigDict()
  with pytest.raises(DataError, match=r"vae needs images of shape \(B, H, W, C\); dataset "
                                      r"'iris' gives shape \(32, 4\)"):
    train.train_and_evaluate(iris, str(tmp_path / "a"))
  with pytest.raises(ConfigError, match="unknown likelihood 'poisson'"):
    train.train_and_evaluate(_tiny(likelihood="poisson"), str(tmp_path / "b"))
  with pytest.raises(ConfigError, match="binarize draws binary pixels for the 'bernoulli'"):
    train.train_and_evaluate(_tiny(likelihood="gaussian"), str(tmp_path / "c"))
  with pytest.raises(ConfigError, match="vae trains the model 'vae'; got model_name 'cnn'"):
    train.train_and_evaluate(_tiny(model_name="cnn"), str(tmp_path / "d"))
  c = _tiny()
  c.model.widths = (4, 4, 4, 4, 4)  # four halvings take 16x16 to 1x1; a fifth cannot
  with pytest.raises(DataError, match="halves its input 5 times, so height and width must be "
                                      "multiples of 32; got 16x16"):
    train.train_and_evaluate(c, str(tmp_path / "e"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One tiny run through the loop (150 steps on 16x16 digits), an untrained state and the
  data."""
  workdir = tmp_path_factory.mktemp("vae")
  config = _tiny()
  summary = train.train_and_evaluate(config, str(workdir))
  dataset = data.load(config.dataset, **config.data)
  x = dataset.test[np.arange(len(dataset.test))]
  start = vae.init(train.resolve(config, dataset), jax.random.key(0), x)
  initial = float(np.mean(jax.jit(functools.partial(vae.eval_step, config))(start, x)["neg_elbo"]))
  return {"workdir": workdir, "summary": summary, "initial": initial, "start": start,
          "dataset": dataset, "config": config}


def test_tiny_training_lowers_the_held_out_negative_elbo(trained):
  initial, test = trained["initial"], trained["summary"]["test"]
  # Untrained logits are near 0, so each of the 256 binary pixels costs about log 2 nats.
  assert abs(initial - 256 * math.log(2)) < 0.1 * 256 * math.log(2)
  assert test["neg_elbo"] < initial / 1.4  # about 179 -> 117 nats in 150 steps
  np.testing.assert_allclose(test["neg_elbo"], test["recon"] + test["kl"], rtol=1e-5)
  assert test["kl"] > 1 and test["active_units"] >= 1
  with open(trained["workdir"] / "summary.json") as f:
    assert json.load(f)["test"] == test
  for name in ("reconstructions", "samples", "interpolation", "latent", "curves"):
    assert (trained["workdir"] / "figures" / f"{name}.png").exists()


def test_summary_has_the_elbo_parts_and_sample_quality(trained):
  test = trained["summary"]["test"]
  assert {"neg_elbo", "recon", "kl", "mse", "active_units", "fd", "fd_real", "confidence",
          "classes"} <= set(test)
  assert "bce_floor" not in test  # binarised pixels: the Bernoulli is a true likelihood
  assert test["fd"] > 0 and test["fd_real"] > 0 and 0 < test["confidence"] <= 1


def test_eval_does_not_depend_on_the_batch(trained):
  """Images 0-2 evaluated beside 3-5, in reverse order, and beside 6-8: the same numbers."""
  state, test = trained["start"], trained["dataset"].test
  step = jax.jit(functools.partial(vae.eval_step, trained["config"]))
  whole = step(state, test[np.arange(6)])["neg_elbo"]
  reverse = step(state, test[np.arange(5, -1, -1)])["neg_elbo"][::-1]
  others = step(state, test[np.array([0, 1, 2, 6, 7, 8])])["neg_elbo"]
  np.testing.assert_allclose(whole, reverse, rtol=1e-5)
  np.testing.assert_allclose(whole[:3], others[:3], rtol=1e-5)
  assert len(np.unique(np.asarray(whole))) == 6


def test_continuous_pixels_report_the_cross_entropy_floor(trained):
  """The seed preset's setting (no binarisation): recon is a cross-entropy that stays above the
  pixels' summed entropies, reported as ``bce_floor``."""
  state, test = trained["start"], trained["dataset"].test
  x = test[np.arange(6)]
  continuous = ml_collections.ConfigDict(trained["config"].to_dict())
  continuous.binarize = False
  out = jax.jit(functools.partial(vae.eval_step, continuous))(state, x)
  np.testing.assert_allclose(out["bce_floor"], distributions.bernoulli_entropy(jnp.asarray(x["x"])),
                             rtol=1e-6)
  assert np.all(out["recon"] > out["bce_floor"]) and np.all(out["bce_floor"] > 0)


def test_gaussian_likelihood_learns_its_scale():
  """Direct train steps with a learned sigma: the loss falls, and sigma (from 0.1) rises
  towards the root mean squared error of the reconstructions, where d loss / d log sigma = 0."""
  config = _tiny(likelihood="gaussian", binarize=False, learning_rate=1e-2, num_steps=40)
  dataset = data.load(config.dataset, **config.data)
  batch = dataset.train[np.arange(64)]
  state = vae.init(config, jax.random.key(0), batch)
  assert state.params["log_scale"].shape == (1,)
  step = jax.jit(functools.partial(vae.train_step, config))
  losses = []
  for i in range(40):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  eval_step = jax.jit(functools.partial(vae.eval_step, config))
  rms = math.sqrt(float(np.mean(eval_step(state, batch)["mse"])))
  assert losses[-1] < losses[0] / 4 and 0.11 < float(metrics["sigma"]) < rms
