"""Overlap of binary masks: the soft Dice loss that trains, and hard Dice and IoU that measure.

For a predicted mask P and a true mask G (sets of foreground pixels)

  Dice = 2 |P n G| / (|P| + |G|),     IoU = |P n G| / |P u G|,     IoU = Dice / (2 - Dice),

so the two rank predictions alike. The soft Dice replaces the set P by probabilities
p = sigmoid(logits) in [0, 1], which makes it differentiable in the logits. Everything here
works per image: arrays are (B, ...) and the result is (B,), the caller averages.
"""

import jax
import jax.numpy as jnp


def _per_image_sum(a: jnp.ndarray) -> jnp.ndarray:
  return jnp.sum(a, axis=tuple(range(1, a.ndim)))


def soft_dice_loss(logits: jnp.ndarray, masks: jnp.ndarray, eps: float = 1.0) -> jnp.ndarray:
  """``1 - (2 sum(p g) + eps) / (sum p + sum g + eps)`` per image, with ``p = sigmoid(logits)``.

  Args:
    logits: (B, H, W, C) model outputs.
    masks: (B, H, W, C) true masks with values in [0, 1].
    eps: smoothing; it keeps the loss defined, and near 0, on an empty mask predicted empty.
  Returns:
    (B,) float32 losses in [0, 1]; their mean is the batch's Dice loss.
  """
  p = jax.nn.sigmoid(logits.astype(jnp.float32))
  g = masks.astype(jnp.float32)
  overlap = _per_image_sum(p * g)
  return 1.0 - (2.0 * overlap + eps) / (_per_image_sum(p) + _per_image_sum(g) + eps)


def _binary_counts(pred: jnp.ndarray, target: jnp.ndarray, threshold: float):
  p, g = pred > threshold, target > threshold
  return (_per_image_sum(p & g).astype(jnp.float32), _per_image_sum(p).astype(jnp.float32),
          _per_image_sum(g).astype(jnp.float32))


def dice(pred: jnp.ndarray, target: jnp.ndarray, threshold: float = 0.5) -> jnp.ndarray:
  """Hard Dice ``2 |P n G| / (|P| + |G|)`` per image, with P = {pred > threshold} and
  G = {target > threshold}.

  Args:
    pred: (B, ...) predicted probabilities.
    target: (B, ...) true masks.
  Returns:
    (B,) float32 in [0, 1]; 1.0 where both P and G are empty (nothing to find, nothing found),
    0.0 where exactly one of them is.
  """
  both, p, g = _binary_counts(pred, target, threshold)
  total = p + g
  return jnp.where(total > 0, 2.0 * both / jnp.maximum(total, 1.0), 1.0)


def iou(pred: jnp.ndarray, target: jnp.ndarray, threshold: float = 0.5) -> jnp.ndarray:
  """Intersection over union ``|P n G| / |P u G|`` per image, P and G as in :func:`dice`.

  Returns:
    (B,) float32 in [0, 1]; 1.0 where both P and G are empty, 0.0 where exactly one is.
  """
  both, p, g = _binary_counts(pred, target, threshold)
  union = p + g - both
  return jnp.where(union > 0, both / jnp.maximum(union, 1.0), 1.0)
