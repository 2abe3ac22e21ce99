"""Latent ODE-VAE: the diffrax solve against analytic ODEs, rotation, spirals, the ELBO's terms,
model shapes, a tiny training run, and bad input."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.linalg

from m2m_jax import configlib, data, train
from m2m_jax.algorithms import latent_ode as algo
from m2m_jax.data import sequences
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models.latent_ode import LatentODE, odeint
from m2m_jax.ops import distributions

MOCK_TFDS_EXAMPLES = 16

# dz/dt = A z: a damped rotation, z(t) = expm(A t) z0.
A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
Z0 = np.array([1.0, 0.5])
TS = np.linspace(0.0, 1.5, 4)
C = np.array([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.3], [2.0, 1.0]])  # loss = sum_i C_i . z(t_i)


def linear_loss(a, z0, solver, gradients):
  """sum_i C_i . z(t_i) for dz/dt = a z, and z at the times TS."""
  zs = odeint(lambda t, z, m: m @ z, a, z0, jnp.asarray(TS, jnp.float32), solver=solver,
              steps=8, rtol=1e-7, atol=1e-9, gradients=gradients)
  return jnp.sum(jnp.asarray(C, jnp.float32) * zs), zs


def analytic_gradients() -> tuple[np.ndarray, np.ndarray]:
  """d loss / dA and d loss / dz0 in float64: d expm(A t) in direction E is the Frechet
  derivative L(A t, E t) (scipy), and d z(t) / d z0 = expm(A t)."""
  grad_a, grad_z0 = np.zeros((2, 2)), np.zeros(2)
  for t, c in zip(TS, C):
    grad_z0 += scipy.linalg.expm(A * t).T @ c
    for i in range(2):
      for j in range(2):
        e = np.zeros((2, 2))
        e[i, j] = t
        grad_a[i, j] += c @ scipy.linalg.expm_frechet(A * t, e, compute_expm=False) @ Z0
  return grad_a, grad_z0


@pytest.mark.parametrize("solver, gradients, atol", [
    ("rk4", "backprop", 2e-5), ("rk4", "adjoint", 2e-5),
    pytest.param("tsit5", "backprop", 2e-5, marks=pytest.mark.slow),  # the others cover it
    ("tsit5", "adjoint", 2e-5)])
def test_solve_and_gradients_match_the_matrix_exponential(solver, gradients, atol):
  fn = jax.jit(jax.value_and_grad(lambda a, z0: linear_loss(a, z0, solver, gradients),
                                  argnums=(0, 1), has_aux=True))
  (_, zs), (grad_a, grad_z0) = fn(jnp.asarray(A, jnp.float32), jnp.asarray(Z0, jnp.float32))
  exact = np.stack([scipy.linalg.expm(A * t) @ Z0 for t in TS])
  np.testing.assert_allclose(zs, exact, atol=atol)
  expected_a, expected_z0 = analytic_gradients()
  np.testing.assert_allclose(grad_a, expected_a, atol=10 * atol)
  np.testing.assert_allclose(grad_z0, expected_z0, atol=10 * atol)


def test_rotation_by_right_angles_is_exact():
  img = np.random.default_rng(0).random((3, 9, 9, 3)).astype(np.float32)
  img[2] = 0.0
  img[2, 4, 7] = 1.0  # right of the centre (4, 4): above it after a counter-clockwise turn
  out = np.asarray(jax.jit(sequences.rotate)(img, jnp.array([0.0, 90.0, 180.0, 270.0, 360.0])))
  assert out.shape == (3, 5, 9, 9, 3)
  for k in range(4):
    np.testing.assert_allclose(out[:, k], np.rot90(img, k, axes=(1, 2)), atol=1e-5)
  np.testing.assert_allclose(out[:, 4], img, atol=1e-5)
  assert out[2, 1, 1, 4, 0] == pytest.approx(1.0, abs=1e-5)


def test_rotating_digits_are_turned_mnist5k_digits():
  ds = data.load("rotating_digits", num_frames=5, angle_step=90.0, size=14)
  batch = ds.test[np.arange(len(ds.test))]
  assert batch["x"].shape == (1000, 5, 14, 14, 1) and len(ds.train) == 4000
  assert 0 <= batch["x"].min() and batch["x"].max() <= 1 and batch["x"][:, 0].mean() > 0.05
  for k in range(1, 5):
    np.testing.assert_allclose(batch["x"][:, k], np.rot90(batch["x"][:, 0], k, axes=(1, 2)),
                               atol=1e-5)
  np.testing.assert_allclose(batch["t"][0], [0, 0.25, 0.5, 0.75, 1], rtol=1e-6)
  np.testing.assert_array_equal(np.bincount(batch["y"]), [100] * 10)
  with pytest.raises(ConfigError, match="size must be 28, 14 or 7"):
    data.load("rotating_digits", size=10)


def test_spirals_turn_the_way_their_label_says():
  ds = data.load("spirals")
  split = ds.train[np.arange(len(ds.train))]
  x, t, y = split["x"], split["t"], split["y"]
  assert x.shape == (800, 100, 2) and t.shape == (800, 100) and len(ds.test) == 200
  np.testing.assert_allclose(t[0, [0, -1]], [0.0, 1.0])
  assert 0.4 < y.mean() < 0.6
  centre = np.where(y[:, None] == 1, 5.0, -5.0)
  angle = np.unwrap(np.arctan2(x[..., 1], x[..., 0] - centre), axis=1)
  swept = angle[:, -10:].mean(1) - angle[:, :10].mean(1)  # about 3.4 rad, in the label's sense
  assert np.mean(np.sign(swept) == np.where(y == 1, 1, -1)) > 0.98
  _, clockwise, counter = sequences.spiral_curves()
  window = ds.test[np.arange(5)]  # noise 0.3: the distance to the nearest curve point
  curve = np.where(window["y"][:, None, None] == 1, counter, clockwise)  # (5, 500, 2)
  dist = np.linalg.norm(window["x"][:, :, None] - curve[:, None], axis=-1).min(-1)
  assert 0.2 < np.sqrt(np.mean(dist**2)) < 0.45
  again = data.load("spirals").test[np.arange(4)]["x"]  # seeded: the same split every time
  np.testing.assert_array_equal(again, ds.test[np.arange(4)]["x"])


def test_elbo_terms_by_hand():
  mu, logvar = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, np.log(4.0)]])
  # 1/2 (1 + 1 - 1 - 0) + 1/2 (0 + 4 - 1 - log 4)
  np.testing.assert_allclose(distributions.gaussian_kl(mu, logvar), [0.5 + 0.5 * (3 - np.log(4))], rtol=1e-6)
  logits = jnp.array([[[0.0, np.log(3.0)], [0.0, 0.0]]])           # (B=1, T=2, 2 values)
  x = jnp.array([[[0.3, 1.0], [1.0, 0.0]]])
  # sigmoid(0) = 1/2 whatever x; sigmoid(log 3) = 3/4 and x = 1: -log 3/4
  np.testing.assert_allclose(algo.frame_nll(logits, x, "bernoulli"),
                             [[np.log(2) + np.log(4 / 3), 2 * np.log(2)]], rtol=1e-6)
  mean = x.at[0, 0, 0].add(0.6)                                     # one value 2 sigma away
  gauss = np.log(0.3) + 0.5 * np.log(2 * np.pi)
  np.testing.assert_allclose(algo.frame_nll(mean, x, "gaussian", 0.3),
                             [[2 * gauss + 2.0, 2 * gauss]], rtol=1e-5)


def test_frame_split_and_nearest_observed_frame():
  masks = algo.frame_masks(10, observed=7, heldout=(3,))
  np.testing.assert_array_equal(masks["observed"], [1, 1, 1, 0, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(np.flatnonzero(masks["interp"]), [3])
  np.testing.assert_array_equal(np.flatnonzero(masks["extrap"]), [7, 8, 9])
  np.testing.assert_array_equal(algo.nearest_observed(masks["observed"]),
                                [0, 1, 2, 2, 4, 5, 6, 6, 6, 6])


def test_example_keys_do_not_depend_on_the_batch():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3, 2)), jnp.float32)
  draw = jax.jit(lambda v: jax.random.key_data(algo.example_keys(jax.random.key(0), v)))
  whole = draw(x)
  np.testing.assert_array_equal(whole[::-1], draw(x[::-1]))
  np.testing.assert_array_equal(whole[3:], draw(x[3:]))
  assert len({tuple(np.asarray(k).ravel()) for k in whole}) == 5


def test_model_shapes():
  """The ODE-RNN on image frames (the tiny training below runs the GRU)."""
  frame_shape = (28, 28, 1)
  model = LatentODE(frame_shape=frame_shape, latent=3, encoder_widths=(8, 4), hidden=5,
                    recognition="ode_rnn", backward=True, dynamics_widths=(6,),
                    decoder_widths=(7,))
  x, t = jnp.zeros((2, 6, *frame_shape)), jnp.broadcast_to(jnp.linspace(0, 1, 6), (2, 6))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, method="initialize"))
  out, mu, logvar = jax.eval_shape(model.apply, variables, x, t)
  assert out.shape == x.shape and mu.shape == logvar.shape == (2, 3)
  np.testing.assert_allclose(algo.refine(t[:, :3], 4)[0], np.arange(9) / 20, rtol=1e-6)


def test_original_size():
  """The original's 784-256-128-64 encoder, GRU 128, latent 32, f 33-128-128-32 and decoder
  32-128-256-784: 589,232 parameters (PyTorch's GRU has 256 more biases)."""
  x = jnp.zeros((1, 5, 28, 28, 1))
  variables = jax.eval_shape(lambda: LatentODE().init(jax.random.key(0), x, x[..., 0, 0, 0],
                                                      method="initialize"))
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables)) == 589_232


def _tiny_config(**overrides):
  """The default preset on 16x16 digits rotated on the fly through 6 quarter turns (exact),
  frames 0..3 observed but 2, frames 4 and 5 extrapolated; 64 prior samples' first frames
  judged as digits."""
  c = configlib.load("latent_ode")
  c.dataset, c.data = "digits", ml_collections.ConfigDict({"upsample": 2})
  c.fd.dataset, c.fd.num_samples, c.fd.judge_epochs = "digits", 64, 2.0
  c.rotation.num_frames, c.rotation.angle_step = 6, 90.0
  c.observed, c.heldout = 4, (2,)
  c.model.update(latent=4, encoder_widths=(16,), hidden=16, dynamics_widths=(16,),
                 decoder_widths=(32,))
  c.learning_rate, c.schedule, c.batch_size = 1e-2, "constant", 64
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 120, 1, 120, 120
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The tiny config trained by the shared loop (train metrics every step)."""
  workdir = str(tmp_path_factory.mktemp("latent_ode"))
  summary = train.train_and_evaluate(_tiny_config(), workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return summary, rows, workdir


@pytest.mark.slow  # 40 s on 2 cores, with the next test
def test_tiny_training_improves_the_held_out_elbo(trained):
  """The held-out negative ELBO after 120 steps against the loss of the first step (the
  untrained model's negative ELBO on a training batch): about 150 -> 80 nats a sequence."""
  summary, rows, workdir = trained
  losses = [r["loss"] for r in rows if r["split"] == "train"]
  after = summary["test"]
  assert after["neg_elbo"] < 0.6 * losses[0], (losses[0], after)
  assert after["interp_mse"] < after["interp_mse_nearest"]
  assert after["extrap_mse"] < after["extrap_mse_nearest"]
  np.testing.assert_allclose(after["neg_elbo"], after["recon"] + after["kl"], rtol=1e-5)
  assert {"sequences.png", "prior_sequences.png", "latent_trajectories.png", "curves.png"} <= set(
      os.listdir(os.path.join(workdir, "figures")))
  assert np.mean(losses[-10:]) < 0.6 * losses[0]
  # The prior samples' first frames, judged as digits: worse than real digits, but digits.
  assert after["fd"] > after["fd_real"] > 0 and after["judge_accuracy"] > 0.8
  assert after["classes"] >= 2


@pytest.mark.slow
def test_prior_samples_start_with_the_frames_that_are_judged(trained):
  state = train.load_state(_tiny_config(), trained[2])
  key = jax.random.key(3)
  t = jnp.broadcast_to(jnp.linspace(0, 1, 6), (5, 6))
  likelihood = _tiny_config().likelihood
  seqs = algo.prior_sequences(likelihood, state, key, t)
  frames = algo.prior_frames(likelihood, state, key, 5)
  assert seqs.shape == (5, 6, 16, 16, 1) and frames.shape == (5, 16, 16, 1)
  np.testing.assert_allclose(seqs[:, 0], frames, atol=1e-6)
  assert 0 <= frames.min() and frames.max() <= 1
  assert np.abs(seqs[:, 5] - seqs[:, 0]).max() > 0.1  # the digits turn


def test_rotation_turns_tfds_mnist_into_the_original_sequences(mock_tfds):
  config = configlib.load("latent_ode", "seed")
  config.model.update(latent=2, encoder_widths=(4,), hidden=4, dynamics_widths=(4,),
                      decoder_widths=(4,))
  ds = data.load(config.dataset, **config.data)
  batch = ds.train[np.arange(4)]
  x, t = algo.sequences(batch, (5, 72.0))
  assert x.shape == (4, 5, 28, 28, 1) and t.shape == (4, 5)
  np.testing.assert_allclose(t[0], [0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(x[:, 0], batch["x"], atol=1e-6)
  np.testing.assert_allclose(x[:, 3], sequences.rotate(batch["x"], jnp.array([216.0]))[:, 0])
  algo.init(config, jax.random.key(0), batch)
  f = algo.frames(config, x.shape[1])
  assert (f.num_frames, f.observed, f.heldout, f.rotation) == (5, 5, (), (5, 72.0))


def test_bad_input_is_refused():
  config = _tiny_config()
  images = data.load("digits").train[np.arange(4)]
  with pytest.raises(DataError, match="latent_ode needs sequences"):
    algo.init(_tiny_config(rotation=ml_collections.ConfigDict(
        {"num_frames": 0, "angle_step": 0.0})), jax.random.key(0), images)
  with pytest.raises(ConfigError, match="observed = 9 frames exceeds the 6 frames"):
    algo.init(_tiny_config(observed=9), jax.random.key(0), images)
  with pytest.raises(ConfigError, match="must lie inside the observed window"):
    algo.init(_tiny_config(heldout=(3,)), jax.random.key(0), images)
  spiral = data.load("spirals").train[np.arange(4)]
  with pytest.raises(ConfigError, match="rotation turns images"):
    algo.init(config, jax.random.key(0), spiral)
  config.rotation.num_frames = 0
  with pytest.raises(DataError, match="bernoulli likelihood needs values in"):
    algo.init(config, jax.random.key(0), spiral)
  config.model.solver = "euler"
  with pytest.raises(ConfigError, match="unknown solver 'euler'; choose one of: rk4, tsit5"):
    configlib.validate(config, 1)
  with pytest.raises(DataError, match=r"LatentODE needs sequences of frames \(B, T, 2\)"):
    LatentODE(frame_shape=(2,)).init(jax.random.key(0), jnp.zeros((1, 5, 3)))
