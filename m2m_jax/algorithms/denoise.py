"""Denoising autoencoder: reconstruct the clean image x from a corrupted copy x~.

Loss ``mean((f(x~) - x)^2)``. Every value (each channel of each pixel) of every image is
corrupted independently, with a fresh draw each step from the step's key; the original drew
ONE mask and applied it to the whole batch, so all images of a step lost the same pixels.

Corruptions (``config.noise``, strength ``config.noise_level``):

- ``'salt_pepper'``: a fraction ``noise_level`` of the values set to 0 or 1, half each;
- ``'pepper'``: a fraction ``noise_level`` set to 0 (the original's, at 0.1);
- ``'gaussian'``: ``x + noise_level * N(0, 1)``, clipped to [0, 1].

Evaluation reports, per image, ``mse`` and ``psnr`` (dB) of the reconstruction against the
clean image and ``mse_noisy`` and ``psnr_noisy`` of the corrupted input, the baseline that a
denoiser has to beat. The test corruption is a pure function of the image: its key folds a
fixed key with a hash of the image's pixels (quantised to 8 bits), because the loop's eval
batches carry no example index; so the metrics do not depend on batch size or order.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import nets
from m2m_jax.errors import ConfigError, DataError, choose
from m2m_jax.ops import metrics
from m2m_jax.ops.keys import EVAL_KEY, image_keys

SCHEDULED = True  # its learning rate follows optim.schedule(config); logged to TensorBoard

NOISES = ("salt_pepper", "pepper", "gaussian")


def corrupt(key: jax.Array, x: jax.Array, noise: str, level: float) -> jax.Array:
  """Corrupts the images x (B, H, W, C) in [0, 1], every value independently; same shape."""
  if noise == "gaussian":
    return jnp.clip(x + level * jax.random.normal(key, x.shape, x.dtype), 0.0, 1.0)
  hit_key, salt_key = jax.random.split(key)
  hit = jax.random.bernoulli(hit_key, level, x.shape)
  value = (jax.random.bernoulli(salt_key, 0.5, x.shape).astype(x.dtype) if noise == "salt_pepper"
           else jnp.zeros_like(x))
  return jnp.where(hit, value, x)


def corrupt_each(keys: jax.Array, x: jax.Array, noise: str, level: float) -> jax.Array:
  """``corrupt`` with image i drawn from ``keys[i]``: x (B, H, W, C) -> (B, H, W, C)."""
  return jax.vmap(lambda k, img: corrupt(k, img[None], noise, level)[0])(keys, x)


def _noise(config: ml_collections.ConfigDict) -> tuple[str, float]:
  return config.get("noise", "salt_pepper"), float(config.get("noise_level", 0.2))


def validate(config: ml_collections.ConfigDict) -> None:
  if config.model_name != "denoising_ae":
    raise ConfigError(f"denoise trains the model 'denoising_ae'; got model_name "
                      f"{config.model_name!r}.")
  noise, level = _noise(config)
  choose("noise", noise, NOISES)
  limit = float("inf") if noise == "gaussian" else 1.0
  if not 0 <= level <= limit:
    raise ConfigError(f"noise_level must lie in [0, {limit}] for {noise!r} noise; got {level}.")


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> nets.State:
  """Initialises the model for the channels of ``batch['x']`` (B, H, W, C)."""
  x = np.asarray(batch["x"])
  if x.ndim != 4:
    raise DataError(f"denoise needs images of shape (B, H, W, C); dataset {config.dataset!r} "
                    f"gives shape {x.shape}.")
  model = nets.build_model(config, channels=x.shape[-1])
  return nets.create(config, model, rng, x)


def _reconstruct(state: nets.State, params, noisy: jax.Array, train: bool):
  out, batch_stats = nets.apply(state, params, noisy, train)
  return out.astype(jnp.float32), batch_stats


def train_step(config: ml_collections.ConfigDict, state: nets.State,
               batch: dict, rng: jax.Array) -> tuple[nets.State, dict]:
  """One optimizer step on the MSE between the reconstruction of a fresh corruption of
  ``batch['x']`` and the clean images."""
  x = batch["x"].astype(jnp.float32)
  noisy = corrupt(rng, x, *_noise(config))

  def loss_fn(params):
    out, batch_stats = _reconstruct(state, params, noisy, train=True)
    return jnp.mean((out - x) ** 2), (out, batch_stats)

  (loss, (out, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  psnr = metrics.psnr(metrics.mse_per_image(out, x)).mean()
  return state.apply_gradients(grads=grads, batch_stats=batch_stats), {"loss": loss, "psnr": psnr}


def eval_corrupt(x: jax.Array, noise: str, level: float) -> jax.Array:
  """The test corruption of x (B, H, W, C): image i drawn from ``fold_in(EVAL_KEY, hash(x_i))``,
  the same whatever batch the image sits in."""
  return corrupt_each(image_keys(jax.random.key(EVAL_KEY), x), x, noise, level)


def _denoise(noise: tuple[str, float], state: nets.State,
             x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Clean images (B, H, W, C) -> their test corruption by ``noise`` = (kind, level) and its
  reconstruction, both (B, H, W, C)."""
  noisy = eval_corrupt(x, *noise)
  return noisy, _reconstruct(state, state.params, noisy, train=False)[0]


def eval_step(config: ml_collections.ConfigDict, state: nets.State, batch: dict) -> dict:
  """Per-image (B,) ``mse`` and ``psnr`` of the reconstruction, ``mse_noisy`` and
  ``psnr_noisy`` of the corrupted input, both against the clean image."""
  x = batch["x"].astype(jnp.float32)
  noisy, out = _denoise(_noise(config), state, x)
  mse, mse_noisy = metrics.mse_per_image(out, x), metrics.mse_per_image(noisy, x)
  return {"mse": mse, "psnr": metrics.psnr(mse),
          "mse_noisy": mse_noisy, "psnr_noisy": metrics.psnr(mse_noisy)}


def figures(config: ml_collections.ConfigDict, state: nets.State,
            outputs: dict, dataset, outdir: str, n: int = 8) -> None:
  """``denoised.png``: ``n`` test images spread over the split, in rows: the corrupted input,
  the reconstruction and the clean image, with PSNRs."""
  idx = np.unique(np.linspace(0, len(dataset.test) - 1, n).astype(int))
  x = jnp.asarray(dataset.test[idx]["x"], jnp.float32)
  noisy, out = jax.jit(_denoise, static_argnums=0)(_noise(config), state, x)
  titles = ([f"noisy {p:.1f} dB" for p in outputs["psnr_noisy"][idx]]
            + [f"denoised {p:.1f} dB" for p in outputs["psnr"][idx]] + ["clean"] * len(idx))
  report.plot_images(np.concatenate([noisy, out, x]), titles,
                     os.path.join(outdir, "denoised.png"), cols=len(idx))
