"""Denoising diffusion (DDPM, Ho et al. 2020; DDIM, Song et al. 2021): the schedule and the
process, as pure functions.

Time is an integer index ``t`` in ``0 .. T-1``: ``x_t`` is the image after ``t + 1`` noising
steps, ``alpha_bar[t] = prod_{s <= t} (1 - beta_s)`` and ``x_{-1} = x_0`` is the clean image
(the paper's ``t = 1 .. T``, shifted by one, as in its code). Shapes: images ``x`` are
``(B, H, W, C)`` (any shape with a leading batch dim), times ``t`` are ``(B,)`` int32.

- forward: ``q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)`` (:func:`q_sample`);
- posterior: ``q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, beta_tilde_t I)`` with
  ``c0_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)``,
  ``ct_t = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)`` and
  ``beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)`` (:func:`q_posterior`);
- reverse: an epsilon-predictor gives ``x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) /
  sqrt(alpha_bar_t)``, and the ancestral step draws from the posterior at ``x0_hat``
  (:func:`ancestral_step`); DDIM jumps between a subsequence of times (:func:`ddim_step`).

The samplers (:func:`sample_ancestral`, :func:`sample_ddim`) are ``jax.lax.scan`` loops over
the steps, to be called under ``jax.jit``; ``eps_fn(x_t, t) -> eps`` is the trained network.
"""

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.errors import ConfigError, choose

SCHEDULES = ("linear", "cosine")
EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class Schedule:
  """Every per-step coefficient of a T-step process, each of shape (T,), float32.

  ``alpha_bar_prev[t] = alpha_bar[t - 1]`` (1 at t = 0); ``posterior_variance`` is
  ``beta_tilde``; ``posterior_coef_x0`` and ``posterior_coef_xt`` are ``c0`` and ``ct`` of the
  module docstring.
  """

  betas: jax.Array
  alphas: jax.Array
  alpha_bar: jax.Array
  alpha_bar_prev: jax.Array
  posterior_variance: jax.Array
  posterior_coef_x0: jax.Array
  posterior_coef_xt: jax.Array

  @property
  def num_steps(self) -> int:
    return self.betas.shape[0]


def _check_steps(num_steps: int) -> None:
  if int(num_steps) != num_steps or num_steps <= 0:
    raise ConfigError(f"the number of diffusion steps T must be a positive integer; got "
                      f"{num_steps!r}.")


def linear_betas(num_steps: int, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
  """(T,) float64 betas rising linearly from ``start`` to ``end`` (DDPM: 1e-4 .. 0.02 for
  T = 1000)."""
  _check_steps(num_steps)
  return np.linspace(start, end, num_steps)


def cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
  """Nichol and Dhariwal's ``alpha_bar(u) = f(u) / f(0)``, ``f(u) = cos^2((u + s) / (1 + s)
  pi / 2)`` at fractions of the process ``u = t / T`` in [0, 1]; same shape as ``u``."""
  f = lambda v: np.cos((v + s) / (1 + s) * np.pi / 2) ** 2
  return f(np.asarray(u, np.float64)) / f(0.0)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
  """(T,) float64 betas ``1 - alpha_bar((t + 1) / T) / alpha_bar(t / T)`` of the cosine
  schedule, clipped at ``max_beta`` (near u = 1 alpha_bar falls to 0 and the ratio to 1)."""
  _check_steps(num_steps)
  alpha_bar = cosine_alpha_bar(np.arange(num_steps + 1) / num_steps, s)
  return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0.0, max_beta)


def make_schedule(kind: str, num_steps: int) -> Schedule:
  """The ``'linear'`` or ``'cosine'`` schedule of ``num_steps`` steps with its coefficients,
  computed in float64 and stored as float32."""
  choose("beta schedule", kind, SCHEDULES)
  betas = (linear_betas if kind == "linear" else cosine_betas)(num_steps)
  alphas = 1.0 - betas
  alpha_bar = np.cumprod(alphas)
  alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
  coefficients = dict(
      betas=betas, alphas=alphas, alpha_bar=alpha_bar, alpha_bar_prev=alpha_bar_prev,
      posterior_variance=betas * (1 - alpha_bar_prev) / (1 - alpha_bar),
      posterior_coef_x0=np.sqrt(alpha_bar_prev) * betas / (1 - alpha_bar),
      posterior_coef_xt=np.sqrt(alphas) * (1 - alpha_bar_prev) / (1 - alpha_bar))
  return Schedule(**{k: jnp.asarray(v, jnp.float32) for k, v in coefficients.items()})


def _per_example(values: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
  """``values[t]`` (B,) broadcast against x (B, ...): shape (B, 1, ..., 1)."""
  return values[t].reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)


def q_mean_variance(schedule: Schedule, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean (B, ...) and variance (B, 1, ..., 1) of ``q(x_t | x_0)``."""
  ab = _per_example(schedule.alpha_bar, t, x0)
  return jnp.sqrt(ab) * x0, 1 - ab


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
  """A draw of x_t (B, ...) from ``q(x_t | x_0)`` in closed form, given the noise eps ~ N(0, I)
  of x0's shape: ``sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``."""
  mean, var = q_mean_variance(schedule, x0, t)
  return mean + jnp.sqrt(var) * eps


def q_posterior(schedule: Schedule, x0: jax.Array, xt: jax.Array,
                t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean (B, ...) and variance (B, 1, ..., 1) of ``q(x_{t-1} | x_t, x_0)``."""
  mean = (_per_example(schedule.posterior_coef_x0, t, xt) * x0
          + _per_example(schedule.posterior_coef_xt, t, xt) * xt)
  return mean, _per_example(schedule.posterior_variance, t, xt)


def predict_x0(schedule: Schedule, xt: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
  """x_0 (B, ...) implied by x_t and its noise: ``(x_t - sqrt(1 - alpha_bar_t) eps) /
  sqrt(alpha_bar_t)``, q_sample solved for x_0."""
  ab = _per_example(schedule.alpha_bar, t, xt)
  return (xt - jnp.sqrt(1 - ab) * eps) / jnp.sqrt(ab)


def predict_eps(schedule: Schedule, xt: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
  """The noise (B, ...) that takes x_0 to x_t: ``(x_t - sqrt(alpha_bar_t) x_0) /
  sqrt(1 - alpha_bar_t)``; for a data set of the single point x_0 this is the exact answer."""
  ab = _per_example(schedule.alpha_bar, t, xt)
  return (xt - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab)


def ancestral_step(schedule: Schedule, xt: jax.Array, t: jax.Array, eps: jax.Array,
                   noise: jax.Array, clip: bool = True) -> tuple[jax.Array, jax.Array]:
  """One DDPM step: x_{t-1} ~ ``q(x_{t-1} | x_t, x0_hat)``, the posterior at the predicted x_0.

  Args:
    xt: (B, ...) the current images; t: (B,) their time; eps: (B, ...) the predicted noise;
    noise: (B, ...) a N(0, I) draw (unused at t = 0, where the posterior variance is 0).
    clip: clip x0_hat to the data range [-1, 1] first.

  Returns:
    (x_{t-1}, x0_hat), both (B, ...).
  """
  x0 = predict_x0(schedule, xt, t, eps)
  x0 = jnp.clip(x0, -1, 1) if clip else x0
  mean, var = q_posterior(schedule, x0, xt, t)
  return mean + jnp.sqrt(var) * noise, x0


def ddim_timesteps(num_steps: int, ddim_steps: int) -> jax.Array:
  """The S = ``ddim_steps`` times ``floor(i T / S)``, i = 0 .. S-1, in increasing order (S,)."""
  _check_steps(num_steps)
  if int(ddim_steps) != ddim_steps or not 0 < ddim_steps <= num_steps:
    raise ConfigError(f"ddim_steps must be an integer in [1, T = {num_steps}]; got "
                      f"{ddim_steps!r}.")
  return jnp.asarray([i * num_steps // ddim_steps for i in range(ddim_steps)], jnp.int32)


def ddim_step(schedule: Schedule, xt: jax.Array, t: jax.Array, t_prev: jax.Array,
              eps: jax.Array, noise: jax.Array, eta: float = 0.0,
              clip: bool = True) -> tuple[jax.Array, jax.Array]:
  """One DDIM step from time t to an earlier t_prev (-1 for the clean image):

  ``x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps + sigma noise``,
  ``sigma = eta sqrt((1 - ab_prev) / (1 - ab_t)) sqrt(1 - ab_t / ab_prev)``: eta = 0 is
  deterministic, eta = 1 with t_prev = t - 1 is the ancestral step with variance beta_tilde.
  When x0_hat is clipped, eps is recomputed from it so that both stay consistent with x_t.

  Args:
    xt, eps, noise: (B, ...); t, t_prev: (B,) int.

  Returns:
    (x_prev, x0_hat), both (B, ...).
  """
  x0 = predict_x0(schedule, xt, t, eps)
  if clip:
    x0 = jnp.clip(x0, -1, 1)
    eps = predict_eps(schedule, xt, t, x0)
  ab = _per_example(schedule.alpha_bar, t, xt)
  ab_prev = jnp.where(t_prev >= 0, schedule.alpha_bar[jnp.maximum(t_prev, 0)], 1.0)
  ab_prev = ab_prev.reshape(ab.shape).astype(xt.dtype)
  sigma = eta * jnp.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
  direction = jnp.sqrt(jnp.maximum(1 - ab_prev - sigma ** 2, 0.0)) * eps
  return jnp.sqrt(ab_prev) * x0 + direction + sigma * noise, x0


def sample_ancestral(schedule: Schedule, eps_fn: EpsFn, key: jax.Array, shape: tuple,
                     clip: bool = True, trajectory: int = 0):
  """DDPM sampling: x_{T-1} ~ N(0, I), then T ancestral steps down to x_{-1} = x_0.

  Args:
    eps_fn: ``(x_t (B, ...), t (B,)) -> eps (B, ...)``.
    key: the step at time t draws its noise from ``fold_in(key, t)``.
    shape: (B, ...) of the samples.
    trajectory: k > 0 also returns the chains of the first k samples.

  Returns:
    x_0 (B, ...); with ``trajectory = k``, ``(x_0, xs, x0s)`` where ``xs[i]`` (T, k, ...) is
    the input of the step at time ``T - 1 - i`` and ``x0s[i]`` its prediction x0_hat.
  """
  x = jax.random.normal(jax.random.fold_in(key, schedule.num_steps), shape)

  def step(x, t):
    tt = jnp.full(shape[:1], t, jnp.int32)
    noise = jax.random.normal(jax.random.fold_in(key, t), shape)
    x_prev, x0 = ancestral_step(schedule, x, tt, eps_fn(x, tt), noise, clip)
    return x_prev, ((x[:trajectory], x0[:trajectory]) if trajectory else None)

  x, chain = jax.lax.scan(step, x, jnp.arange(schedule.num_steps - 1, -1, -1))
  return (x, *chain) if trajectory else x


def sample_ddim(schedule: Schedule, eps_fn: EpsFn, key: jax.Array, shape: tuple,
                ddim_steps: int, eta: float = 0.0, clip: bool = True,
                x_init: jax.Array | None = None) -> jax.Array:
  """DDIM sampling over the S = ``ddim_steps`` times of :func:`ddim_timesteps`, from
  x_{T-1} ~ N(0, I) (or ``x_init`` (B, ...)) down to x_0 (B, ...); eta = 0 is deterministic
  given the start."""
  times = ddim_timesteps(schedule.num_steps, ddim_steps)
  x = (jax.random.normal(jax.random.fold_in(key, schedule.num_steps), shape) if x_init is None
       else x_init)
  pairs = jnp.stack([times[::-1], jnp.concatenate([times[:-1][::-1], jnp.array([-1])])], 1)

  def step(x, pair):
    t, t_prev = (jnp.full(shape[:1], p, jnp.int32) for p in (pair[0], pair[1]))
    noise = jax.random.normal(jax.random.fold_in(key, pair[0]), shape)
    return ddim_step(schedule, x, t, t_prev, eps_fn(x, t), noise, eta, clip)[0], None

  return jax.lax.scan(step, x, pairs)[0]
