"""Colorization: predict the colour of an image from its grey version.

The input is the grey image g = L / 100 (CIE lightness, :func:`m2m_jax.ops.color.rgb_to_grey`),
computed inside the step from ``batch['x']`` (B, H, W, 3), RGB in [0, 1]. The target depends on
the model's head (``config.model.output``):

- ``'lab'``: the chroma (a, b) / 110, so the prediction rebuilds the colour as (L, a, b) with
  the true lightness; loss ``mean((f(g) - ab / 110)^2)``.
- ``'rgb'`` (the original's head): RGB itself; loss ``mean((f(g) - x)^2)``.

Under uncertainty the MSE-optimal prediction is the conditional mean, and the mean of several
plausible hues is a duller colour in any space. An RGB head also has to predict again the
lightness its input already holds, and its mean of colours of one lightness comes out darker
and blurred; a Lab head keeps the input's lightness exactly and only answers "which chroma".

Evaluation reports, per image, the RGB error of the colorized image in [0, 1] units: ``mse``
and ``psnr`` (dB), and the same for the grey image shown as RGB (``mse_grey``, ``psnr_grey``),
the baseline a colorizer has to beat; ``loss`` is the training objective; ``chroma`` and
``chroma_true`` are the mean Lab chroma of the colorized image and of the truth, which measure
how washed out the colours are.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import nets
from m2m_jax.errors import ConfigError, DataError, choose
from m2m_jax.models.autoencoder import OUTPUTS
from m2m_jax.ops import color, metrics

SCHEDULED = True  # its learning rate follows optim.schedule(config); logged to TensorBoard


def validate(config: ml_collections.ConfigDict) -> None:
  if config.model_name != "colorization_net":
    raise ConfigError(f"colorize trains the model 'colorization_net'; got model_name "
                      f"{config.model_name!r}.")
  choose("colorize model.output", _output(config), OUTPUTS)


def _output(config: ml_collections.ConfigDict) -> str:
  """The model's head: ``'lab'`` (the a, b chroma) or ``'rgb'``."""
  return config.model.get("output", "lab")


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> nets.State:
  """Initialises the model on the grey version of ``batch['x']`` (B, H, W, 3)."""
  x = np.asarray(batch["x"])
  if x.ndim != 4 or x.shape[-1] != 3:
    raise DataError(f"colorize needs RGB images of shape (B, H, W, 3); dataset "
                    f"{config.dataset!r} gives shape {x.shape}.")
  model = nets.build_model(config)
  return nets.create(config, model, rng, jax.jit(color.rgb_to_grey)(x[:1]))


def _split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RGB (B, H, W, 3) -> the grey input L / 100 (B, H, W, 1) and the target chroma ab / 110
  (B, H, W, 2)."""
  lab = color.rgb_to_lab(x)
  return lab[..., :1] / 100, lab[..., 1:] / color.AB_SCALE


def _target(output: str, x: jax.Array, ab: jax.Array) -> jax.Array:
  return ab if output == "lab" else x


def _to_rgb(output: str, grey: jax.Array, prediction: jax.Array) -> jax.Array:
  """The colorized image (B, H, W, 3) in [0, 1] from the grey input and the model's output."""
  if output == "rgb":
    return prediction
  return color.lab_to_rgb(jnp.concatenate([100 * grey, color.AB_SCALE * prediction], axis=-1))


def _predict(state: nets.State, grey: jax.Array) -> jax.Array:
  out, _ = nets.apply(state, state.params, grey, train=False)
  return out.astype(jnp.float32)


def train_step(config: ml_collections.ConfigDict, state: nets.State,
               batch: dict, rng: jax.Array) -> tuple[nets.State, dict]:
  """One optimizer step on the MSE between the prediction from grey and the target."""
  x = batch["x"].astype(jnp.float32)
  grey, ab = _split(x)
  target = _target(_output(config), x, ab)

  def loss_fn(params):
    out, batch_stats = nets.apply(state, params, grey, train=True)
    return jnp.mean((out.astype(jnp.float32) - target) ** 2), batch_stats

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads, batch_stats=batch_stats), {"loss": loss}


def _chroma(rgb: jax.Array) -> jax.Array:
  """Mean chroma sqrt(a^2 + b^2) of each image (B, H, W, 3) -> (B,): 0 for a grey image."""
  lab = color.rgb_to_lab(rgb)
  return jnp.hypot(lab[..., 1], lab[..., 2]).reshape(rgb.shape[0], -1).mean(axis=1)


def eval_step(config: ml_collections.ConfigDict, state: nets.State, batch: dict) -> dict:
  """Per-image (B,) ``loss``, ``mse`` and ``psnr`` of the colorized image against the truth,
  ``mse_grey`` and ``psnr_grey`` of the grey image as RGB, and the mean chroma of the
  colorized image and of the truth (``chroma``, ``chroma_true``: washed-out colours show as
  ``chroma`` well below ``chroma_true``)."""
  x = batch["x"].astype(jnp.float32)
  grey, ab = _split(x)
  out = _predict(state, grey)
  rgb = _to_rgb(_output(config), grey, out)
  mse = metrics.mse_per_image(rgb, x)
  mse_grey = metrics.mse_per_image(color.grey_to_rgb(grey), x)
  return {"loss": metrics.mse_per_image(out, _target(_output(config), x, ab)),
          "mse": mse, "psnr": metrics.psnr(mse),
          "mse_grey": mse_grey, "psnr_grey": metrics.psnr(mse_grey),
          "chroma": _chroma(rgb), "chroma_true": _chroma(x)}


def _colorize(output: str, state: nets.State, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RGB images (B, H, W, 3) -> their grey version shown as RGB and the colorized image, both
  (B, H, W, 3)."""
  grey, _ = _split(x)
  return color.grey_to_rgb(grey), _to_rgb(output, grey, _predict(state, grey))


def figures(config: ml_collections.ConfigDict, state: nets.State,
            outputs: dict, dataset, outdir: str, n: int = 8) -> None:
  """``colorized.png``: ``n`` test images spread over the split, in rows: the grey input (shown
  as the neutral colour of its lightness), the colorized image and the truth, with PSNRs."""
  idx = np.unique(np.linspace(0, len(dataset.test) - 1, n).astype(int))
  x = jnp.asarray(dataset.test[idx]["x"], jnp.float32)
  grey, rgb = jax.jit(_colorize, static_argnums=0)(_output(config), state, x)
  images = np.concatenate([grey, rgb, x])
  titles = ([f"grey {p:.1f} dB" for p in outputs["psnr_grey"][idx]]
            + [f"colorized {p:.1f} dB" for p in outputs["psnr"][idx]] + ["truth"] * len(idx))
  report.plot_images(images, titles, os.path.join(outdir, "colorized.png"), cols=len(idx))
