"""Faster R-CNN's networks (models/faster_rcnn.py): torchvision's parameter counts layer for
layer, the feature pyramid's top-down pass against its definition, the heads' output layouts,
the two stages' post-processing against numpy, torchvision's weights converted (its pyramid and
heads' outputs), and bad input refused in one sentence."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import torchvision_detection
from m2m_jax.errors import DataError
from m2m_jax.models.faster_rcnn import (FPN, FasterRCNN, FastRCNNPredictor, RPNHead, TwoMLPHead,
                                        detections, from_torchvision, rpn_proposals)
from m2m_jax.ops import boxes as boxes_lib


def _count(variables) -> int:
  return sum(math.prod(v.shape) for v in jax.tree.leaves(variables["params"]))


def _stages(batch: int = 1, side: int = 64, channels=(256, 512, 1024, 2048)) -> list:
  """ResNet-50's C2..C5 of a side x side image: strides 4 to 32."""
  return [jnp.zeros((batch, side // 4 // 2**i, side // 4 // 2**i, c))
          for i, c in enumerate(channels)]


def test_parameter_counts_are_torchvisions():
  """fasterrcnn_resnet50_fpn's parts (91 COCO classes with the background): the FPN 3,344,384
  (4 lateral 1x1 and 4 output 3x3 convolutions, 256 channels), the RPN head 593,935 (3
  anchors), TwoMLPHead 13,895,680 (256 x 7 x 7 -> 1024 -> 1024), the predictor 466,375; with
  ResNet-50's 23,454,912 frozen-BatchNorm backbone parameters, torchvision's 41,755,286."""
  key = jax.random.key(0)
  stages = _stages()
  fpn = jax.eval_shape(FPN().init, key, stages)
  pyramid = jax.eval_shape(FPN().apply, fpn, stages)
  rpn = jax.eval_shape(RPNHead().init, key, pyramid)
  box = jax.eval_shape(TwoMLPHead().init, key, jnp.zeros((2, 7, 7, 256)))
  predictor = jax.eval_shape(FastRCNNPredictor(90).init, key, jnp.zeros((2, 1024)))
  counts = [_count(v) for v in (fpn, rpn, box, predictor)]
  assert counts == [3_344_384, 593_935, 13_895_680, 466_375]
  assert sum(counts) + 23_454_912 == 41_755_286


def test_the_pyramid_adds_each_coarser_level_to_the_one_below():
  """With identity lateral and output convolutions, P5 = C5, P_l = C_l + up2(P_{l+1}), P6 =
  P5 subsampled by 2, written out in numpy."""
  width = 3
  rng = np.random.default_rng(0)
  stages = [rng.normal(size=(2, 16 // 2**i, 16 // 2**i, width)).astype(np.float32)
            for i in range(4)]
  fpn = FPN(width=width)
  variables = fpn.init(jax.random.key(0), stages)
  eye1, eye3 = np.eye(width)[None, None], np.zeros((3, 3, width, width))
  eye3[1, 1] = np.eye(width)
  params = {name: {"kernel": eye1 if name.startswith("inner") else eye3,
                   "bias": np.zeros(width)} for name in variables["params"]}
  pyramid = fpn.apply({"params": params}, stages)
  up = lambda a: a.repeat(2, axis=1).repeat(2, axis=2)
  expected = [stages[3]]
  for c in reversed(stages[:3]):
    expected.insert(0, c + up(expected[0]))
  expected.append(expected[-1][:, ::2, ::2])
  assert [p.shape for p in pyramid] == [(2, 16, 16, 3), (2, 8, 8, 3), (2, 4, 4, 3), (2, 2, 2, 3),
                                        (2, 1, 1, 3)]
  for got, want in zip(pyramid, expected):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_heads_lay_out_anchors_and_classes_as_torchvision():
  """RPN deltas (B, H, W, A, 4) are torchvision's (B, 4A, H, W) channels a * 4 + c; the box
  head flattens a pooled RoI channel first, as torchvision's (R, C, S, S) flatten."""
  pyramid = [jnp.ones((1, 4, 4, 8)), jnp.ones((1, 2, 2, 8))]
  head = RPNHead(num_anchors=3)
  variables = head.init(jax.random.key(0), pyramid)
  (logits, deltas), (small, _) = head.apply(variables, pyramid)
  assert logits.shape == (1, 4, 4, 3) and deltas.shape == (1, 4, 4, 3, 4)
  assert small.shape == (1, 2, 2, 3)
  conv = nn.Conv(8, (3, 3), padding="SAME")
  hidden = jax.nn.relu(conv.apply({"params": variables["params"]["conv"]}, pyramid[0]))
  flat = hidden @ variables["params"]["bbox_pred"]["kernel"][0, 0] + \
      variables["params"]["bbox_pred"]["bias"]
  np.testing.assert_allclose(deltas[0, 1, 2, 2, 3], flat[0, 1, 2, 2 * 4 + 3], rtol=1e-5)

  rois = jax.random.normal(jax.random.key(1), (2, 7, 7, 4))
  mlp = TwoMLPHead(representation=5)
  variables = mlp.init(jax.random.key(2), rois)
  kernel = variables["params"]["fc6"]["kernel"]
  torch_flat = np.asarray(rois).transpose(0, 3, 1, 2).reshape(2, -1)  # (R, C * S * S)
  fc6 = np.maximum(torch_flat @ kernel + variables["params"]["fc6"]["bias"], 0)
  fc7 = fc6 @ variables["params"]["fc7"]["kernel"] + variables["params"]["fc7"]["bias"]
  np.testing.assert_allclose(mlp.apply(variables, rois), np.maximum(fc7, 0), rtol=1e-5,
                             atol=1e-6)

  logits, deltas = FastRCNNPredictor(num_classes=3).apply(
      FastRCNNPredictor(num_classes=3).init(jax.random.key(3), jnp.ones((2, 5))), jnp.ones((2, 5)))
  assert logits.shape == (2, 4) and deltas.shape == (2, 4, 4)


@pytest.mark.parametrize("make, inputs, message", [
    (FPN, [jnp.zeros((1, 8, 8, 4)), jnp.zeros((1, 3, 3, 4))], r"each stage at half the resolution"),
    (FPN, [jnp.zeros((8, 8, 4))], r"\(B, H, W, C\) maps; got shapes \[\(8, 8, 4\)\]"),
    (TwoMLPHead, jnp.zeros((2, 49, 4)), r"pooled RoIs \(R, S, S, C\); got shape \(2, 49, 4\)")])
def test_bad_input_is_refused_in_one_sentence(make, inputs, message):
  with pytest.raises(DataError, match=message):
    make().init(jax.random.key(0), inputs)


def _np_decode(deltas, boxes, weights, clamp=math.log(1000 / 16)):
  w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
  d = deltas / np.asarray(weights)
  pcx, pcy = d[:, 0] * w + cx, d[:, 1] * h + cy
  pw, ph = np.exp(np.minimum(d[:, 2], clamp)) * w, np.exp(np.minimum(d[:, 3], clamp)) * h
  return np.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], 1)


def _np_iou(a, b):
  lo, hi = np.maximum(a[:2], b[:, :2]), np.minimum(a[2:], b[:, 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), 1)
  union = np.prod(a[2:] - a[:2]) + np.prod(b[:, 2:] - b[:, :2], 1) - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def _np_filtered(boxes, scores, groups, keep, size, min_size, threshold, n):
  """Clip, drop small and unwanted boxes, NMS within groups, the best n: from the definition."""
  boxes = np.clip(boxes, 0, [size[1], size[0], size[1], size[0]])
  keep = keep & (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)
  order = [i for i in np.argsort(-scores, kind="stable") if keep[i]]
  kept = []
  for i in order:
    if all(groups[j] != groups[i] or _np_iou(boxes[i], boxes[[j]])[0] <= threshold for j in kept):
      kept.append(i)
  kept = kept[:n]
  return boxes[kept], scores[kept], groups[kept]


def test_rpn_proposals_follow_torchvisions_filter():
  """Two levels of random logits, deltas and anchors against the same steps in numpy: the top
  k a level, decode, sigmoid, clip, small boxes out, NMS within each level, the best n."""
  rng = np.random.default_rng(0)
  sizes, size = [(4, 4), (2, 2)], (32, 32)
  anchors = [np.asarray(boxes_lib.anchors([s], [st], [[a]], [(0.5, 1.0, 2.0)]))
             for s, st, a in zip(sizes, (8, 16), (12, 24))]
  objectness = [rng.normal(size=(*s, 3)).astype(np.float32) for s in sizes]
  deltas = [0.5 * rng.normal(size=(*s, 3, 4)).astype(np.float32) for s in sizes]
  boxes, scores, valid = jax.jit(functools.partial(
      rpn_proposals, image_size=size, pre_nms_top_n=20, post_nms_top_n=30,
      nms_threshold=0.5))(objectness, deltas, anchors)
  ref_boxes, ref_logits, ref_levels = [], [], []
  for level, (o, d, a) in enumerate(zip(objectness, deltas, anchors)):
    top = np.argsort(-o.reshape(-1), kind="stable")[:20]
    ref_boxes.append(_np_decode(d.reshape(-1, 4)[top], a[top], (1, 1, 1, 1)))
    ref_logits.append(o.reshape(-1)[top])
    ref_levels.append(np.full(len(top), level))
  ref_scores = 1 / (1 + np.exp(-np.concatenate(ref_logits)))
  want = _np_filtered(np.concatenate(ref_boxes), ref_scores, np.concatenate(ref_levels),
                      np.ones(len(ref_scores), bool), size, 1e-3, 0.5, 30)
  n = int(valid.sum())
  assert n == len(want[0]) and 4 < n < 30 and not valid[n:].any()
  np.testing.assert_allclose(boxes[:n], want[0], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(scores[:n], want[1], rtol=1e-5)
  grad = jax.grad(lambda d: rpn_proposals(objectness, [d, deltas[1]], anchors, size, 20, 30)[0]
                  .sum())(deltas[0])
  assert grad.shape == deltas[0].shape and not np.any(grad)  # proposals are inputs, not outputs


def test_detections_follow_torchvisions_postprocess():
  """Random class logits and deltas of 12 proposals, 3 classes, against numpy: softmax, per-class
  boxes decoded with (10, 10, 5, 5), background dropped, scores > 0.05, NMS within each class,
  the best 10."""
  rng = np.random.default_rng(1)
  xy = rng.uniform(0, 40, (12, 2))
  proposals = np.concatenate([xy, xy + rng.uniform(4, 20, (12, 2))], 1).astype(np.float32)
  proposals_valid = np.arange(12) < 10
  logits = 2 * rng.normal(size=(12, 4)).astype(np.float32)
  deltas = rng.normal(size=(12, 4, 4)).astype(np.float32)
  boxes, scores, labels, valid = jax.jit(functools.partial(
      detections, image_size=(48, 48), max_detections=10))(logits, deltas, proposals,
                                                           proposals_valid)
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  ref = _np_decode(deltas[:, 1:].reshape(-1, 4), np.repeat(proposals, 3, 0), (10, 10, 5, 5))
  keep = (proposals_valid[:, None] & (probs[:, 1:] > 0.05)).reshape(-1)
  want = _np_filtered(ref, probs[:, 1:].reshape(-1), np.tile(np.arange(3), 12), keep, (48, 48),
                      1e-2, 0.5, 10)
  n = int(valid.sum())
  assert n == len(want[0]) and n >= 5
  np.testing.assert_allclose(boxes[:n], want[0], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(scores[:n], want[1], rtol=1e-5)
  np.testing.assert_array_equal(labels[:n], want[2])


def test_the_whole_network_runs_both_stages():
  """A small FasterRCNN: the pyramid's strides 4 to 64, A anchors a location, and each image's
  RoIs pooled from their levels of its pyramid through the box head."""
  model = FasterRCNN(num_classes=3, stage_sizes=(1, 1, 1, 1), width=8, fpn_width=16,
                     representation=32)
  images = jax.random.normal(jax.random.key(0), (2, 64, 96, 3))
  rois = jnp.array([[[4, 4, 20, 30], [10, 0, 60, 60], [0, 0, 90, 62.]]] * 2)
  variables = jax.eval_shape(model.init, jax.random.key(1), images, rois)
  rpn, (logits, deltas) = jax.eval_shape(model.apply, variables, images, rois)
  assert [o.shape for o, _ in rpn] == [(2, 64 // s, 96 // s, 3) for s in (4, 8, 16, 32)] + [
      (2, 1, 2, 3)]
  assert logits.shape == (2, 3, 4) and deltas.shape == (2, 3, 4, 4)
  assert set(variables) == {"params", "batch_stats"}


def test_from_torchvision_gives_torchvisions_pyramid_heads_and_detections():
  """torchvision's fasterrcnn_resnet50_fpn with random weights, in evaluation (3 classes; 100
  anchors a level before NMS, 50 proposals, 20 detections): its Python code, with reference
  NMS and RoIAlign kernels, against the converted model through torchvision's anchors,
  rpn_proposals, the box head and detections, on the same normalised image. With random
  BatchNorm statistics too, the same P2-P6, RPN objectness and deltas, and box head outputs on
  the same pooled RoIs; the same final boxes (to 1e-3 pixels), labels and scores."""
  import torch
  torchvision = torchvision_detection()

  def reference(seed: int, statistics: bool):
    torch.manual_seed(seed)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=4, min_size=64, max_size=96,
        rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
        box_detections_per_img=20).eval()
    with torch.no_grad():
      for module in model.modules():
        if statistics and isinstance(module, torch.nn.BatchNorm2d):
          module.running_mean.normal_(0, 0.2)
          module.running_var.uniform_(0.5, 2.0)
          module.weight.add_(0.2 * torch.randn_like(module.weight))
          module.bias.normal_(0, 0.1)
    return model

  # Random BatchNorm statistics for the layers; the final detections, whose NMS decisions turn
  # on IoUs near the threshold, on a model without them, whose boxes sit far from any tie.
  reference, plain = reference(0, statistics=True), reference(1, statistics=False)
  image, pooled = torch.rand(3, 64, 96), torch.randn(5, 256, 7, 7)
  normalised = reference.transform.normalize(image)[None]
  with torch.no_grad():
    want = plain([image])[0]
    features = list(reference.backbone(normalised).values())
    objectness, deltas = reference.rpn.head(features)
    head_logits, head_deltas = reference.roi_heads.box_predictor(
        reference.roi_heads.box_head(pooled))
  model, variables = from_torchvision(reference.state_dict())
  assert model.num_classes == 3
  grids = [(64 // s, 96 // s) for s in (4, 8, 16, 32)] + [(1, 2)]
  anchors = [boxes_lib.anchors([g], [(64 // g[0], 96 // g[1])], [[size]], [(0.5, 1.0, 2.0)])
             for g, size in zip(grids, (32, 64, 128, 256, 512))]

  @jax.jit
  def run(variables, x, pooled):
    pyramid = model.apply(variables, x, method=FasterRCNN.pyramid)
    rpn = model.apply(variables, pyramid, method=FasterRCNN.rpn)
    proposals, _, valid = rpn_proposals([o[0] for o, _ in rpn], [d[0] for _, d in rpn],
                                        anchors, (64, 96), pre_nms_top_n=100,
                                        post_nms_top_n=50)
    logits, deltas = model.apply(variables, pyramid, proposals[None],
                                 method=FasterRCNN.box_head)
    head = model.apply(variables, pooled, method=lambda m, r: m.predictor(m.mlp_head(r)))
    return pyramid, rpn, head, detections(logits[0], deltas[0], proposals, valid, (64, 96),
                                          max_detections=20)

  channels_last = lambda t: np.asarray(t.numpy()).transpose(0, 2, 3, 1)  # noqa: E731
  x, rois = jnp.asarray(channels_last(normalised)), jnp.asarray(channels_last(pooled))
  pyramid, rpn, head, _ = run(variables, x, rois)
  found = run(from_torchvision(plain.state_dict())[1], x, rois)[-1]
  for ours, theirs in zip(pyramid, features, strict=True):
    np.testing.assert_allclose(ours, channels_last(theirs),
                               atol=1e-4 * np.abs(theirs.numpy()).max())
  for (o, d), to, td in zip(rpn, objectness, deltas, strict=True):
    np.testing.assert_allclose(o, channels_last(to), atol=1e-4 * np.abs(to.numpy()).max())
    b, _, h, w = td.shape
    np.testing.assert_allclose(d, td.numpy().reshape(b, 3, 4, h, w).transpose(0, 3, 4, 1, 2),
                               atol=1e-4 * np.abs(td.numpy()).max())
  np.testing.assert_allclose(head[0], head_logits.numpy(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(head[1], head_deltas.numpy().reshape(5, 4, 4), rtol=1e-4,
                             atol=1e-5)
  boxes, scores, labels, kept = found
  n = int(kept.sum())
  assert n == len(want["boxes"]) and n > 5
  np.testing.assert_allclose(boxes[:n], want["boxes"].numpy(), atol=1e-3)
  np.testing.assert_array_equal(labels[:n] + 1, want["labels"].numpy())
  np.testing.assert_allclose(scores[:n], want["scores"].numpy(), rtol=1e-4, atol=1e-6)
