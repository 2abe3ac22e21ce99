"""Faster R-CNN's targets and losses (ops/detection.py): smooth L1, binary and softmax
cross-entropy against PyTorch's functions, the labels of anchors and proposals on hand-made
cases, padding and empty images, and bad ground truth refused in one sentence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m2m_jax.errors import DataError
from m2m_jax.ops import boxes as boxes_lib
from m2m_jax.ops import detection


def test_smooth_l1_is_pytorchs():
  x = np.random.default_rng(0).normal(scale=0.3, size=200).astype(np.float32)
  want = F.smooth_l1_loss(torch.from_numpy(x), torch.zeros(200), beta=1 / 9, reduction="none")
  np.testing.assert_allclose(detection.smooth_l1(x), want.numpy(), rtol=1e-6, atol=1e-7)


def test_rpn_targets_by_hand():
  """One box (0, 0, 10, 10): an anchor equal to it is an object, one of IoU 0.8 too; IoU 0.5 is
  ignored; a far one is background; with the box padded away every anchor is background."""
  gt = jnp.array([[0, 0, 10, 10], [0, 0, 0, 0]], jnp.float32)
  anchors = jnp.array([[0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 5], [20, 20, 30, 30]],
                      jnp.float32)
  labels, targets = detection.rpn_targets(anchors, gt, jnp.array([True, False]))
  np.testing.assert_array_equal(labels, [1, 1, -1, 0])
  np.testing.assert_allclose(targets[0], 0, atol=1e-6)
  np.testing.assert_allclose(targets[1], boxes_lib.encode(gt[0], anchors[1]), rtol=1e-6)
  labels, _ = detection.rpn_targets(anchors, gt, jnp.array([False, False]))
  np.testing.assert_array_equal(labels, [0, 0, 0, 0])
  # Numpy ground truth held by a jitted function (a constant of it) gives the same labels.
  held = jax.jit(lambda a: detection.rpn_targets(a, np.asarray(gt), np.array([True, False])))
  np.testing.assert_array_equal(held(anchors)[0], [1, 1, -1, 0])


def test_a_box_no_anchor_reaches_keeps_its_best_anchor():
  gt = jnp.array([[0, 0, 10, 10]], jnp.float32)
  anchors = jnp.array([[0, 0, 10, 4], [0, 0, 10, 2], [30, 30, 40, 40]], jnp.float32)
  labels, _ = detection.rpn_targets(anchors, gt, jnp.array([True]))
  np.testing.assert_array_equal(labels, [1, 0, 0])  # IoU 0.4: the box's best, an object


def test_rpn_loss_terms_are_pytorchs_sums():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=12).astype(np.float32)
  deltas, targets = (rng.normal(size=(12, 4)).astype(np.float32) for _ in range(2))
  labels = np.array([1, 0, -1, 1, 0, 0, 1, -1, 0, 1, 0, 0], np.int32)
  sampled = np.array([1, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0], bool)
  terms = detection.rpn_loss_terms(logits, deltas, labels, targets, sampled)
  use = sampled & (labels >= 0)
  pos = use & (labels == 1)
  want_bce = F.binary_cross_entropy_with_logits(torch.from_numpy(logits[use]),
                                                torch.from_numpy((labels[use] == 1) * 1.0)
                                                .float(), reduction="sum")
  want_box = F.smooth_l1_loss(torch.from_numpy(deltas[pos]), torch.from_numpy(targets[pos]),
                              beta=1 / 9, reduction="sum")
  assert float(terms["count"]) == use.sum() == 7
  np.testing.assert_allclose(terms["objectness"], want_bce.item(), rtol=1e-5)
  np.testing.assert_allclose(terms["box"], want_box.item(), rtol=1e-5)


def test_head_targets_add_the_boxes_and_take_their_classes():
  """Two proposals (one padded) and two boxes (one padded): candidates are the proposals then
  the boxes; a proposal at IoU 0.8 with the box of class 2 is labelled 3, the box itself too;
  padding is -1."""
  proposals = jnp.array([[0, 0, 10, 8], [0, 0, 0, 0]], jnp.float32)
  gt = jnp.array([[0, 0, 10, 10], [5, 5, 6, 6]], jnp.float32)
  candidates, valid, labels, targets = detection.head_targets(
      proposals, jnp.array([True, False]), gt, jnp.array([2, 0]), jnp.array([True, False]))
  np.testing.assert_array_equal(candidates, np.concatenate([proposals, gt]))
  np.testing.assert_array_equal(valid, [True, False, True, False])
  np.testing.assert_array_equal(labels, [3, -1, 3, -1])
  np.testing.assert_allclose(targets[0], boxes_lib.encode(gt[0], proposals[0],
                                                          boxes_lib.HEAD_WEIGHTS), rtol=1e-6)
  _, _, labels, _ = detection.head_targets(jnp.array([[40, 40, 50, 50.]]), jnp.array([True]),
                                           gt, jnp.array([2, 0]), jnp.array([True, False]))
  np.testing.assert_array_equal(labels, [0, 3, -1])  # far: background


def test_head_loss_terms_are_pytorchs_sums():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(10, 4)).astype(np.float32)
  deltas = rng.normal(size=(10, 4, 4)).astype(np.float32)
  targets = rng.normal(size=(10, 4)).astype(np.float32)
  labels = np.array([0, 3, 1, -1, 2, 0, 0, 1, 3, 0], np.int32)
  sampled = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1, 0], bool)
  terms = detection.head_loss_terms(logits, deltas, labels, targets, sampled)
  use = sampled & (labels >= 0)
  pos = use & (labels > 0)
  want_ce = F.cross_entropy(torch.from_numpy(logits[use]), torch.from_numpy(labels[use]).long(),
                            reduction="sum")
  want_box = F.smooth_l1_loss(torch.from_numpy(deltas[pos, labels[pos]]),
                              torch.from_numpy(targets[pos]), beta=1 / 9, reduction="sum")
  assert float(terms["count"]) == use.sum() == 7
  np.testing.assert_allclose(terms["classifier"], want_ce.item(), rtol=1e-5)
  np.testing.assert_allclose(terms["box"], want_box.item(), rtol=1e-5)


def test_unmatched_targets_do_not_poison_the_loss():
  """A background anchor's target is encoded against the padding box (infinite); the loss and
  its gradient stay finite."""
  anchors = jnp.array([[0, 0, 10, 10], [20, 20, 30, 30]], jnp.float32)
  labels, targets = detection.rpn_targets(anchors, jnp.zeros((1, 4)), jnp.array([False]))
  assert not np.isfinite(np.asarray(targets)).all()
  loss = lambda d: sum(detection.rpn_loss_terms(jnp.zeros(2), d, labels, targets,  # noqa: E731
                                                jnp.ones(2, bool)).values())
  assert np.isfinite(loss(jnp.zeros((2, 4))))
  assert np.isfinite(jax.grad(loss)(jnp.zeros((2, 4)))).all()


def test_bad_ground_truth_is_refused_in_one_sentence():
  with pytest.raises(DataError, match=r"boxes \(M, 4\) with a mask \(M,\); got shapes \(2, 3\)"):
    detection.rpn_targets(jnp.zeros((3, 4)), jnp.zeros((2, 3)), jnp.ones(2, bool))
