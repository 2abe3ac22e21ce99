"""Latent ODE-VAE (the original's GRU recognition, MLP dynamics, RK4, per-frame MLP decoder).

Presets (held-out split; negative ELBO in nats per sequence, summed over the sequence's
observed frames, from one sample of z0; interpolation / extrapolation MSE per value of the
prediction from z0 = mu, beside the nearest observed frame's; measured with jax 0.10.2 on 2
CPU cores (Intel Xeon, AVX-512) on 2026-12-07 by tools/results.py, the judge cached):
  default  rotating_digits: the 5,000 mnist5k digits (4,000 / 1,000) at 28x28, each rotated
           through 10 angles 36 degrees apart (one turn) at t = 0, 1/9, ..., 1; frames 0..6
           observed but frame 3, frames 7..9 extrapolated. The original's sizes (589,104
           parameters; f reads z only, see below), GRU run backwards in time, RK4 one step a
           frame interval, Adam 2e-3 cosine, batch 64, 15 epochs (930 steps):
           neg ELBO 846.1 per sequence of 6 observed frames (recon 799.7 + KL 46.4; 141.0 a
           frame), interpolation MSE 0.0361 (nearest frame 0.0954), extrapolation MSE 0.0610
           (0.1137); MNIST FD of the first frames of 1,000 sequences drawn from the prior
           413.2 (judge confidence 0.70, 8 classes; real test digits 2.78, see
           m2m_jax/algorithms/sample_quality.py); 59 s.
  spirals  the latent-ODE paper's noisy 2-D spirals (800 / 200; 100 points, noise 0.3): 60
           points observed but 6 (every 10th from 5), 40 extrapolated. As torchdiffeq's example:
           latent 4, recognition on raw points run backwards with 25 units (a GRU here, a plain
           RNN there), f 4->20->4 (autonomous), decoder 4->20->2, Gaussian likelihood sigma 0.3
           (2,659 parameters); Adam 1e-2 cosine, batch 100, 100 epochs (800 steps): neg ELBO
           62.9 per sequence of 54 observed points (recon 42.0 + KL 20.9), interpolation MSE
           0.118 (nearest point 0.193; the noise alone gives 0.09), extrapolation MSE 3.76
           (5.03); 39 s.
  ode_rnn  the default with an ODE-RNN recognition network (Rubanova et al. 2019): the hidden
           state follows dh/dt = g(h) (128->128->128->128, tanh) between frames, then a GRU
           update (638,640 parameters): neg ELBO 841.3 (recon 794.9 + KL 46.5), interpolation
           MSE 0.0365, extrapolation MSE 0.0579; MNIST FD 430.8 (confidence 0.72, 8 classes);
           77 s.
  adjoint  the spirals with adaptive Tsit5 (rtol 1e-3, atol 1e-4) and adjoint gradients
           (diffrax.BacksolveAdjoint): neg ELBO 62.95, interpolation MSE 0.1186, extrapolation
           MSE 3.765, within 0.1% of the spirals' (one RK4 step an interval is already accurate
           here), at 4.6 times the time: 177 s.
  seed     the original on tfds MNIST (needs the dataset prepared; not measured here): every
           train image rotated on the fly through 0, 72, ..., 288 degrees at t = linspace(0, 1,
           5), all 5 frames observed, GRU forwards in time, f on [z; t], RK4 one step a frame,
           latent 32 (589,232 parameters), Adam 1e-3, batch 64, 50 epochs. The original printed
           the training-set negative ELBO per 5-frame sequence: epoch 0 974.60, epoch 49 412.96
           (82.6 a frame, still falling); this preset reports the same unit on the test split.

What differs from the original, and why: it trained and reported on the training set only;
here the held-out split is evaluated, with frames held out inside the window and frames past
it, so interpolation and extrapolation are measured against a baseline. The offline presets
run the recognition GRU backwards in time, so its last state sits at t0 where z0 lives (as
Rubanova et al.), and make f autonomous (f(z), not f(z, t)): rotation does not depend on the
clock, and a t input never trained past the window leaves extrapolation to guesswork. The
adjoint the original mentioned but did not use is `model.gradients = 'adjoint'`.

  python -m m2m_jax.main --config=configs/latent_ode.py --workdir=runs/latent_ode
  python -m m2m_jax.main --config=configs/latent_ode.py:spirals --workdir=runs/latent_ode_spirals
  python -m m2m_jax.main --config=configs/latent_ode.py:seed --workdir=runs/latent_ode_seed \
      --config.data.download=True   # the first time: needs internet and TensorFlow
"""

import ml_collections

from m2m_jax import configlib, evaluators
from m2m_jax.algorithms import sample_quality


def default():
  c = configlib.base()
  c.algorithm = "latent_ode"
  # Data: mnist5k digits rotated through 10 angles 36 degrees apart (one full turn).
  c.dataset = "rotating_digits"
  c.data.num_frames = 10
  c.data.angle_step = 36.0
  c.data.size = 28
  c.observed = 7        # frames 0..6 are the window; 7, 8, 9 are extrapolated
  c.heldout = (3,)      # interior frames held out of the window (interpolated)
  c.likelihood = "bernoulli"
  c.obs_std = 1.0       # the Gaussian likelihood's standard deviation (unused for Bernoulli)
  c.rotation = ml_collections.ConfigDict({"num_frames": 0, "angle_step": 72.0})  # image datasets
  # Model: the original's sizes.
  c.model_name = "latent_ode"
  c.model.latent = 32
  c.model.encoder_widths = (256, 128, 64)
  c.model.hidden = 128
  c.model.recognition = "gru"
  c.model.backward = True
  c.model.dynamics_widths = (128, 128)
  c.model.time_dependent = False  # f(z): the rotation does not depend on the clock
  c.model.decoder_widths = (128, 256)
  c.model.solver = "rk4"
  c.model.steps = 1
  c.model.rtol = 1e-3
  c.model.atol = 1e-4
  c.model.gradients = "backprop"
  # Sample quality: first frames of prior sequences, judged as mnist5k digits (MNIST FD).
  c.fd = sample_quality.default_config()
  c.evals.samples = evaluators.spec("samples", every=-1)  # after training
  c.fd.dataset = "mnist5k"
  # Optimizer.
  c.optimizer = "adam"
  c.learning_rate = 2e-3
  c.schedule = "cosine"
  c.batch_size = 64
  c.num_epochs = 15.0
  # Cadence.
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  return c


def spirals():
  """The latent-ODE example's spirals: latent 4, GRU 25, f 20 wide, Gaussian decoder."""
  c = default()
  c.dataset = "spirals"
  c.data = ml_collections.ConfigDict({"num_points": 100, "noise": 0.3})
  c.observed = 60
  c.heldout = tuple(range(5, 60, 10))
  c.likelihood = "gaussian"
  c.obs_std = 0.3
  c.fd.num_samples = 0  # points, not images: nothing to judge
  c.model.latent = 4
  c.model.encoder_widths = ()
  c.model.hidden = 25
  c.model.dynamics_widths = (20,)
  c.model.decoder_widths = (20,)
  c.learning_rate = 1e-2
  c.batch_size = 100
  c.num_epochs = 100.0
  c.log_every = 40
  c.eval_every = 200
  c.checkpoint_every = 200
  return c


def ode_rnn():
  """The default with an ODE-RNN recognition network (Rubanova et al. 2019)."""
  c = default()
  c.model.recognition = "ode_rnn"
  return c


def adjoint():
  """The spirals with adaptive Tsit5 and adjoint gradients."""
  c = spirals()
  c.model.solver = "tsit5"
  c.model.gradients = "adjoint"
  return c


def seed():
  """The original: RotatingMNIST from tfds MNIST (5 frames at 72 degrees, all observed), GRU
  forwards in time, RK4 one step a frame, latent 32, Adam 1e-3, batch 64, 50 epochs."""
  c = default()
  configlib.use_tfds(c, "mnist")
  c.rotation.num_frames = 5
  c.rotation.angle_step = 72.0
  c.fd.dataset = ""     # the frames are tfds MNIST's own images
  c.observed = 0
  c.heldout = ()
  c.model.backward = False
  c.model.time_dependent = True
  c.learning_rate = 1e-3
  c.schedule = "constant"
  c.num_epochs = 50.0
  c.eval_every = 2000
  c.checkpoint_every = 2000
  return c


PRESETS = {"default": default, "spirals": spirals, "ode_rnn": ode_rnn, "adjoint": adjoint,
           "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
