"""Faster R-CNN's training targets and losses, for one image, with static shapes.

Each stage labels its candidates (the RPN its anchors, the box head its proposals) by matching
them to the ground truth (:func:`m2m_jax.ops.boxes.match`), samples a fixed-size balanced set of
them (:func:`m2m_jax.ops.boxes.sample_balanced`), and is trained on that set only:

- the RPN: an anchor of IoU >= 0.7 with some box (or the best anchor of a box) is an object (1),
  one below 0.3 with every box background (0), the rest ignored (-1); objectness by binary
  cross-entropy over the sampled anchors, the deltas of the sampled objects by smooth L1 with
  beta 1/9 against :func:`~m2m_jax.ops.boxes.encode` of their box (weights 1, 1, 1, 1);
- the box head: the proposals and the ground-truth boxes themselves; IoU >= 0.5 takes the
  box's class (1 .. K, background 0), below it background; class by cross-entropy over the
  sampled proposals, the deltas of the true class of the sampled objects by smooth L1 with beta
  1/9 against ``encode`` with the head weights (10, 10, 5, 5).

As torchvision's ``fastrcnn_loss`` and RPN loss, both box terms are sums over the objects
divided by the number of sampled candidates (objects and background alike), and every term's
sum comes out with that count, so that a batch's loss is its images' sums over their counts
summed (torchvision concatenates the images). Padded ground truth (``gt_valid`` False) and
padded candidates take no part; an image without boxes trains its candidates as background.
"""

import jax
import jax.numpy as jnp
import optax

from m2m_jax.errors import DataError
from m2m_jax.ops import boxes as boxes_lib

SMOOTH_L1_BETA = 1 / 9


def smooth_l1(x: jax.Array, beta: float = SMOOTH_L1_BETA) -> jax.Array:
  """Elementwise ``0.5 x^2 / beta`` where ``|x| < beta``, else ``|x| - 0.5 beta`` (PyTorch's
  ``smooth_l1_loss``, reduction none)."""
  a = jnp.abs(x)
  return jnp.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


def _matched(candidates: jax.Array, gt_boxes: jax.Array, gt_valid: jax.Array, high: float,
             low: float, allow_low_quality: bool) -> tuple[jax.Array, jax.Array]:
  """Each candidate's match (N,) (gt index, -1 or -2) and its gt box (N, 4) (box 0 where none)."""
  gt_boxes, gt_valid = jnp.asarray(gt_boxes), jnp.asarray(gt_valid)
  if gt_boxes.ndim != 2 or gt_boxes.shape[-1] != 4 or gt_valid.shape != gt_boxes.shape[:1]:
    raise DataError(f"the ground truth must be boxes (M, 4) with a mask (M,); got shapes "
                    f"{tuple(gt_boxes.shape)} and {tuple(gt_valid.shape)}.")
  matches = boxes_lib.match(boxes_lib.pairwise_iou(gt_boxes, candidates), gt_valid, high, low,
                            allow_low_quality)
  return matches, gt_boxes[jnp.maximum(matches, 0)]


def rpn_targets(anchors: jax.Array, gt_boxes: jax.Array, gt_valid: jax.Array,
                high: float = 0.7, low: float = 0.3) -> tuple[jax.Array, jax.Array]:
  """The RPN's labels (N,) int32 (1 object, 0 background, -1 ignored) and regression targets
  (N, 4) of ``anchors`` (N, 4) against ``gt_boxes`` (M, 4) with ``gt_valid`` (M,)."""
  matches, matched = _matched(anchors, gt_boxes, gt_valid, high, low, allow_low_quality=True)
  labels = jnp.where(matches >= 0, 1, jnp.where(matches == boxes_lib.BELOW_LOW_THRESHOLD, 0, -1))
  return labels.astype(jnp.int32), boxes_lib.encode(matched, anchors, boxes_lib.RPN_WEIGHTS)


def rpn_loss_terms(objectness: jax.Array, deltas: jax.Array, labels: jax.Array,
                   targets: jax.Array, sampled: jax.Array) -> dict[str, jax.Array]:
  """Sums over the sampled anchors of one image: ``objectness`` (N,) logits by binary
  cross-entropy against ``labels`` (N,), ``deltas`` (N, 4) of the objects by smooth L1 against
  ``targets`` (N, 4); and ``count``, how many were sampled (``sampled`` (N,) bool)."""
  sampled = sampled & (labels >= 0)
  bce = optax.sigmoid_binary_cross_entropy(objectness, (labels == 1).astype(objectness.dtype))
  positive = sampled & (labels == 1)
  box = jnp.where(positive[:, None], smooth_l1(deltas - jnp.where(positive[:, None], targets, 0)),
                  0.0)
  return {"objectness": jnp.sum(jnp.where(sampled, bce, 0.0)), "box": jnp.sum(box),
          "count": jnp.sum(sampled).astype(jnp.float32)}


def head_targets(proposals: jax.Array, proposals_valid: jax.Array, gt_boxes: jax.Array,
                 gt_labels: jax.Array, gt_valid: jax.Array, threshold: float = 0.5
                 ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The box head's candidates, the ``proposals`` (R, 4) then the ground-truth boxes (M, 4)
  themselves (torchvision's ``add_gt_proposals``), with their labels: the matched box's class
  + 1 (``gt_labels`` (M,) in 0 .. K - 1) at IoU >= ``threshold``, else 0 (background), and -1
  for padding; and their regression targets with the head weights.

  Returns:
    (candidates (R + M, 4), valid (R + M,) bool, labels (R + M,) int32, targets (R + M, 4)).
  """
  candidates = jnp.concatenate([proposals, gt_boxes.astype(proposals.dtype)])
  valid = jnp.concatenate([proposals_valid, gt_valid])
  matches, matched = _matched(candidates, gt_boxes, gt_valid, threshold, threshold,
                              allow_low_quality=False)
  classes = gt_labels[jnp.maximum(matches, 0)].astype(jnp.int32) + 1
  labels = jnp.where(~valid, -1, jnp.where(matches >= 0, classes,
                                           jnp.where(matches == boxes_lib.BELOW_LOW_THRESHOLD,
                                                     0, -1)))
  targets = boxes_lib.encode(matched, candidates, boxes_lib.HEAD_WEIGHTS)
  return candidates, valid, labels.astype(jnp.int32), targets


def head_loss_terms(logits: jax.Array, deltas: jax.Array, labels: jax.Array, targets: jax.Array,
                    sampled: jax.Array) -> dict[str, jax.Array]:
  """Sums over the sampled candidates of one image: class ``logits`` (R, K + 1) by
  cross-entropy against ``labels`` (R,), the true class's ``deltas`` (R, K + 1, 4) of the
  objects by smooth L1 against ``targets`` (R, 4); and ``count``, how many were sampled."""
  sampled = sampled & (labels >= 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
  positive = sampled & (labels > 0)
  own = jnp.take_along_axis(deltas, jnp.maximum(labels, 0)[:, None, None], axis=1)[:, 0]
  box = jnp.where(positive[:, None], smooth_l1(own - jnp.where(positive[:, None], targets, 0)),
                  0.0)
  return {"classifier": jnp.sum(jnp.where(sampled, ce, 0.0)), "box": jnp.sum(box),
          "count": jnp.sum(sampled).astype(jnp.float32)}
