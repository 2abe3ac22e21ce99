"""Latent ODE-VAE (Chen et al. 2018; Rubanova et al. 2019): infer z0, solve dz/dt = f(z, t), decode.

A sequence of frames x_1..x_T observed at times t_1 < ... < t_T is explained by one initial
latent state z0 ~ q(z0 | x) that an ODE carries through time, z(t_i) = z0 + int_{t_1}^{t_i}
f(z(s), s) ds, and a decoder that renders each frame from its own z(t_i):

- recognition: a per-frame MLP encoder (Dense, ReLU, LayerNorm), then over the observed frames
  either a GRU (``'gru'``, the original's) or an ODE-RNN (``'ode_rnn'``, Rubanova et al.:
  between observations the hidden state follows its own ODE dh/dt = g(h) for the time elapsed,
  then a GRU update), run forwards in time (the original) or backwards (``backward=True``, so
  the state that ends the scan sits at t_1, as Rubanova et al.); linear heads give the mean and
  log-variance of q(z0 | x);
- dynamics: an MLP f on [z; t] with tanh activations (or on z alone: an autonomous ODE, whose
  rule does not depend on the clock, so it extrapolates past the times it was trained on);
- decoder: a per-frame MLP from z(t_i) to the frame's logits (Bernoulli) or mean (Gaussian).

The ODEs are solved with diffrax (:func:`odeint`): ``'rk4'`` takes fixed RK4 steps (the 3/8
rule, torchdiffeq's ``'rk4'``, which the original used with one step a frame interval);
``'tsit5'`` is adaptive (Tsitouras 5(4) with a PID step-size controller at ``rtol``/``atol``).
Gradients come from backpropagating through the solver's operations (``'backprop'``,
``diffrax.RecursiveCheckpointAdjoint``) or from solving the adjoint ODE backwards in time
(``'adjoint'``, ``diffrax.BacksolveAdjoint``: memory independent of the number of steps,
gradients exact only up to the error of the backward solve).

Every recurrent or ODE network (GRU, f, g) holds its parameters as one entry of the module's
``params`` and is applied as a pure function of them inside ``lax.scan`` and diffrax.
"""

from typing import Callable, ClassVar, Sequence

import diffrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.errors import ConfigError, DataError, choose

SOLVERS = ("rk4", "tsit5")
GRADIENTS = ("backprop", "adjoint")
RECOGNITIONS = ("gru", "ode_rnn")

# The 3/8 rule: c = (0, 1/3, 2/3, 1), b = (1, 3, 3, 1) / 8. No error estimate (fixed steps only).
_RK4_TABLEAU = diffrax.ButcherTableau(
    a_lower=(np.array([1 / 3]), np.array([-1 / 3, 1.0]), np.array([1.0, -1.0, 1.0])),
    b_sol=np.array([1 / 8, 3 / 8, 3 / 8, 1 / 8]), b_error=np.zeros(4),
    c=np.array([1 / 3, 2 / 3, 1.0]))


class RK4(diffrax.AbstractERK):
  """Classic fourth-order Runge-Kutta in its 3/8 rule (torchdiffeq's ``'rk4'``), fixed steps."""

  tableau: ClassVar[diffrax.ButcherTableau] = _RK4_TABLEAU
  interpolation_cls: ClassVar[Callable] = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

  def order(self, terms):
    return 4


def odeint(f: Callable, args, y0: jax.Array, ts: jax.Array, *, solver: str = "rk4",
           steps: int = 1, rtol: float = 1e-3, atol: float = 1e-6,
           gradients: str = "backprop", max_steps: int = 4096,
           save_ts: jax.Array | None = None) -> jax.Array:
  """The solution of dy/dt = f(t, y, args), y(ts[0]) = y0, at the times ts (or save_ts).

  Args:
    f: the vector field ``f(t, y, args) -> dy/dt``, a pure function.
    args: what f differentiates against (parameters): a pytree passed through diffrax, so
      ``'adjoint'`` gradients reach it.
    y0: (D,) initial state.
    ts: (T,) increasing times, T >= 2.
    solver: ``'rk4'``: steps * (T - 1) equal RK4 steps over [ts[0], ts[-1]] (``steps`` a frame
      interval on a uniform grid); ``'tsit5'``: adaptive, with ``rtol`` and ``atol``.
    gradients: ``'backprop'`` or ``'adjoint'`` (see the module docstring).
    max_steps: the most steps an adaptive solve may take.
    save_ts: (S,) times in [ts[0], ts[-1]] to return y at instead of ts, with the steps still
      set by ts (between steps diffrax interpolates the solver's dense output).

  Returns:
    (T, D) or (S, D): y at every time of ts (or save_ts); NaN where the solve failed (an
    adaptive solve that needs more than ``max_steps``), which stops a training run. Failure is
    reported as NaN rather than raised from a host callback, so the compiled programs carry no
    callback and the persistent compilation cache can keep them.
  """
  choose("solver", solver, SOLVERS)
  choose("gradients", gradients, GRADIENTS)
  if solver == "rk4":
    method, controller = RK4(), diffrax.ConstantStepSize()
    intervals = steps * (ts.shape[0] - 1)
    dt0, max_steps = (ts[-1] - ts[0]) / intervals, intervals + 1
  else:
    method, dt0 = diffrax.Tsit5(), None
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
  adjoint = (diffrax.BacksolveAdjoint() if gradients == "adjoint"
             else diffrax.RecursiveCheckpointAdjoint())
  solution = diffrax.diffeqsolve(
      diffrax.ODETerm(f), method, ts[0], ts[-1], dt0, y0, args=args,
      saveat=diffrax.SaveAt(ts=ts if save_ts is None else save_ts),
      stepsize_controller=controller, adjoint=adjoint,
      max_steps=max_steps, throw=False)
  return jnp.where(solution.result == diffrax.RESULTS.successful, solution.ys, jnp.nan)


class MLP(nn.Module):
  """Dense layers of ``widths`` with ``activation`` (and LayerNorm after each if asked), then a
  linear layer to ``out`` features (none when ``out`` is 0). x: (..., D) -> (..., out)."""

  widths: Sequence[int]
  out: int = 0
  activation: str = "relu"
  layer_norm: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = {"relu": nn.relu, "tanh": jnp.tanh}[self.activation]
    h = x.astype(self.dtype)
    for width in self.widths:
      h = act(nn.Dense(width, dtype=self.dtype)(h))
      if self.layer_norm:
        h = nn.LayerNorm(dtype=self.dtype)(h)
    return nn.Dense(self.out, dtype=self.dtype)(h) if self.out else h


class Dynamics(nn.Module):
  """The vector field f(z, t) = MLP([z; t]) (tanh), or g(h) = MLP(h) when ``time`` is False.
  (t scalar, z (..., D)) -> (..., D)."""

  widths: Sequence[int]
  time: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array, z: jax.Array) -> jax.Array:
    h = z
    if self.time:
      h = jnp.concatenate([z, jnp.broadcast_to(t, z.shape[:-1] + (1,)).astype(z.dtype)], -1)
    return MLP(self.widths, z.shape[-1], "tanh", dtype=self.dtype)(h).astype(z.dtype)


class LatentODE(nn.Module):
  """The latent ODE-VAE (see the module docstring). The original's sizes are the defaults.

  Attributes:
    frame_shape: the shape of one frame, e.g. (28, 28, 1) or (2,).
    latent: dimension of z.
    encoder_widths: the per-frame MLP encoder's widths (empty: the GRU reads raw frames).
    hidden: GRU state size.
    recognition: ``'gru'`` or ``'ode_rnn'``.
    backward: run the recognition network from the last frame to the first.
    dynamics_widths: hidden widths of f (and of the ODE-RNN's g).
    time_dependent: f reads [z; t] (the original's); False: f(z) alone, an autonomous ODE.
    decoder_widths: hidden widths of the per-frame decoder.
    solver, steps, rtol, atol, gradients, max_steps: how the ODEs are solved (:func:`odeint`).
    dtype: compute dtype of the dense layers; parameters and ODE states stay float32.
  """

  frame_shape: Sequence[int] = (28, 28, 1)
  latent: int = 32
  encoder_widths: Sequence[int] = (256, 128, 64)
  hidden: int = 128
  recognition: str = "gru"
  backward: bool = False
  dynamics_widths: Sequence[int] = (128, 128)
  time_dependent: bool = True
  decoder_widths: Sequence[int] = (128, 256)
  solver: str = "rk4"
  steps: int = 1
  rtol: float = 1e-3
  atol: float = 1e-6
  gradients: str = "backprop"
  max_steps: int = 4096
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    choose("recognition", self.recognition, RECOGNITIONS)
    choose("solver", self.solver, SOLVERS)
    choose("gradients", self.gradients, GRADIENTS)
    if self.steps < 1 or self.latent < 1 or self.hidden < 1:
      raise ConfigError(f"LatentODE steps, latent and hidden must be positive; got steps "
                        f"{self.steps}, latent {self.latent}, hidden {self.hidden}.")
    features = int(np.prod(self.frame_shape))
    code = self.encoder_widths[-1] if self.encoder_widths else features
    self.frame_encoder = MLP(self.encoder_widths, 0, "relu", layer_norm=True, dtype=self.dtype)
    self.gru = self.param("gru", lambda rng: self._gru().init(
        rng, jnp.zeros(self.hidden), jnp.zeros(code))["params"])
    if self.recognition == "ode_rnn":
      self.hidden_dynamics = self.param("hidden_dynamics", lambda rng: self._g().init(
          rng, 0.0, jnp.zeros(self.hidden))["params"])
    self.heads = nn.Dense(2 * self.latent, dtype=self.dtype)
    self.dynamics = self.param("dynamics", lambda rng: self._f().init(
        rng, 0.0, jnp.zeros(self.latent))["params"])
    self.decoder = MLP(self.decoder_widths, features, "relu", dtype=self.dtype)

  # The networks applied as pure functions of their parameters (unbound: parent=None).
  def _gru(self):
    return nn.GRUCell(self.hidden, dtype=self.dtype, parent=None)

  def _f(self):
    return Dynamics(self.dynamics_widths, time=self.time_dependent, dtype=self.dtype, parent=None)

  def _g(self):
    return Dynamics(self.dynamics_widths, time=False, dtype=self.dtype, parent=None)

  def _solve(self, f, args, y0, ts, save_ts=None):
    return odeint(f, args, y0, ts, solver=self.solver, steps=self.steps, rtol=self.rtol,
                  atol=self.atol, gradients=self.gradients, max_steps=self.max_steps,
                  save_ts=save_ts)

  def _check(self, x: jax.Array) -> None:
    if x.ndim < 3 or tuple(x.shape[2:]) != tuple(self.frame_shape):
      frame = ", ".join(map(str, self.frame_shape))
      raise DataError(f"LatentODE needs sequences of frames (B, T, {frame}); got shape {x.shape}.")

  def initialize(self, x: jax.Array, t: jax.Array) -> jax.Array:
    """Creates every parameter without solving an ODE (a cheap ``init``; setup declares the
    GRU's and the ODEs' parameters): x (B, T, ...), t (B, T) -> the frames decoded from the
    heads' mean of a zero state (B, T, *frame_shape)."""
    self._check(x)
    self.frame_encoder(x.reshape(*x.shape[:2], -1))
    mu, _ = jnp.split(self.heads(jnp.zeros((*t.shape, self.hidden))), 2, axis=-1)
    return self.decode(mu)

  def encode(self, x: jax.Array, t: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The posterior q(z0 | observed frames).

    Args:
      x: (B, T, *frame_shape) frames; t: (B, T) their times; mask: (B, T) bool, True where a
        frame is observed (the others are skipped; an ODE-RNN still evolves through them).

    Returns:
      (mu, logvar), each (B, latent).
    """
    self._check(x)
    b, n = x.shape[:2]
    e = self.frame_encoder(x.reshape(b, n, -1))                           # (B, T, E)
    t = t.astype(jnp.float32)
    if self.backward:
      e, t, mask = e[:, ::-1], t[:, ::-1], mask[:, ::-1]
    gaps = jnp.abs(jnp.diff(t, axis=1, prepend=t[:, :1]))               # (B, T), first 0
    gru, g = self._gru(), self._g()
    ode_rnn = self.recognition == "ode_rnn"
    hidden_params = self.hidden_dynamics if ode_rnn else None

    def evolve(h, gap):  # h (B, H) after time gap (B,): dh/ds = gap g(h) for s in [0, 1]
      field = lambda s, y, a: a[1][:, None] * g.apply({"params": a[0]}, s, y)
      return self._solve(field, (hidden_params, gap), h, jnp.array([0.0, 1.0]))[-1]

    def step(h, inputs):
      e_i, gap_i, m_i = inputs
      if ode_rnn:
        h = evolve(h, gap_i)
      h_new, _ = gru.apply({"params": self.gru}, h, e_i)
      return jnp.where(m_i[:, None], h_new.astype(jnp.float32), h), None

    h0 = jnp.zeros((b, self.hidden), jnp.float32)
    h, _ = jax.lax.scan(step, h0, (jnp.swapaxes(e, 0, 1), gaps.T, mask.T))
    mu, logvar = jnp.split(self.heads(h).astype(jnp.float32), 2, axis=-1)
    return mu, logvar

  def trajectory(self, z0: jax.Array, t: jax.Array, t_out: jax.Array | None = None) -> jax.Array:
    """z(t) for each sequence: z0 (B, latent), t (B, T) increasing -> (B, T, latent); or at the
    times t_out (B, S) within [t_1, t_T] -> (B, S, latent), taking the same steps as for t."""
    f = self._f()
    field = lambda s, z, params: f.apply({"params": params}, s, z)
    t = t.astype(jnp.float32)
    t_out = t if t_out is None else t_out.astype(jnp.float32)
    return jax.vmap(lambda z, ts, out: self._solve(field, self.dynamics, z, ts, out))(
        z0.astype(jnp.float32), t, t_out)

  def decode(self, z: jax.Array) -> jax.Array:
    """Per-frame logits or means: z (..., latent) -> (..., *frame_shape)."""
    return self.decoder(z).astype(jnp.float32).reshape(*z.shape[:-1], *self.frame_shape)

  def __call__(self, x: jax.Array, t: jax.Array | None = None, mask: jax.Array | None = None,
               eps: jax.Array | None = None, train: bool = False):
    """Encode, sample z0 = mu + exp(logvar / 2) eps (mu when ``eps`` is None), solve, decode.

    Args:
      x: (B, T, *frame_shape); t: (B, T) (default ``linspace(0, 1, T)``); mask: (B, T) bool
        (default all observed); eps: (B, latent) standard normal noise.

    Returns:
      (out (B, T, *frame_shape), mu (B, latent), logvar (B, latent)).
    """
    self._check(x)
    b, n = x.shape[:2]
    t = jnp.broadcast_to(jnp.linspace(0, 1, n), (b, n)) if t is None else t
    mask = jnp.ones((b, n), bool) if mask is None else mask
    mu, logvar = self.encode(x, t, mask)
    z0 = mu if eps is None else mu + jnp.exp(0.5 * logvar) * eps
    return self.decode(self.trajectory(z0, t)), mu, logvar
