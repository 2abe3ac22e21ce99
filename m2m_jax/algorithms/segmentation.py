"""Binary segmentation: a network maps an image (B, H, W, C) to mask logits (B, H, W, K).

Loss per image: the mean binary cross-entropy over its pixels plus ``config.dice_weight``
times the soft Dice loss, ``1 - (2 sum(p g) + 1) / (sum p + sum g + 1)`` with p = sigmoid(logits)
(:mod:`m2m_jax.ops.segmentation`); the batch loss is their mean. Both terms are functions of
the logits, so both send gradient (the original computed its Dice with ``.item()``, a Python
float, and trained on the cross-entropy alone). Held-out images are scored by the hard Dice and
IoU of the mask thresholded at p > 0.5. Augmentation is ``config.transforms``
(:mod:`m2m_jax.data.transforms`): ``flip_lr(keys=('x', 'y'))`` mirrors each image and its mask
together. BatchNorm statistics live in ``state.batch_stats`` (see :mod:`m2m_jax.algorithms.nets`).
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from m2m_jax import report
from m2m_jax.algorithms import nets
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.ops import segmentation as seg

SCHEDULED = True  # its learning rate follows optim.schedule(config); logged to TensorBoard

TAKES_TRANSFORMS = True  # its train step draws nothing of its own

NUM_FIGURE_IMAGES = 8


def validate(config: ml_collections.ConfigDict) -> None:
  if not config.model_name:
    raise ConfigError("segmentation needs config.model_name (e.g. 'unet').")
  if config.get("dice_weight", 1.0) < 0:
    raise ConfigError(f"dice_weight must be >= 0, got {config.dice_weight}.")


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> nets.State:
  """Initialises the model on ``batch`` = {'x': (B, H, W, C), 'y': (B, H, W, K) masks}."""
  x, y = np.asarray(batch["x"]), np.asarray(batch["y"])
  if x.ndim != 4 or y.ndim != 4 or y.shape[:3] != x.shape[:3]:
    raise DataError(f"segmentation needs images (B, H, W, C) and masks (B, H, W, K) of the same "
                    f"height and width; dataset {config.dataset!r} gives {x.shape} and {y.shape}.")
  if y.min() < 0 or y.max() > 1:
    raise DataError(f"segmentation masks must lie in [0, 1]; dataset {config.dataset!r} gives "
                    f"{y.min()}..{y.max()} (for a label mask, set config.data.mask_values).")
  model = nets.build_model(config, out_channels=y.shape[-1], in_channels=x.shape[-1])
  return nets.create(config, model, rng, x)


def _logits(state: nets.State, params, x: jax.Array, train: bool):
  logits, batch_stats = nets.apply(state, params, x, train)
  return logits.astype(jnp.float32), batch_stats


def _bce(logits: jax.Array, masks: jax.Array) -> jax.Array:
  """(B,) mean binary cross-entropy over each image's pixels."""
  return optax.sigmoid_binary_cross_entropy(logits, masks).mean(axis=(1, 2, 3))


def train_step(config: ml_collections.ConfigDict, state: nets.State,
               batch: dict, rng: jax.Array) -> tuple[nets.State, dict]:
  """One optimizer step on mean(BCE + dice_weight * soft Dice loss) over ``batch``."""
  x, y = batch["x"], batch["y"]

  def loss_fn(params):
    logits, batch_stats = _logits(state, params, x, train=True)
    bce = _bce(logits, y).mean()
    loss = bce + config.get("dice_weight", 1.0) * seg.soft_dice_loss(logits, y).mean()
    return loss, (logits, batch_stats, bce)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (loss, (logits, batch_stats, bce)), grads = grad_fn(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return state, {"loss": loss, "bce": bce, "dice": seg.dice(jax.nn.sigmoid(logits), y).mean()}


def eval_step(config: ml_collections.ConfigDict, state: nets.State, batch: dict) -> dict:
  """Per image, each (B,): ``loss`` (BCE + dice_weight * soft Dice loss), hard ``dice``, ``iou``."""
  logits, _ = _logits(state, state.params, batch["x"], train=False)
  y, probs = batch["y"], jax.nn.sigmoid(logits)
  dice_weight = config.get("dice_weight", 1.0)
  return {"loss": _bce(logits, y) + dice_weight * seg.soft_dice_loss(logits, y),
          "dice": seg.dice(probs, y), "iou": seg.iou(probs, y)}


def plot_overlays(images: np.ndarray, masks: np.ndarray, preds: np.ndarray, path: str,
                  title: str = "") -> None:
  """One column per image: the image, the true mask, the predicted mask, and the image with the
  true (green) and predicted (red) outlines; the prediction's Dice above it.

  images: (N, H, W, C) in [0, 1]; masks, preds: (N, H, W, 1) in {0, 1}.
  """
  scores = np.asarray(seg.dice(preds, masks))
  n = len(images)
  fig, axes = report.figure(4, n, figsize=(1.5 * n, 6.4), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for j, (img, mask, pred, score) in enumerate(zip(images, masks, preds, scores)):
    shown = img[..., 0] if img.shape[-1] == 1 else img
    axes[0, j].imshow(shown, cmap="gray", vmin=0, vmax=1)
    axes[1, j].imshow(mask[..., 0], cmap="gray", vmin=0, vmax=1)
    axes[2, j].imshow(pred[..., 0], cmap="gray", vmin=0, vmax=1)
    axes[2, j].set_title(f"Dice {score:.2f}", fontsize=8)
    axes[3, j].imshow(shown, cmap="gray", vmin=0, vmax=1)
    for m, color in ((mask, "lime"), (pred, "red")):
      if 0 < m.sum() < m.size:
        axes[3, j].contour(m[..., 0], levels=[0.5], colors=color, linewidths=1)
  for ax, label in zip(axes[:, 0], ("image", "truth", "prediction", "outlines")):
    ax.text(-0.08, 0.5, label, transform=ax.transAxes, rotation=90, ha="right", va="center",
            fontsize=9)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def figures(config: ml_collections.ConfigDict, state: nets.State,
            outputs: dict, dataset, outdir: str) -> None:
  """``overlays.png``: the first held-out images with their true and predicted masks."""
  batch = dataset.test[np.arange(min(NUM_FIGURE_IMAGES, len(dataset.test)))]
  logits, _ = _logits(state, state.params, jnp.asarray(batch["x"]), train=False)
  preds = (np.asarray(logits) > 0).astype(np.float32)[..., :1]
  plot_overlays(batch["x"], batch["y"][..., :1], preds, os.path.join(outdir, "overlays.png"),
                f"{dataset.name}: held-out Dice {outputs['dice'].mean():.3f}, "
                f"IoU {outputs['iou'].mean():.3f}")
