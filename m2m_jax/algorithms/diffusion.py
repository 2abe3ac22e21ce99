"""Denoising diffusion probabilistic model (DDPM, Ho et al. 2020), sampled two ways.

Training: images in [0, 1] are scaled to [-1, 1] (x_0); each step draws a time t uniformly in
0 .. T-1 and noise eps ~ N(0, I) per image, forms x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps in closed form and minimises L_simple = mean((eps_theta(x_t, t) -
eps)^2), the variational bound with its per-term weights dropped. The optimizer keeps an
exponential moving average of the weights (:func:`m2m_jax.ops.optim.params_ema`), ``ema <- d
ema + (1 - d) params`` with ``d = min(ema_decay, (1 + n) / (10 + n))`` at the n-th update (the
warm-up stops the average from remembering the random initialisation in short runs);
evaluation and sampling use it.

Evaluation (per test image, with the EMA weights): ``eps_mse``, the mean squared error of the
predicted noise over the image's pixels at a time t and noise drawn from a key derived from the
image itself (:func:`m2m_jax.ops.keys.image_keys`, so independent of batching), the
original's unit; ``eps_mse_raw``, the same with the raw weights; and ``eps_mse_t<k>`` at fixed
times k = T/10, T/2, 9T/10. After training, the ``samples`` evaluator's :func:`sample_metrics`
draws ``config.fd.num_samples`` images by T-step ancestral sampling (``ddpm``) and by
``config.ddim_steps``-step DDIM (``ddim``; deterministic at ``config.ddim_eta`` = 0, as
stochastic as ancestral sampling at 1) from fixed keys and judges both
(:mod:`m2m_jax.algorithms.sample_quality`): ``ddpm_fd``, ``ddim_fd``, ``fd_real``, confidences
and class counts.

The original's bugs, fixed: it trained on [0, 1] images and decoded samples as if in [-1, 1];
its time embedding was a sine of a Linear of the raw integer t, added at the bottleneck only
(here: sinusoidal features, an MLP, added in every residual block); no EMA; no sample metric.
"""

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import nets, sample_quality
from m2m_jax.errors import ConfigError, DataError, choose
from m2m_jax.ops import diffusion, optim
from m2m_jax.ops.images import to_image, to_model
from m2m_jax.ops.keys import EVAL_KEY, SAMPLE_KEY, image_keys

SCHEDULED = True  # its learning rate follows optim.schedule(config); logged to TensorBoard

EVAL_FRACTIONS = (0.1, 0.5, 0.9)  # the fixed test times, as fractions of T


class State(nets.State):
  """The shared state (its optimizer state holds the EMA of the parameters) plus the
  schedule's coefficients."""

  schedule: diffusion.Schedule = None

  @property
  def ema_params(self) -> Any:
    return optim.ema_params(self.opt_state)


def validate(config: ml_collections.ConfigDict) -> None:
  if config.model_name != "ddpm_unet":
    raise ConfigError(f"diffusion trains the model 'ddpm_unet'; got model_name "
                      f"{config.model_name!r}.")
  choose("beta_schedule", config.beta_schedule, diffusion.SCHEDULES)
  diffusion.ddim_timesteps(config.diffusion_steps, config.ddim_steps)  # checks T and S
  if not 0 <= config.get("ddim_eta", 0.0) <= 1:
    raise ConfigError(f"ddim_eta must lie in [0, 1]; got {config.ddim_eta}.")
  if not 0 <= config.ema_decay < 1:
    raise ConfigError(f"ema_decay must lie in [0, 1); got {config.ema_decay}.")
  if config.sample_batch_size <= 0:
    raise ConfigError(f"sample_batch_size must be positive; got {config.sample_batch_size}.")


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> State:
  """The U-Net initialised for the images of ``batch['x']`` (B, H, W, C), its optimizer with
  the EMA (which starts at the initial weights) and the schedule."""
  x = np.asarray(batch["x"], np.float32)
  if x.ndim != 4:
    raise DataError(f"diffusion needs images of shape (B, H, W, C); dataset {config.dataset!r} "
                    f"gives shape {x.shape}.")
  model = nets.build_model(config)
  variables = nets.init_variables(model, rng, to_model(jnp.asarray(x[:1])),
                                  jnp.zeros(1, jnp.int32))
  return State.create(apply_fn=model.apply, params=variables["params"],
                      tx=optim.with_ema(optim.optimizer(config), config.ema_decay),
                      batch_stats={},
                      schedule=diffusion.make_schedule(config.beta_schedule,
                                                       config.diffusion_steps))


def _eps(state: State, params, xt: jax.Array, t: jax.Array) -> jax.Array:
  return state.apply_fn({"params": params}, xt, t)


def train_step(config: ml_collections.ConfigDict, state: State,
               batch: dict, rng: jax.Array) -> tuple[State, dict]:
  """One optimizer step on L_simple at uniform times, the EMA updated with it."""
  x0 = to_model(batch["x"].astype(jnp.float32))
  t_key, eps_key = jax.random.split(rng)
  t = jax.random.randint(t_key, x0.shape[:1], 0, state.schedule.num_steps)
  eps = jax.random.normal(eps_key, x0.shape)
  xt = diffusion.q_sample(state.schedule, x0, t, eps)

  def loss_fn(params):
    return jnp.mean((_eps(state, params, xt, t) - eps) ** 2)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  state = state.apply_gradients(grads=grads)
  return state, {"loss": loss, "ema_decay": optim.ema_decay_at(state.step, config.ema_decay)}


def eval_times(num_steps: int) -> tuple[int, ...]:
  """The fixed test times: ``EVAL_FRACTIONS`` of T."""
  return tuple(int(f * num_steps) for f in EVAL_FRACTIONS)


def eval_noise(schedule: diffusion.Schedule, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-image test time (B,) and noise (B, H, W, C) of images x in [0, 1], drawn from
  ``fold_in(EVAL_KEY, hash(image))``: the same whatever batch the image sits in."""
  keys = image_keys(jax.random.key(EVAL_KEY), x)
  t = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 0), (), 0,
                                            schedule.num_steps))(keys)
  eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x.shape[1:]))(keys)
  return t, eps


def eval_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> dict:
  """Per-image (B,) epsilon-MSE: ``eps_mse`` (EMA weights) and ``eps_mse_raw`` (trained
  weights) at the image's own random time, ``eps_mse_t<k>`` (EMA) at the fixed times."""
  x = batch["x"].astype(jnp.float32)
  x0 = to_model(x)
  t, eps = eval_noise(state.schedule, x)
  per_image = lambda params, tt: jnp.mean(
      (_eps(state, params, diffusion.q_sample(state.schedule, x0, tt, eps), tt) - eps) ** 2,
      axis=tuple(range(1, x.ndim)))
  out = {"eps_mse": per_image(state.ema_params, t), "eps_mse_raw": per_image(state.params, t)}
  for k in eval_times(state.schedule.num_steps):
    out[f"eps_mse_t{k}"] = per_image(state.ema_params, jnp.full_like(t, k))
  return out


@functools.partial(jax.jit, static_argnames=("shape", "sampler", "clip", "ddim_steps",
                                             "ddim_eta"))
def sample(state: State, key: jax.Array, shape: tuple, sampler: str = "ddpm", clip: bool = True,
           ddim_steps: int = 50, ddim_eta: float = 0.0) -> jax.Array:
  """Images (B, H, W, C) in [0, 1] drawn with the EMA weights: ``'ddpm'`` by T ancestral steps,
  ``'ddim'`` by ``ddim_steps`` DDIM steps of ``ddim_eta``."""
  choose("sampler", sampler, ("ddpm", "ddim"))
  eps_fn = lambda xt, t: _eps(state, state.ema_params, xt, t)
  if sampler == "ddpm":
    x = diffusion.sample_ancestral(state.schedule, eps_fn, key, shape, clip)
  else:
    x = diffusion.sample_ddim(state.schedule, eps_fn, key, shape, ddim_steps, ddim_eta, clip)
  return to_image(x)


def draw(config: ml_collections.ConfigDict, state: State, num: int, shape: tuple,
         sampler: str) -> np.ndarray:
  """``num`` images (num, *shape) in batches of at most ``config.sample_batch_size``, batch i
  from ``fold_in(SAMPLE_KEY, i)`` (:func:`sample_quality.draw`)."""
  return sample_quality.draw(lambda k, b: sample(state, k, (b, *shape), sampler,
                                                 **_ddim(config)), num,
                             jax.random.key(SAMPLE_KEY), config.sample_batch_size,
                             f"{sampler.upper()} samples")


def _ddim(config: ml_collections.ConfigDict) -> dict:
  """The DDIM sampler's settings: ``ddim_steps`` and ``ddim_eta``."""
  return {"ddim_steps": int(config.ddim_steps), "ddim_eta": float(config.get("ddim_eta", 0.0))}


def _image_shape(dataset) -> tuple:
  return tuple(dataset.test[np.arange(1)]["x"].shape[1:])


def sample_metrics(config: ml_collections.ConfigDict, state: State, dataset) -> dict:
  """Sample quality of ``config.fd.num_samples`` EMA samples from each sampler (``ddpm``:
  T ancestral steps; ``ddim``: ``config.ddim_steps`` DDIM steps), judged by
  :func:`sample_quality.evaluate`."""
  num = sample_quality.num_samples(config, dataset)
  if not num:
    return {}
  shape = _image_shape(dataset)
  return sample_quality.evaluate(config, dataset, {
      s: draw(config, state, num, shape, s) for s in ("ddpm", "ddim")})


@functools.partial(jax.jit, static_argnames=("shape",))
def _chain(state: State, key: jax.Array, shape: tuple) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Ancestral samples (B, H, W, C) in [-1, 1] and the chain of the first, x_t and x0_hat
  (T, 1, H, W, C) each."""
  eps_fn = lambda xt, t: _eps(state, state.ema_params, xt, t)
  return diffusion.sample_ancestral(state.schedule, eps_fn, key, shape, trajectory=1)


def figures(config: ml_collections.ConfigDict, state: State,
            outputs: dict, dataset, outdir: str, n: int = 16) -> None:
  """``samples_ddpm.png`` and ``samples_ddim.png``: ``n`` EMA samples of each sampler;
  ``trajectory.png``: the first ancestral sample's reverse chain, x_t and its x0_hat at times
  from T-1 down to 0; ``forward.png``: a test digit under q(x_t | x_0) at the same times."""
  shape, num_steps = _image_shape(dataset), state.schedule.num_steps
  key = jax.random.key(SAMPLE_KEY)
  x, xs, x0s = (np.asarray(a) for a in _chain(state, key, (n, *shape)))
  report.plot_images(np.asarray(to_image(x)), None, os.path.join(outdir, "samples_ddpm.png"),
                     title=f"EMA samples, ancestral, {num_steps} steps")
  ddim = _ddim(config)
  report.plot_images(np.asarray(sample(state, key, (n, *shape), "ddim", **ddim)), None,
                     os.path.join(outdir, "samples_ddim.png"),
                     title=f"EMA samples, DDIM, {ddim['ddim_steps']} steps, "
                           f"eta {ddim['ddim_eta']:g}")
  times = sorted({num_steps - 1, *(int(f * num_steps) for f in (0.8, 0.6, 0.4, 0.3, 0.2, 0.1,
                                                                  0.05)), 0}, reverse=True)
  rows = [xs[num_steps - 1 - t, 0] for t in times] + [x[0]]
  preds = [x0s[num_steps - 1 - t, 0] for t in times] + [x[0]]
  report.plot_images(np.asarray(to_image(np.stack(rows + preds))),
                     [f"x_{t}" for t in times] + ["sample"] + [f"x0_hat({t})" for t in times]
                     + ["sample"], os.path.join(outdir, "trajectory.png"), cols=len(times) + 1)
  x0 = to_model(jnp.asarray(dataset.test[np.arange(1)]["x"]))
  eps = jax.random.normal(jax.random.fold_in(key, 1_000_002), x0.shape)
  noisy = [diffusion.q_sample(state.schedule, x0, jnp.array([t]), eps)[0] for t in times[::-1]]
  report.plot_images(np.asarray(to_image(jnp.stack([x0[0], *noisy]))),
                     ["x_0"] + [f"x_{t}" for t in times[::-1]],
                     os.path.join(outdir, "forward.png"), cols=len(times) + 1)
