"""Variational autoencoder: maximise the evidence lower bound (ELBO) of log p(x).

For a latent z ~ p(z) = N(0, I), a decoder p(x | z) and an encoder q(z | x) = N(mean(x),
diag(exp(logvar(x)))), Jensen's inequality gives

  log p(x) >= E_q[log p(x | z)] - KL(q(z | x) || p(z)) = ELBO(x).

Per image, in nats: ``recon = -log p(x | z)`` at one reparameterised sample
z = mean + exp(logvar / 2) eps, ``kl`` in closed form, ``neg_elbo = recon + kl``; the training
loss is the batch mean of ``recon + beta * kl`` (beta = 1: the negative ELBO itself).

Likelihoods (``config.likelihood``); the decoder gives logits l and the pixel mean sigmoid(l):

- ``'bernoulli'``: log p(x | z) = sum_p x_p log sigmoid(l_p) + (1 - x_p) log(1 - sigmoid(l_p)),
  a probability of binary pixels. With ``config.binarize`` each pixel is drawn as 1 with
  probability equal to its grey level (a fresh draw every step, a fixed draw per test image),
  so the numbers are a true bound on -log p(x) in nats for binarised images. Without it the
  formula is the original's binary cross-entropy on continuous pixels: not a likelihood (it
  never reaches 0), so evaluation also reports ``bce_floor``, the cross-entropy of a perfect
  reconstruction, sum_p H(x_p); ``recon - bce_floor`` is the part a better model can remove.
- ``'gaussian'``: log p(x | z) = sum_p log N(x_p; sigmoid(l_p), sigma_c^2), a density of
  continuous pixels (nats of a density: can be negative, and not comparable with the
  Bernoulli's), with sigma a learned scale per channel (``config.gaussian_scale = 0``, starting
  at 0.1) or fixed (``config.gaussian_scale > 0``).

Evaluation is deterministic: image i's binarisation and its eps come from a key folded from a
fixed key with a hash of the image (``ops.keys.image_keys``), whatever batch it sits in. Prior
samples (figures and sample quality) are the decoder's mean images sigmoid(l) at z ~ N(0, I),
not binary draws from them.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import nets, sample_quality
from m2m_jax.errors import ConfigError, DataError, choose
from m2m_jax.ops.distributions import (bernoulli_entropy, bernoulli_log_likelihood, gaussian_kl,
                                       gaussian_log_likelihood, reparameterise)
from m2m_jax.ops.keys import EVAL_KEY, SAMPLE_KEY, image_keys

SCHEDULED = True  # its learning rate follows optim.schedule(config); logged to TensorBoard

LIKELIHOODS = ("bernoulli", "gaussian")
ACTIVE = 0.01          # a latent unit is active when Var_x E_q[z_j | x] exceeds this


def elbo_terms(log_likelihood: jax.Array, mean: jax.Array, logvar: jax.Array,
               beta: float = 1.0) -> dict:
  """Per example (B,), nats: ``recon`` = -log p(x | z), ``kl``, ``neg_elbo`` = recon + kl and
  ``loss`` = recon + beta kl, from log p(x | z) (B,) and the posterior mean, logvar (B, L)."""
  recon, kl = -log_likelihood, gaussian_kl(mean, logvar)
  return {"neg_elbo": recon + kl, "recon": recon, "kl": kl, "loss": recon + beta * kl}


def binarise(key: jax.Array, x: jax.Array) -> jax.Array:
  """Each pixel of x (..., H, W, C) in [0, 1] set to 1 with probability x, else 0; same shape."""
  return jax.random.bernoulli(key, x).astype(x.dtype)


def _settings(config: ml_collections.ConfigDict) -> dict:
  return {"likelihood": config.get("likelihood", "bernoulli"),
          "binarize": bool(config.get("binarize", False)),
          "gaussian_scale": float(config.get("gaussian_scale", 0.0)),
          "beta": float(config.get("beta", 1.0))}


def validate(config: ml_collections.ConfigDict) -> None:
  if config.model_name != "vae":
    raise ConfigError(f"vae trains the model 'vae'; got model_name {config.model_name!r}.")
  s = _settings(config)
  choose("likelihood", s["likelihood"], LIKELIHOODS)
  if s["binarize"] and s["likelihood"] != "bernoulli":
    raise ConfigError("binarize draws binary pixels for the 'bernoulli' likelihood; set "
                      f"binarize=False for likelihood {s['likelihood']!r}.")
  if s["beta"] < 0 or s["gaussian_scale"] < 0:
    raise ConfigError(f"beta and gaussian_scale must be >= 0; got beta {s['beta']}, "
                      f"gaussian_scale {s['gaussian_scale']}.")


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> nets.State:
  """Initialises the model for the image shape of ``batch['x']`` (B, H, W, C)."""
  x = np.asarray(batch["x"])
  if x.ndim != 4:
    raise DataError(f"vae needs images of shape (B, H, W, C); dataset {config.dataset!r} gives "
                    f"shape {x.shape}.")
  if x.min() < 0 or x.max() > 1:
    raise DataError(f"vae needs pixel values in [0, 1]; dataset {config.dataset!r} gives "
                    f"[{x.min():.3g}, {x.max():.3g}].")
  s = _settings(config)
  learn_scale = s["likelihood"] == "gaussian" and s["gaussian_scale"] == 0
  model = nets.build_model(config, image_shape=x.shape[1:], learn_scale=learn_scale)
  return nets.create(config, model, rng, x)


def encode(state: nets.State, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Images (B, H, W, C) -> the posterior's (mean, logvar), each (B, L)."""
  return state.apply_fn({"params": params}, x, method="encode")


def decode(state: nets.State, params, z: jax.Array) -> jax.Array:
  """Codes (B, L) -> pixel logits (B, H, W, C); the pixel mean is their sigmoid."""
  return state.apply_fn({"params": params}, z, method="decode")


def log_likelihood(config: ml_collections.ConfigDict, params, logits: jax.Array,
                   x: jax.Array) -> jax.Array:
  """log p(x | z) per image (B,) for the decoder's logits (B, H, W, C) and targets x, under
  ``config.likelihood`` (a Gaussian's scale fixed by ``config.gaussian_scale`` or learned)."""
  s = _settings(config)
  if s["likelihood"] == "bernoulli":
    return bernoulli_log_likelihood(logits, x)
  log_scale = (params["log_scale"] if not s["gaussian_scale"]
               else jnp.log(jnp.float32(s["gaussian_scale"])))
  return gaussian_log_likelihood(jax.nn.sigmoid(logits), log_scale, x)


def _elbo(config: ml_collections.ConfigDict, state: nets.State, params, x: jax.Array,
          sample) -> dict:
  """``elbo_terms`` of images x (B, H, W, C), z = ``sample(mean, logvar)``."""
  mean, logvar = encode(state, params, x)
  logits = decode(state, params, sample(mean, logvar))
  beta = _settings(config)["beta"]
  return {**elbo_terms(log_likelihood(config, params, logits, x), mean, logvar, beta),
          "z_mean": mean}


def train_step(config: ml_collections.ConfigDict, state: nets.State,
               batch: dict, rng: jax.Array) -> tuple[nets.State, dict]:
  """One optimizer step on the batch mean of recon + beta kl (a fresh binarisation and eps)."""
  x = batch["x"].astype(jnp.float32)
  bin_key, eps_key = jax.random.split(rng)
  if _settings(config)["binarize"]:
    x = binarise(bin_key, x)

  def loss_fn(params):
    terms = _elbo(config, state, params, x, functools.partial(reparameterise, eps_key))
    return jnp.mean(terms["loss"]), terms

  (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = {k: jnp.mean(terms[k]) for k in ("neg_elbo", "recon", "kl")}
  if "log_scale" in state.params:
    metrics["sigma"] = jnp.mean(jnp.exp(state.params["log_scale"]))
  return state.apply_gradients(grads=grads), {"loss": loss, **metrics}


def eval_step(config: ml_collections.ConfigDict, state: nets.State, batch: dict) -> dict:
  """Per test image (B,), nats: ``neg_elbo``, ``recon``, ``kl`` (one eps per image, from a
  key of the image), ``mse`` of the mean image decoded from the posterior mean against x,
  ``bce_floor`` (Bernoulli on continuous pixels only); and ``z_mean`` (B, L)."""
  x = batch["x"].astype(jnp.float32)
  s = _settings(config)
  keys = image_keys(jax.random.key(EVAL_KEY), x)
  target = (jax.vmap(binarise)(jax.vmap(jax.random.fold_in, (0, None))(keys, 0), x)
            if s["binarize"] else x)
  eps_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 1)
  terms = _elbo(config, state, state.params, target,
                lambda m, v: jax.vmap(reparameterise)(eps_keys, m, v))
  mean_image = jax.nn.sigmoid(decode(state, state.params, terms["z_mean"]))
  out = {k: terms[k] for k in ("neg_elbo", "recon", "kl", "z_mean")}
  out["mse"] = jnp.mean((mean_image - x).reshape(x.shape[0], -1) ** 2, axis=1)
  if s["likelihood"] == "bernoulli" and not s["binarize"]:
    out["bce_floor"] = bernoulli_entropy(x)
  return out


def active_units(z_mean: np.ndarray, threshold: float = ACTIVE) -> int:
  """How many latent dimensions j have Var_x E_q[z_j | x] > ``threshold`` over the split
  (Burda et al., 2016): the dimensions the decoder can read anything from. (N, L) -> int."""
  return int(np.sum(np.var(z_mean, axis=0) > threshold))


def summarize(config: ml_collections.ConfigDict, outputs: dict) -> dict:
  """The split means of the per-image outputs, and ``active_units`` of the posterior means."""
  summary = {k: float(np.mean(v)) for k, v in outputs.items() if k != "z_mean"}
  return {**summary, "active_units": active_units(outputs["z_mean"])}


@functools.partial(jax.jit, static_argnums=2)
def prior_samples(state: nets.State, key: jax.Array, n: int) -> jax.Array:
  """n mean images sigmoid(decoder(z)), z ~ N(0, I) from ``key``: (n, H, W, C) in (0, 1)."""
  latent = state.params["mean_head"]["kernel"].shape[-1]
  return jax.nn.sigmoid(decode(state, state.params, jax.random.normal(key, (n, latent))))


def sample_images(state: nets.State, n: int, batch: int = 500) -> np.ndarray:
  """n prior samples (n, H, W, C), drawn ``batch`` at a time from keys folded from SAMPLE_KEY
  (:func:`sample_quality.draw`)."""
  return sample_quality.draw(functools.partial(prior_samples, state), n,
                             jax.random.key(SAMPLE_KEY), batch, "VAE prior samples")


def sample_metrics(config: ml_collections.ConfigDict, state: nets.State, dataset) -> dict:
  """Digits/MNIST FD, the judge's confidence and class count of ``config.fd.num_samples`` prior
  samples (-1: as many as the test split; see :mod:`m2m_jax.algorithms.sample_quality`); {}
  when there is no ``config.fd`` or it asks for no samples."""
  n = sample_quality.num_samples(config, dataset)
  if not n:
    return {}
  return sample_quality.evaluate(config, dataset, {"": sample_images(state, n)})


@jax.jit
def _reconstruct(state: nets.State, x: jax.Array) -> jax.Array:
  return jax.nn.sigmoid(decode(state, state.params, encode(state, state.params, x)[0]))


@functools.partial(jax.jit, static_argnums=3)
def _interpolate(state: nets.State, a: jax.Array, b: jax.Array, steps: int) -> jax.Array:
  """Mean images decoded along the line between the posterior means of a and b (P, H, W, C):
  (P, steps, H, W, C), t = 0 .. 1."""
  za, zb = encode(state, state.params, a)[0], encode(state, state.params, b)[0]
  t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
  z = (1 - t) * za[:, None] + t * zb[:, None]
  return jax.nn.sigmoid(decode(state, state.params, z.reshape(-1, z.shape[-1]))).reshape(
      za.shape[0], steps, *a.shape[1:])


def _interpolation_pairs(labels: np.ndarray, rows: int) -> list[tuple[int, int]]:
  """``rows`` pairs of test indices, the first of class k and the second of class k + 5 (of
  ten); without class labels (1-D integers), the images i and i + N/2."""
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    return [(k, k + len(labels) // 2) for k in range(min(rows, len(labels) // 2))]
  first = {c: int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)}
  classes = sorted(first)
  return [(first[classes[k % len(classes)]], first[classes[(k + len(classes) // 2) % len(classes)]])
          for k in range(rows)]


def figures(config: ml_collections.ConfigDict, state: nets.State,
            outputs: dict, dataset, outdir: str, n: int = 10) -> None:
  """``reconstructions.png`` (n test images and the mean images decoded from their posterior
  means, titled with the negative ELBO), ``samples.png`` (64 prior samples),
  ``interpolation.png`` (decoded along lines between the codes of two test images) and
  ``latent.png`` (the posterior means' first two principal components, by label, and the
  variance of each latent dimension's posterior mean)."""
  idx = np.unique(np.linspace(0, len(dataset.test) - 1, n).astype(int))
  x = jnp.asarray(dataset.test[idx]["x"], jnp.float32)
  titles = ["test"] * len(idx) + [f"{v:.0f} nats" for v in outputs["neg_elbo"][idx]]
  report.plot_images(np.concatenate([x, _reconstruct(state, x)]), titles,
                     os.path.join(outdir, "reconstructions.png"), cols=len(idx))
  report.plot_images(sample_images(state, 64), None, os.path.join(outdir, "samples.png"),
                     title="64 samples from the prior")
  labels = dataset.test[np.arange(len(dataset.test))]["y"]
  pairs = np.array(_interpolation_pairs(labels, 5))
  steps = 8
  ends = [jnp.asarray(dataset.test[pairs[:, i]]["x"], jnp.float32) for i in (0, 1)]
  path = np.asarray(_interpolate(state, *ends, steps))
  grid = np.concatenate([np.asarray(ends[0])[:, None], path, np.asarray(ends[1])[:, None]], 1)
  titles = ["x_a"] + [f"t={t:.2f}" for t in np.linspace(0, 1, steps)] + ["x_b"]
  report.plot_images(grid.reshape(-1, *grid.shape[2:]), titles * len(pairs),
                     os.path.join(outdir, "interpolation.png"), cols=steps + 2)
  _plot_latent(outputs["z_mean"], labels, os.path.join(outdir, "latent.png"))


def _plot_latent(z_mean: np.ndarray, labels: np.ndarray, path: str) -> None:
  centred = z_mean - z_mean.mean(axis=0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  pc = centred @ vt[:2].T
  second = pc[:, 1] if pc.shape[1] > 1 else np.zeros(len(pc))
  fig, (ax, bars) = report.figure(1, 2, figsize=(10, 4))
  by_label = labels.ndim == 1  # class labels colour the points; masks do not
  colour = {"c": labels, "cmap": "tab10"} if by_label else {}
  points = ax.scatter(pc[:, 0], second, s=6, **colour)
  if by_label:
    fig.colorbar(points, ax=ax, label="label")
  ax.set_title("test posterior means, first two principal components")
  variance = np.var(z_mean, axis=0)
  bars.bar(np.arange(len(variance)), variance)
  bars.axhline(ACTIVE, color="red", lw=0.8)
  bars.set_yscale("log")
  bars.set_xlabel("latent dimension")
  bars.set_title(f"Var_x E[z_j | x]: {active_units(z_mean)} active (> {ACTIVE})")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
