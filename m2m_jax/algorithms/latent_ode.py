"""Latent ODE-VAE: the evidence lower bound of whole sequences, trained on an observed window.

Frames 0..T-1 of a sequence are split by the config: the observed window [0, ``observed``)
less the interior frames ``heldout`` is what the model sees (encoder input and likelihood);
the held-out interior frames measure interpolation and the frames from ``observed`` on
measure extrapolation (the ODE solution decoded past the window). The loss per sequence is
the negative ELBO

  -ELBO(x) = sum_{observed i} -log p(x_i | z(t_i)) + KL(q(z0 | x) || N(0, I)),

with z0 = mu + sigma eps (one sample a step), a Bernoulli likelihood on pixels in [0, 1]
(summed over pixels; the original's BCE) or a Gaussian one of fixed ``obs_std`` (summed over
coordinates, with its normalising constant), and the closed-form KL

  KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).

Evaluation, per test sequence (deterministic and independent of batching): ``neg_elbo``,
``recon`` and ``kl`` in nats per sequence from one sample of z0 whose noise is drawn from a
fixed key folded with a hash of the sequence's bits; ``interp_mse`` and ``extrap_mse``, the
mean squared error per value of the frames predicted from the posterior mean z0 = mu (pixel
probabilities for Bernoulli), on the held-out interior frames and on the frames past the
window; and the same errors of the nearest observed frame (``*_nearest``), the baseline that
a model of the motion has to beat.

Sample quality (:mod:`m2m_jax.algorithms.sample_quality`): sequences drawn from the prior,
z0 ~ N(0, I), start at t_0 with an unrotated image, so their first frames are judged against
the images the sequences are made of (``config.fd.dataset``: mnist5k for rotating mnist5k
digits), as the VAE's prior samples are.

Image datasets (examples (H, W, C), such as tfds MNIST) become sequences on the fly when
``config.rotation.num_frames`` is positive: every image rotated through ``num_frames`` angles
``k * angle_step`` degrees (:func:`m2m_jax.data.sequences.rotate`) at times
``linspace(0, 1, num_frames)``: the original's RotatingMNIST.
"""

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import nets, sample_quality
from m2m_jax.data.sequences import rotate
from m2m_jax.errors import ConfigError, DataError, choose
from m2m_jax.models import latent_ode as model_lib
from m2m_jax.ops import distributions, optim
from m2m_jax.ops.keys import EVAL_KEY, SAMPLE_KEY, hash_keys

SCHEDULED = True  # its learning rate follows optim.schedule(config); logged to TensorBoard

LIKELIHOODS = ("bernoulli", "gaussian")


class Frames(NamedTuple):
  """The static settings of the sequences and the likelihood, from the config and the number of
  frames of the data (:func:`frames`); hashable, so a jitted helper takes them as a static
  argument."""

  likelihood: str
  obs_std: float
  num_frames: int
  observed: int
  heldout: tuple
  rotation: tuple  # (num_frames, angle_step), or () for sequence data


# --- the math -------------------------------------------------------------------------------

def frame_nll(out: jax.Array, x: jax.Array, likelihood: str, obs_std: float = 1.0) -> jax.Array:
  """-log p(x_i | z(t_i)) of every frame in nats, summed over its values: (B, T, ...) -> (B, T).

  The VAE's likelihoods, frame by frame: ``'bernoulli'``: ``out`` are logits, x in [0, 1]
  (binary cross-entropy); ``'gaussian'``: ``out`` are means, N(out, obs_std^2) on every value.
  """
  frames = lambda a: a.reshape(-1, *a.shape[2:])
  if likelihood == "bernoulli":
    ll = distributions.bernoulli_log_likelihood(frames(out), frames(x))
  else:
    ll = distributions.gaussian_log_likelihood(frames(out), jnp.log(jnp.float32(obs_std)), frames(x))
  return -ll.reshape(x.shape[:2])


def frame_masks(num_frames: int, observed: int, heldout: tuple) -> dict[str, np.ndarray]:
  """Boolean (T,) masks: ``'observed'`` (the window less ``heldout``), ``'interp'`` (the
  held-out interior frames), ``'extrap'`` (the frames from ``observed`` on)."""
  idx = np.arange(num_frames)
  interp = np.isin(idx, heldout)
  return {"observed": (idx < observed) & ~interp, "interp": interp, "extrap": idx >= observed}


def nearest_observed(observed: np.ndarray) -> np.ndarray:
  """For every frame the index of the nearest observed frame (the earlier one on a tie): (T,)."""
  seen = np.flatnonzero(observed)
  return seen[np.argmin(np.abs(np.arange(len(observed))[:, None] - seen[None]), axis=1)]


def example_keys(key: jax.Array, x: jax.Array) -> jax.Array:
  """One key per example (B,): :func:`ops.keys.hash_keys` of the example's exact float32 bits
  (values need not be pixels), so independent of batching."""
  bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  return hash_keys(key, bits.reshape(x.shape[0], -1))


# --- config and state -----------------------------------------------------------------------

def frames(config: ml_collections.ConfigDict, num_frames: int) -> Frames:
  """The :class:`Frames` of ``config`` for sequences of ``num_frames`` frames (``observed`` 0
  means all of them)."""
  s = _settings(config)
  return Frames(s["likelihood"], s["obs_std"], num_frames, s["observed"] or num_frames,
                s["heldout"], s["rotation"])


def _settings(config: ml_collections.ConfigDict) -> dict:
  rotation = config.get("rotation", ml_collections.ConfigDict())
  return {"likelihood": config.get("likelihood", "bernoulli"),
          "obs_std": float(config.get("obs_std", 1.0)),
          "observed": int(config.get("observed", 0)),
          "heldout": tuple(int(i) for i in config.get("heldout", ())),
          "rotation": ((int(rotation.num_frames), float(rotation.angle_step))
                       if rotation.get("num_frames", 0) else ())}


def validate(config: ml_collections.ConfigDict) -> None:
  if config.model_name != "latent_ode":
    raise ConfigError(f"latent_ode trains the model 'latent_ode'; got model_name "
                      f"{config.model_name!r}.")
  s = _settings(config)
  choose("likelihood", s["likelihood"], LIKELIHOODS)
  if s["obs_std"] <= 0:
    raise ConfigError(f"obs_std must be positive, got {s['obs_std']}.")
  if s["observed"] < 0:
    raise ConfigError(f"observed must be >= 0 (0: every frame), got {s['observed']}.")
  for field, choices in (("recognition", model_lib.RECOGNITIONS),
                         ("solver", model_lib.SOLVERS), ("gradients", model_lib.GRADIENTS)):
    if field in config.model:
      choose(field, config.model[field], choices)
  if s["rotation"] and s["rotation"][0] < 2:
    raise ConfigError(f"rotation.num_frames must be 0 (off) or >= 2, got {s['rotation'][0]}.")


def sequences(batch: dict, rotation: tuple) -> tuple[jax.Array, jax.Array]:
  """The batch as (frames (B, T, ...), times (B, T)); images are rotated when ``rotation``
  is (num_frames, angle_step)."""
  x = jnp.asarray(batch["x"], jnp.float32)
  if not rotation:
    return x, jnp.asarray(batch["t"], jnp.float32)
  n, step = rotation
  t = jnp.broadcast_to(jnp.linspace(0, 1, n, dtype=jnp.float32), (x.shape[0], n))
  return rotate(x, step * jnp.arange(n, dtype=jnp.float32)), t


def _check_data(config, batch: dict, s: dict) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(batch["x"])
  if s["rotation"]:
    if "t" in batch or x.ndim != 4:
      raise ConfigError(f"rotation turns images (B, H, W, C) into sequences; dataset "
                        f"{config.dataset!r} gives x of shape {x.shape[1:]}"
                        f"{' with times t' if 't' in batch else ''}: set rotation.num_frames = 0.")
    x, t = (np.asarray(a) for a in sequences(batch, s["rotation"]))
  elif "t" not in batch or x.ndim < 3:
    raise DataError(f"latent_ode needs sequences {{'x': (B, T, ...), 't': (B, T)}}; dataset "
                    f"{config.dataset!r} gives x of shape {x.shape[1:]} without times: use a "
                    "sequence dataset (rotating_digits, spirals) or set rotation.num_frames to "
                    "rotate images into sequences.")
  else:
    t = np.asarray(batch["t"])
  if t.shape != x.shape[:2] or np.any(np.diff(t, axis=1) <= 0):
    raise DataError(f"times t must be (B, T) = {x.shape[:2]} and strictly increasing along T; "
                    f"got shape {t.shape}.")
  if s["likelihood"] == "bernoulli" and (x.min() < 0 or x.max() > 1):
    raise DataError(f"the bernoulli likelihood needs values in [0, 1]; dataset "
                    f"{config.dataset!r} ranges over [{x.min():.3g}, {x.max():.3g}]: use "
                    "likelihood 'gaussian'.")
  return x, t


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> nets.State:
  """Checks the sequences and the frame split, and initialises the model for their frames."""
  s = _settings(config)
  x, t = _check_data(config, batch, s)
  num_frames = x.shape[1]
  observed = s["observed"] or num_frames
  if observed > num_frames:
    raise ConfigError(f"observed = {observed} frames exceeds the {num_frames} frames of a "
                      "sequence.")
  if any(not 0 < i < observed - 1 for i in s["heldout"]):
    raise ConfigError(f"heldout frames {s['heldout']} must lie inside the observed window: "
                      f"between 1 and observed - 2 = {observed - 2}.")
  model = nets.build_model(config, frame_shape=tuple(x.shape[2:]))
  variables = nets.init_variables(model, rng, jnp.asarray(x[:1]), jnp.asarray(t[:1]),
                                  method=model.initialize)
  return nets.State.create(apply_fn=model.apply, params=variables["params"],
                           tx=optim.optimizer(config), batch_stats={})


def _masks(f: Frames) -> dict[str, np.ndarray]:
  return frame_masks(f.num_frames, f.observed, f.heldout)


def _apply(state: nets.State, params, *args, method: str):
  return state.apply_fn({"params": params}, *args, method=method)


def _latent(state: nets.State) -> int:
  """The dimension of z: the recognition heads give its mean and log-variance."""
  return state.params["heads"]["kernel"].shape[-1] // 2


def elbo_terms(f: Frames, out: jax.Array, x: jax.Array, mu: jax.Array,
               logvar: jax.Array) -> dict:
  """Per sequence (B,): ``recon``, the negative log-likelihood of the observed frames of x under
  the decoder's output ``out`` (B, T, ...), ``kl`` of q(z0 | x), and their sum ``neg_elbo``."""
  observed = jnp.asarray(_masks(f)["observed"])
  recon = jnp.sum(frame_nll(out, x, f.likelihood, f.obs_std) * observed, axis=1)
  kl = distributions.gaussian_kl(mu, logvar)
  return {"neg_elbo": recon + kl, "recon": recon, "kl": kl}


def _encode(f: Frames, state: nets.State, params, x: jax.Array,
            t: jax.Array) -> tuple[jax.Array, jax.Array]:
  mask = jnp.broadcast_to(jnp.asarray(_masks(f)["observed"]), t.shape)
  return _apply(state, params, x, t, mask, method="encode")


def _render(state: nets.State, params, z0: jax.Array, t: jax.Array,
            t_out: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The decoder's output (B, T, ...) and the latent path (B, T, latent) from z0 (B, latent),
  at the times t (or t_out (B, S), with the solver's steps still set by t)."""
  z = _apply(state, params, z0, t, t_out, method="trajectory")
  return _apply(state, params, z, method="decode"), z


def train_step(config: ml_collections.ConfigDict, state: nets.State,
               batch: dict, rng: jax.Array) -> tuple[nets.State, dict]:
  """One optimizer step on the mean negative ELBO of the batch's sequences."""
  x, t = sequences(batch, _settings(config)["rotation"])
  f = frames(config, x.shape[1])
  eps = jax.random.normal(rng, (x.shape[0], _latent(state)))

  def loss_fn(params):
    mu, logvar = _encode(f, state, params, x, t)
    out, _ = _render(state, params, mu + jnp.exp(0.5 * logvar) * eps, t)
    terms = elbo_terms(f, out, x, mu, logvar)
    return jnp.mean(terms["neg_elbo"]), terms

  (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads), {"loss": loss, "recon": terms["recon"].mean(),
                                              "kl": terms["kl"].mean()}


def mean_frames(likelihood: str, out: jax.Array) -> jax.Array:
  """The decoder's expected frame: pixel probabilities (Bernoulli) or means (Gaussian)."""
  return jax.nn.sigmoid(out) if likelihood == "bernoulli" else out


def predict(f: Frames, state: nets.State, x: jax.Array, t: jax.Array,
            t_out: jax.Array) -> tuple[jax.Array, jax.Array]:
  """From the observed frames of (x, t), the expected frames at the times t_out (B, S) within
  [t_1, t_T] and the latent path there, both from the posterior mean z0 = mu, with the solver's
  steps set by t (so at the times t they are eval's): ((B, S, ...), (B, S, latent))."""
  mu, _ = _encode(f, state, state.params, x, t)
  out, z = _render(state, state.params, mu, t, t_out)
  return mean_frames(f.likelihood, out), z


def eval_step(config: ml_collections.ConfigDict, state: nets.State, batch: dict) -> dict:
  """Per sequence (B,): ``neg_elbo``, ``recon``, ``kl`` (nats; one sample of z0), and where the
  split has such frames ``interp_mse`` / ``extrap_mse`` of the prediction from z0 = mu, with
  their nearest-observed-frame baselines."""
  x, t = sequences(batch, _settings(config)["rotation"])
  f = frames(config, x.shape[1])
  keys = example_keys(jax.random.key(EVAL_KEY), x)
  eps = jax.vmap(lambda k: jax.random.normal(k, (_latent(state),)))(keys)
  mu, logvar = _encode(f, state, state.params, x, t)
  z0 = jnp.concatenate([mu + jnp.exp(0.5 * logvar) * eps, mu])     # one solve for both
  out, _ = _render(state, state.params, z0, jnp.concatenate([t, t]))
  sampled, mean = jnp.split(out, 2)
  outputs = elbo_terms(f, sampled, x, mu, logvar)
  masks = _masks(f)
  err = ((mean_frames(f.likelihood, mean) - x) ** 2).reshape(*x.shape[:2], -1).mean(-1)   # (B, T)
  err_nearest = ((x[:, nearest_observed(masks["observed"])] - x) ** 2).reshape(
      *x.shape[:2], -1).mean(-1)
  for name in ("interp", "extrap"):
    if masks[name].any():
      outputs[f"{name}_mse"] = err[:, masks[name]].mean(-1)
      outputs[f"{name}_mse_nearest"] = err_nearest[:, masks[name]].mean(-1)
  return outputs


@functools.partial(jax.jit, static_argnums=(0, 3))
def prior_frames(likelihood: str, state: nets.State, key: jax.Array, n: int) -> jax.Array:
  """The first frames of n sequences from the prior, z0 ~ N(0, I) from ``key``: expected
  frames (n, *frame_shape) decoded from z(t_0) = z0."""
  z0 = jax.random.normal(key, (n, _latent(state)))
  return mean_frames(likelihood, _apply(state, state.params, z0, method="decode"))


@functools.partial(jax.jit, static_argnums=0)
def prior_sequences(likelihood: str, state: nets.State, key: jax.Array, t: jax.Array) -> jax.Array:
  """Expected frames (B, T, ...) of B sequences from the prior at the times t (B, T)."""
  z0 = jax.random.normal(key, (t.shape[0], _latent(state)))
  return mean_frames(likelihood, _render(state, state.params, z0, t)[0])


def sample_metrics(config: ml_collections.ConfigDict, state: nets.State, dataset) -> dict:
  """FD, confidence and classes of the first frames of ``config.fd.num_samples`` sequences
  from the prior (-1: as many as the test split), judged on ``config.fd.dataset``; {} when
  there is no ``config.fd`` or it asks for no samples."""
  n = sample_quality.num_samples(config, dataset)
  if not n:
    return {}
  first = sample_quality.draw(functools.partial(prior_frames, _settings(config)["likelihood"],
                                                state), n,
                              jax.random.key(SAMPLE_KEY), desc="latent ODE prior samples")
  return sample_quality.evaluate(config, dataset, {"": first})


# --- figures --------------------------------------------------------------------------------

def _roles(f: Frames) -> list[str]:
  masks = _masks(f)
  return ["held out" if masks["interp"][i] else "extrap" if masks["extrap"][i] else "observed"
          for i in range(f.num_frames)]


def refine(t: jax.Array, k: int) -> jax.Array:
  """Every interval of the times t (B, T) cut in k equal parts: (B, (T - 1) k + 1), with
  t[:, i] at index i k."""
  steps = (t[:, 1:] - t[:, :-1])[..., None] * (jnp.arange(k) / k)
  return jnp.concatenate([(t[:, :-1, None] + steps).reshape(t.shape[0], -1), t[:, -1:]], 1)


def figures(config: ml_collections.ConfigDict, state: nets.State,
            outputs: dict, dataset, outdir: str, n: int = 4) -> None:
  """``sequences.png`` (images) or ``spirals.png`` (2-D points): ``n`` test sequences, truth
  against the prediction from the observed frames; ``prior_sequences.png`` (images): ``n``
  sequences drawn from the prior; ``latent_trajectories.png``: the first two
  principal components of z(t) on a dense time grid for 32 test sequences. One solve on a
  grid that refines the frames' times, with the solver's steps of the evaluation."""
  idx = np.unique(np.linspace(0, len(dataset.test) - 1, 32).astype(int))
  x, t = sequences(dataset.test[idx], _settings(config)["rotation"])
  f = frames(config, x.shape[1])
  k = -(-120 // (f.num_frames - 1))
  dense = refine(t, k)
  pred_dense, z = jax.jit(predict, static_argnums=0)(f, state, x, t, dense)
  pred = pred_dense[:, ::k]
  labels = np.asarray(dataset.test[idx]["y"])
  show = np.linspace(0, len(idx) - 1, n).astype(int)
  if x.ndim == 5:
    _plot_frames(f, np.asarray(x)[show], np.asarray(pred)[show], np.asarray(t)[show],
                 os.path.join(outdir, "sequences.png"))
    prior = np.asarray(prior_sequences(f.likelihood, state, jax.random.key(SAMPLE_KEY), t[:n]))
    report.plot_images(prior.reshape(-1, *prior.shape[2:]),
                       [f"prior t={v:.2f}" for v in np.asarray(t[:n]).ravel()],
                       os.path.join(outdir, "prior_sequences.png"), cols=f.num_frames)
  elif x.shape[-1] == 2:
    _plot_spirals(f, np.asarray(x)[show], np.asarray(pred_dense)[show],
                  os.path.join(outdir, "spirals.png"))
  _plot_latents(f, np.asarray(z), np.asarray(dense), np.asarray(t), labels,
                os.path.join(outdir, "latent_trajectories.png"))


def _plot_frames(f: Frames, x, pred, t, path) -> None:
  roles = _roles(f)
  images, titles = [], []
  for seq, p, ts in zip(x, pred, t):
    images += list(seq) + list(p)
    titles += [f"{r} t={v:.2f}" for r, v in zip(roles, ts)]
    titles += [f"pred mse {((a - b) ** 2).mean():.3f}" for a, b in zip(p, seq)]
  report.plot_images(np.stack(images), titles, path, cols=f.num_frames)


def _plot_spirals(f: Frames, x, pred_dense, path) -> None:
  masks = _masks(f)
  fig, axes = report.figure(1, len(x), figsize=(3.2 * len(x), 3.2), squeeze=False)
  for ax, seq, curve in zip(axes[0], x, pred_dense):
    ax.plot(curve[:, 0], curve[:, 1], "k-", lw=1, label="model")
    for name, style in (("observed", "b."), ("interp", "gx"), ("extrap", "r.")):
      ax.plot(seq[masks[name], 0], seq[masks[name], 1], style, ms=4,
              label={"interp": "held out", "extrap": "extrapolated"}.get(name, name))
    ax.set_aspect("equal")
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _plot_latents(f: Frames, z, dense, t, labels, path) -> None:
  """z (N, T', D) on the dense times (N, T'); dots at the frames' times, the window's end marked."""
  flat = z.reshape(-1, z.shape[-1])
  centred = flat - flat.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  pc = (centred @ vt[:2].T).reshape(*z.shape[:2], -1)
  fig, ax = report.figure(figsize=(5, 4.5))
  colors = [f"C{int(c) % 10}" for c in labels]
  end = t[:, f.observed - 1]
  for curve, ts, c, e in zip(pc, dense, colors, end):
    inside = ts <= e + 1e-6
    ax.plot(curve[inside, 0], curve[inside, 1], "-", color=c, lw=1.2)
    ax.plot(curve[~inside, 0], curve[~inside, 1], ":", color=c, lw=1.2)
    ax.plot(curve[0, 0], curve[0, 1], "o", color=c, ms=3)
  ax.set_title("latent z(t), first 2 PCs (solid: window, dotted: extrapolated; o: t0)",
               fontsize=8)
  ax.set_xlabel("PC 1")
  ax.set_ylabel("PC 2")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
