"""DDPM: the schedules, the forward and posterior formulas, the samplers with an oracle, the
U-Net, EMA, a tiny training through the loop, and bad input."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m2m_jax import configlib, data, train
from m2m_jax.algorithms import diffusion as algo
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models.ddpm_unet import DDPMUNet, timestep_embedding
from m2m_jax.ops import diffusion, optim


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_closed_form_matches_moments_of_the_iterated_chain(kind):
  """x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps propagates a mean m and variance v as
  m <- sqrt(alpha) m, v <- alpha v + beta from (x_0, 0); q(x_t | x_0) must give the same."""
  s = diffusion.make_schedule(kind, 1000)
  betas = np.asarray(s.betas, np.float64)
  x0 = np.array([-1.0, 0.3, 1.0])
  m, v, means, variances = x0.copy(), 0.0, [], []
  for beta in betas:
    m, v = np.sqrt(1 - beta) * m, (1 - beta) * v + beta
    means.append(m)
    variances.append(v)
  t = jnp.arange(1000)
  mean, var = diffusion.q_mean_variance(s, jnp.broadcast_to(jnp.asarray(x0, jnp.float32),
                                                            (1000, 3)), t)
  np.testing.assert_allclose(mean, np.array(means), atol=2e-6)
  np.testing.assert_allclose(var[:, 0], variances, rtol=1e-4, atol=1e-7)


def test_closed_form_matches_monte_carlo_of_the_chain():
  """20,000 chains of 100 forward steps against q_sample's mean and variance at four times."""
  s = diffusion.make_schedule("cosine", 100)
  n, x0 = 20_000, 0.6
  def step(x, inputs):
    beta, key = inputs
    x = jnp.sqrt(1 - beta) * x + jnp.sqrt(beta) * jax.random.normal(key, x.shape)
    return x, x
  _, xs = jax.jit(lambda: jax.lax.scan(step, jnp.full(n, x0), (s.betas, jax.random.split(
      jax.random.key(0), 100))))()
  for t in (0, 10, 50, 99):
    closed = diffusion.q_sample(s, jnp.full((n,), x0), jnp.full(n, t),
                                jax.random.normal(jax.random.key(t + 1), (n,)))
    var = float(1 - s.alpha_bar[t])
    se = np.sqrt(var / n)
    assert abs(float(xs[t].mean()) - float(jnp.sqrt(s.alpha_bar[t])) * x0) < 5 * se
    assert abs(float(closed.mean()) - float(xs[t].mean())) < 7 * se
    assert abs(float(xs[t].var()) / var - 1) < 0.05 and abs(float(closed.var()) / var - 1) < 0.05


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_posterior_is_the_bayes_posterior(kind):
  """q(x_{t-1} | x_t, x_0) ~ q(x_t | x_{t-1}) q(x_{t-1} | x_0), a product of Gaussians in
  x_{t-1}: precision 1 / (1 - ab_{t-1}) + alpha_t / beta_t, mean = variance times
  (sqrt(ab_{t-1}) x_0 / (1 - ab_{t-1}) + sqrt(alpha_t) x_t / beta_t)."""
  s = diffusion.make_schedule(kind, 1000)
  t = np.array([1, 2, 10, 250, 500, 999])
  rng = np.random.default_rng(0)
  x0, xt = rng.uniform(-1, 1, (6, 5)), rng.normal(size=(6, 5))
  betas = np.asarray(s.betas, np.float64)
  ab = np.cumprod(1 - betas)
  beta, ab_prev = betas[t][:, None], ab[t - 1][:, None]
  var = 1 / (1 / (1 - ab_prev) + (1 - beta) / beta)
  mean = var * (np.sqrt(ab_prev) * x0 / (1 - ab_prev) + np.sqrt(1 - beta) * xt / beta)
  got_mean, got_var = diffusion.q_posterior(s, jnp.asarray(x0, jnp.float32),
                                            jnp.asarray(xt, jnp.float32), jnp.asarray(t))
  np.testing.assert_allclose(got_var[:, 0], var[:, 0], rtol=1e-4)
  np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
  # At t = 0 the posterior is the point x_0: mean x_0, variance 0.
  m0, v0 = diffusion.q_posterior(s, jnp.asarray(x0[:1], jnp.float32),
                                 jnp.asarray(xt[:1], jnp.float32), jnp.zeros(1, jnp.int32))
  np.testing.assert_allclose(m0, x0[:1], atol=1e-6)
  assert float(v0.ravel()[0]) == 0.0


def test_schedules_by_hand():
  lin = diffusion.make_schedule("linear", 1000)
  np.testing.assert_allclose([lin.betas[0], lin.betas[-1]], [1e-4, 0.02], rtol=1e-6)
  assert abs(float(lin.alpha_bar[-1]) - 4.04e-5) < 0.01e-5  # prod(1 - beta), DDPM's
  cos = diffusion.make_schedule("cosine", 1000)
  ab = np.asarray(cos.alpha_bar)
  assert 0.9999 < ab[0] < 1 and np.all(np.diff(ab) < 0) and ab[-1] < 1e-6
  assert float(cos.betas.max()) == float(cos.betas[-1]) == pytest.approx(0.999)  # clipped
  np.testing.assert_allclose(ab[:990], diffusion.cosine_alpha_bar(np.arange(1, 991) / 1000),
                             rtol=1e-5)  # unclipped: alpha_bar_t = f((t + 1) / T) / f(0)
  np.testing.assert_allclose(diffusion.ddim_timesteps(1000, 50)[:3], [0, 20, 40])


def _oracle(s, x0):
  return lambda xt, t: diffusion.predict_eps(s, xt, t, jnp.broadcast_to(x0, xt.shape))


def test_ddim_with_the_exact_noise_recovers_the_point_and_is_deterministic():
  """For a data set of one point x_0 the exact eps is (x_t - sqrt(ab) x_0) / sqrt(1 - ab);
  DDIM (eta = 0) then lands on x_0 from any start, and ignores its key."""
  s = diffusion.make_schedule("linear", 1000)
  x0 = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 4, 4, 1)), jnp.float32)
  run = jax.jit(lambda key, start: diffusion.sample_ddim(
      s, _oracle(s, x0), key, (2, 4, 4, 1), ddim_steps=20, x_init=start))
  start = jax.random.normal(jax.random.key(5), (2, 4, 4, 1))
  a, b = run(jax.random.key(0), start), run(jax.random.key(1), start)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a, jnp.broadcast_to(x0, a.shape), atol=1e-4)


def test_ancestral_sampling_with_the_exact_noise_converges_to_the_point():
  s = diffusion.make_schedule("cosine", 200)
  x0 = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (1, 3, 3, 2)), jnp.float32)
  out = jax.jit(lambda k: diffusion.sample_ancestral(s, _oracle(s, x0), k, (4, 3, 3, 2)))(
      jax.random.key(3))
  np.testing.assert_allclose(out, jnp.broadcast_to(x0, out.shape), atol=1e-4)


def test_ddim_with_eta_one_is_the_ancestral_step():
  s = diffusion.make_schedule("linear", 1000)
  rng = np.random.default_rng(3)
  xt, eps, noise = (jnp.asarray(rng.normal(size=(3, 2, 2, 1)), jnp.float32) for _ in range(3))
  t = jnp.array([1, 400, 999])
  ancestral, _ = diffusion.ancestral_step(s, xt, t, eps, noise, clip=False)
  ddim, _ = diffusion.ddim_step(s, xt, t, t - 1, eps, noise, eta=1.0, clip=False)
  np.testing.assert_allclose(ddim, ancestral, rtol=1e-4, atol=1e-4)


def test_timestep_embedding_by_hand():
  emb = timestep_embedding(jnp.array([0, 1]), 4)  # frequencies 1 and 10000^(-1/2) = 0.01
  np.testing.assert_allclose(emb, [[0, 0, 1, 1], [np.sin(1), np.sin(0.01), np.cos(1),
                                                  np.cos(0.01)]], atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 28, 28, 1), (2, 16, 16, 1), (2, 32, 32, 3)])
def test_unet_shapes(shape):
  model = DDPMUNet(base=4, multipliers=(1, 2, 2), groups=2)
  x, t = jnp.zeros(shape), jnp.zeros(shape[:1], jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x, t)
  assert jax.eval_shape(model.apply, variables, x, t).shape == shape


def test_seed_unet_size():
  """The seed preset's U-Net at 28x28x1 (base 64, widths 64/128/256): 9,860,801 parameters."""
  config = configlib.load("diffusion", "seed")
  model = DDPMUNet(**config.model)
  x, t = jnp.zeros((1, 28, 28, 1)), jnp.zeros(1, jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x, t)
  assert sum(p.size for p in jax.tree.leaves(variables)) == 9_860_801


def test_unet_output_depends_on_time():
  model = DDPMUNet(base=4, multipliers=(1, 2), groups=2)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  shapes = jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros(2, jnp.int32))
  rng = np.random.default_rng(1)  # every weight N(0, 0.3^2): no zero-initialised layer
  variables = jax.tree.map(lambda l: (0.3 * rng.normal(size=l.shape)).astype(np.float32), shapes)
  apply = jax.jit(model.apply)
  early, late = apply(variables, x, jnp.array([0, 0])), apply(variables, x, jnp.array([500, 500]))
  assert float(jnp.abs(early - late).mean()) > 0.01 * float(jnp.abs(early).mean())
  blocks = {k: v for k, v in variables["params"].items() if k.startswith("ResBlock")}
  assert len(blocks) == 2 * 1 + 2 + 2 * 2  # down, middle, up (one more per level)
  assert all(b["Dense_0"]["kernel"].shape[0] == 16 for b in blocks.values())  # time in each


STEPS = 80


def _tiny_config():
  c = configlib.load("diffusion", "digits")
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = STEPS, 20, STEPS, STEPS
  c.diffusion_steps, c.ddim_steps = 100, 10
  c.model.base, c.model.groups = 8, 4
  c.learning_rate, c.batch_size = 3e-3, 64
  c.fd.num_samples, c.fd.judge_epochs = 32, 2
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):  # a minute on 2 cores: its tests are slow
  workdir = tmp_path_factory.mktemp("diffusion")
  config = _tiny_config()
  summary = train.train_and_evaluate(config, str(workdir))
  return config, workdir, summary, train.load_state(config, str(workdir))


@pytest.mark.slow
def test_tiny_training_lowers_the_held_out_noise_error(trained):
  """The zero-initialised output layer predicts eps = 0, so the held-out eps-MSE starts at
  E[eps^2] = 1; 80 steps must bring it below 1/3 (it reaches about 0.15)."""
  config, workdir, summary, state = trained
  x = data.load("digits", upsample=2).test[np.arange(64)]
  fresh = algo.init(config, jax.random.key(0), x)
  eval_step = jax.jit(functools.partial(algo.eval_step, config))
  assert float(eval_step(fresh, x)["eps_mse"].mean()) == pytest.approx(1.0, abs=0.05)
  test = summary["test"]
  assert test["eps_mse"] < 1 / 3 and test["eps_mse_raw"] < 1 / 3
  assert test["eps_mse_t90"] < test["eps_mse_t10"]  # noise is easy to find in a noisy image
  with open(workdir / "metrics.jsonl") as f:
    losses = [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]
  assert losses[-1] < losses[0] / 3


@pytest.mark.slow
def test_sample_metrics_and_figures(trained):
  _, workdir, summary, _ = trained
  test = summary["test"]
  for name in ("ddpm", "ddim"):
    assert np.isfinite(test[f"{name}_fd"]) and test[f"{name}_fd"] > 0
    assert 0 < test[f"{name}_confidence"] <= 1 and 1 <= test[f"{name}_classes"] <= 10
  assert test["fd_real"] >= 0
  for figure in ("samples_ddpm", "samples_ddim", "trajectory", "forward"):
    assert (workdir / "figures" / f"{figure}.png").exists()


def test_ema_in_the_train_step_and_samples():
  """On the contract's tiny config: two train steps from the initial state (the second from
  an EMA that differs from the parameters), then sampling."""
  config = configlib.tiny(configlib.load("diffusion", "digits"))
  dataset = data.load(config.dataset, **config.data)
  config = train.resolve(config, dataset)
  batch = dataset.train[np.arange(8)]
  step = jax.jit(functools.partial(algo.train_step, config))
  state, _ = step(algo.init(config, jax.random.key(0), batch), batch, jax.random.key(0))
  new, metrics = step(state, batch, jax.random.key(1))
  d = float(optim.ema_decay_at(2, config.ema_decay))
  assert float(metrics["ema_decay"]) == pytest.approx(d)
  for e_new, e, p in zip(*(jax.tree.leaves(t) for t in (new.ema_params, state.ema_params,
                                                         new.params))):
    np.testing.assert_allclose(e_new, d * e + (1 - d) * p, rtol=1e-5, atol=1e-7)
  assert any(np.abs(e - p).max() > 0 for e, p in zip(jax.tree.leaves(new.ema_params),
                                                     jax.tree.leaves(new.params)))
  ddim = functools.partial(algo.sample, new, jax.random.key(0), (3, 16, 16, 1), "ddim",
                           ddim_steps=config.ddim_steps)
  images = ddim()
  np.testing.assert_array_equal(images, ddim())
  assert 0 <= float(images.min()) and float(images.max()) <= 1
  noisy = ddim(ddim_eta=1.0)
  assert 0.01 < float(jnp.abs(noisy - images).mean())  # eta = 1 adds noise at every step


def test_bad_input_is_refused(tmp_path):
  with pytest.raises(ConfigError, match="T must be a positive integer; got 0"):
    diffusion.make_schedule("linear", 0)
  with pytest.raises(ConfigError, match="unknown beta schedule 'quadratic'"):
    diffusion.make_schedule("quadratic", 10)
  with pytest.raises(ConfigError, match=r"ddim_steps must be an integer in \[1, T = 100\]; "
                                        "got 200"):
    diffusion.ddim_timesteps(100, 200)
  with pytest.raises(DataError, match="multiples of 4; got 30x30"):
    DDPMUNet(base=4, groups=2).init(jax.random.key(0), jnp.zeros((1, 30, 30, 1)),
                                   jnp.zeros(1, jnp.int32))
  with pytest.raises(ConfigError, match=r"groups 3 must divide every level's width \[4, 8, 8\]"):
    DDPMUNet(base=4, groups=3).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)),
                                   jnp.zeros(1, jnp.int32))
  config = _tiny_config()
  config.ddim_steps = 101
  with pytest.raises(ConfigError, match=r"ddim_steps must be an integer in \[1, T = 100\]"):
    configlib.validate(config, 1)
  config = _tiny_config()
  config.ddim_eta = 1.5
  with pytest.raises(ConfigError, match=r"ddim_eta must lie in \[0, 1\]; got 1.5"):
    configlib.validate(config, 1)
  config = _tiny_config()
  config.ema_decay = 1.0
  with pytest.raises(ConfigError, match=r"ema_decay must lie in \[0, 1\); got 1.0"):
    configlib.validate(config, 1)
  config = _tiny_config()
  config.model_name = "unet"
  with pytest.raises(ConfigError, match="trains the model 'ddpm_unet'; got model_name 'unet'"):
    configlib.validate(config, 1)
