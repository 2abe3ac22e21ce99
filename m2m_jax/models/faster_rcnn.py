"""Faster R-CNN's networks (Ren et al., 2015; with the feature pyramid of Lin et al., 2017), in
torchvision's ``fasterrcnn_resnet50_fpn`` layout, so that its weights convert one to one.

- :class:`FPN`: the feature pyramid over the backbone's stages C2..C5: a 1x1 lateral
  convolution per stage to ``width`` channels, a top-down pass adding each coarser level,
  upsampled by nearest neighbour, to the lateral below it, a 3x3 convolution per level, and
  P6 = P5 subsampled by 2 (torchvision's ``LastLevelMaxPool``, a 1x1 max pool of stride 2);
  every P_l has ``width`` channels and stride 2^l.
- :class:`RPNHead`: shared over the levels, a 3x3 convolution + ReLU, then per location and
  anchor an objectness logit (1x1 convolution, A outputs) and the four box deltas (4A).
- :class:`TwoMLPHead`: a pooled RoI (7 x 7 x width) flattened, then two fully connected
  layers of ``representation`` units with ReLU (fc6, fc7).
- :class:`FastRCNNPredictor`: per RoI, class logits over ``num_classes`` + background (index 0)
  and class-specific box deltas, 4 per class.
- :func:`rpn_proposals` and :func:`detections`: the two stages' post-processing, from the heads'
  outputs to boxes, with a fixed number of outputs and a mask of the real ones.
- :class:`FasterRCNN`: all of them over a ResNet backbone, and :func:`from_torchvision`, which
  converts ``fasterrcnn_resnet50_fpn``'s weights.

Tensors are channels-last, (B, H, W, C). The parameter counts equal torchvision's layer for
layer (``tests/test_faster_rcnn.py``).
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models.layers import Conv
from m2m_jax.models.resnet import ResNetBackbone
from m2m_jax.ops import boxes as boxes_lib
from m2m_jax.ops.roi_align import multiscale_roi_align

# torchvision's initialisations: the FPN's convolutions kaiming_uniform_(a=1), uniform with
# bound sqrt(3 / fan_in), the RPN head's normal(std=0.01), their biases 0 (the box head keeps
# the framework's default initialisation, in torchvision as here).
_FPN_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
_RPN_INIT = nn.initializers.normal(0.01)


class FPN(nn.Module):
  """Feature pyramid: ``features`` [C2, ..., C5] (B, H / 2^l, W / 2^l, C_l) -> [P2, ..., P6],
  each (B, H / 2^l, W / 2^l, width); with fewer stages, the same from the first one given.

  Attributes:
    width: channels of every pyramid level (256 in torchvision).
    extra_pool: add P6 = P5[:, ::2, ::2] (torchvision's LastLevelMaxPool).
    conv_impl: the convolutions' implementation (:class:`m2m_jax.models.layers.Conv`).
  """

  width: int = 256
  extra_pool: bool = True
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> list[jax.Array]:
    if not features or any(f.ndim != 4 for f in features):
      raise DataError(f"FPN takes the backbone's stages as (B, H, W, C) maps; got shapes "
                      f"{[tuple(f.shape) for f in features]}.")
    for fine, coarse in zip(features, features[1:]):
      if (fine.shape[1] != 2 * coarse.shape[1]) or (fine.shape[2] != 2 * coarse.shape[2]):
        raise DataError(f"FPN needs each stage at half the resolution of the one before; got "
                        f"{[tuple(f.shape[1:3]) for f in features]}.")
    conv = lambda k, name: Conv(self.width, (k, k), padding="SAME", dtype=self.dtype,
                                kernel_init=_FPN_INIT, impl=self.conv_impl, name=name)
    laterals = [conv(1, f"inner{i}")(f) for i, f in enumerate(features)]
    top_down = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
      above = top_down[0]
      top_down.insert(0, lateral + jnp.repeat(jnp.repeat(above, 2, axis=1), 2, axis=2))
    pyramid = [conv(3, f"layer{i}")(t) for i, t in enumerate(top_down)]
    if self.extra_pool:
      pyramid.append(pyramid[-1][:, ::2, ::2])
    return pyramid


class RPNHead(nn.Module):
  """Region proposal head, shared over the levels: each (B, H, W, C) map -> objectness logits
  (B, H, W, A) and box deltas (B, H, W, A, 4), anchor a at location (h, w) in torchvision's
  order (:func:`m2m_jax.ops.boxes.anchors`).

  Attributes:
    num_anchors: A, the anchors a location (3 aspect ratios x 1 size a level in torchvision).
  """

  num_anchors: int = 3
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, pyramid: Sequence[jax.Array]) -> list[tuple[jax.Array, jax.Array]]:
    width = pyramid[0].shape[-1]
    conv = functools.partial(Conv, dtype=self.dtype, kernel_init=_RPN_INIT, impl=self.conv_impl)
    shared = conv(width, (3, 3), padding="SAME", name="conv")
    logits = conv(self.num_anchors, (1, 1), name="cls_logits")
    deltas = conv(4 * self.num_anchors, (1, 1), name="bbox_pred")
    out = []
    for level in pyramid:
      h = nn.relu(shared(level))
      d = deltas(h)
      out.append((logits(h), d.reshape(*d.shape[:-1], self.num_anchors, 4)))
    return out


class TwoMLPHead(nn.Module):
  """Pooled RoIs (R, S, S, C) -> (R, representation): flatten, fc6 + ReLU, fc7 + ReLU.

  The flattening follows torchvision's (C, S, S) order, so that fc6 converts without a
  permutation of its rows; the kernel is (S S C, representation) read in that order.
  """

  representation: int = 1024
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, rois: jax.Array) -> jax.Array:
    if rois.ndim != 4:
      raise DataError(f"TwoMLPHead takes pooled RoIs (R, S, S, C); got shape "
                      f"{tuple(rois.shape)}.")
    h = jnp.transpose(rois, (0, 3, 1, 2)).reshape(rois.shape[0], -1)  # torchvision's order
    h = nn.relu(nn.Dense(self.representation, dtype=self.dtype, name="fc6")(h))
    return nn.relu(nn.Dense(self.representation, dtype=self.dtype, name="fc7")(h))


class FastRCNNPredictor(nn.Module):
  """(R, D) RoI features -> class logits (R, num_classes + 1), background at 0, and
  class-specific deltas (R, num_classes + 1, 4).

  Attributes:
    num_classes: object classes, without the background.
  """

  num_classes: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    k = self.num_classes + 1
    logits = nn.Dense(k, dtype=self.dtype, name="cls_score")(x)
    deltas = nn.Dense(4 * k, dtype=self.dtype, name="bbox_pred")(x)
    return logits, deltas.reshape(x.shape[0], k, 4)


def _filtered(boxes: jax.Array, scores: jax.Array, groups: jax.Array, valid: jax.Array,
              image_size: tuple[int, int], min_size: float, nms_threshold: float,
              max_output: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Clips (N, 4) boxes to the image, drops the narrower than ``min_size``, runs NMS within
  each group and keeps the best ``max_output``: (boxes, scores, groups, valid), each of
  length ``max_output``, by descending score."""
  height, width = image_size
  boxes = boxes_lib.clip_to_image(boxes, height, width)
  wide = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
  keep, kept = boxes_lib.batched_nms(boxes, scores, groups, nms_threshold, max_output,
                                     valid_in=valid & wide)
  return boxes[keep], scores[keep], groups[keep], kept


def rpn_proposals(objectness: Sequence[jax.Array], deltas: Sequence[jax.Array],
                  anchors: Sequence[jax.Array], image_size: tuple[int, int], pre_nms_top_n: int,
                  post_nms_top_n: int, nms_threshold: float = 0.7, min_size: float = 1e-3,
                  score_threshold: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The region proposals of one image, torchvision's ``RegionProposalNetwork.filter_proposals``
  with static shapes.

  Per level, the ``pre_nms_top_n`` anchors of highest objectness; their boxes decoded from the
  deltas (``RPN_WEIGHTS``); then over all levels: objectness through a sigmoid, boxes clipped
  to the image, those narrower than ``min_size`` or scoring below ``score_threshold`` dropped,
  NMS at ``nms_threshold`` within each level, and the best ``post_nms_top_n`` kept. Proposals
  are inputs to the second stage, not functions of the RPN's weights: the gradient stops here.

  Args:
    objectness: per level (H_l, W_l, A) logits (:class:`RPNHead`'s first output, one image).
    deltas: per level (H_l, W_l, A, 4).
    anchors: per level (H_l W_l A, 4) boxes in the same order
      (:func:`m2m_jax.ops.boxes.anchors` of that level alone).
    image_size: (height, width) in pixels, the clipping bounds.
    pre_nms_top_n, post_nms_top_n: static counts (torchvision: 2000 / 2000 in training, 1000 /
      1000 in evaluation).

  Returns:
    (boxes (P, 4), scores (P,), valid (P,) bool) with P = ``post_nms_top_n``, by descending
    score; ``valid`` is False on the padding after the real proposals.
  """
  if not len(objectness) == len(deltas) == len(anchors):
    raise DataError(f"rpn_proposals needs one objectness map, one delta map and one anchor set "
                    f"a level; got {len(objectness)}, {len(deltas)} and {len(anchors)}.")
  boxes, logits, levels = [], [], []
  for level, (o, d, a) in enumerate(zip(objectness, deltas, anchors)):
    o = jax.lax.stop_gradient(o).reshape(-1)
    if a.shape != (o.shape[0], 4):
      raise DataError(f"rpn_proposals: level {level} has {o.shape[0]} anchor logits but anchors "
                      f"of shape {tuple(a.shape)}.")
    top, idx = jax.lax.top_k(o, min(pre_nms_top_n, o.shape[0]))
    d = jax.lax.stop_gradient(d).reshape(-1, 4)[idx]
    boxes.append(boxes_lib.decode(d, a[idx], boxes_lib.RPN_WEIGHTS))
    logits.append(top)
    levels.append(jnp.full(top.shape, level, jnp.int32))
  scores = jax.nn.sigmoid(jnp.concatenate(logits))
  boxes, scores, _, valid = _filtered(jnp.concatenate(boxes), scores, jnp.concatenate(levels),
                                      scores >= score_threshold, image_size, min_size,
                                      nms_threshold, post_nms_top_n)
  return boxes, scores, valid


def detections(logits: jax.Array, deltas: jax.Array, proposals: jax.Array,
               proposals_valid: jax.Array, image_size: tuple[int, int],
               score_threshold: float = 0.05, nms_threshold: float = 0.5,
               max_detections: int = 100, min_size: float = 1e-2
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The final detections of one image, torchvision's ``RoIHeads.postprocess_detections`` with
  static shapes: every proposal's box for every object class, decoded with ``HEAD_WEIGHTS``
  and clipped, scored by the class's softmax probability; those below ``score_threshold`` or
  narrower than ``min_size`` dropped; NMS at ``nms_threshold`` within each class; the best
  ``max_detections`` kept.

  Args:
    logits: (R, K + 1) class logits of R proposals, background at 0 (:class:`FastRCNNPredictor`).
    deltas: (R, K + 1, 4) class-specific deltas.
    proposals: (R, 4) the boxes they refine; ``proposals_valid`` (R,) bool.
    image_size: (height, width) in pixels.

  Returns:
    (boxes (D, 4), scores (D,), labels (D,) int32 in 0 .. K - 1, valid (D,) bool), D =
    ``max_detections``, by descending score.
  """
  r, k1 = logits.shape
  if deltas.shape != (r, k1, 4) or proposals.shape != (r, 4):
    raise DataError(f"detections needs logits (R, K + 1), deltas (R, K + 1, 4) and proposals "
                    f"(R, 4); got {tuple(logits.shape)}, {tuple(deltas.shape)} and "
                    f"{tuple(proposals.shape)}.")
  scores = jax.nn.softmax(logits, axis=-1)[:, 1:]                      # (R, K)
  boxes = boxes_lib.decode(deltas[:, 1:], proposals[:, None], boxes_lib.HEAD_WEIGHTS)
  labels = jnp.broadcast_to(jnp.arange(k1 - 1, dtype=jnp.int32), scores.shape)
  valid = proposals_valid[:, None] & (scores > score_threshold)
  boxes, scores, labels, valid = _filtered(
      boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1), valid.reshape(-1),
      image_size, min_size, nms_threshold, max_detections)
  return boxes, scores, labels, valid


class FasterRCNN(nn.Module):
  """The networks of Faster R-CNN with an FPN, torchvision's ``fasterrcnn_resnet50_fpn`` by
  default: a ResNet backbone (PyTorch's padding), :class:`FPN`, :class:`RPNHead`, multi-scale
  RoIAlign over P2-P5, :class:`TwoMLPHead` and :class:`FastRCNNPredictor`. The two stages run
  apart (:meth:`pyramid`, :meth:`rpn`, :meth:`box_head`), since what connects them, proposals
  in evaluation and sampled proposals in training, is not a network.

  Attributes:
    num_classes: object classes, without the background.
    stage_sizes, block, width: the backbone (ResNet-50: (3, 4, 6, 3), 'bottleneck', 64).
    fpn_width: the pyramid's channels.
    num_anchors: anchors a location (aspect ratios x sizes of a level).
    representation: the box head's width.
    roi_size, sampling_ratio: RoIAlign's output (7 x 7) and its samples a bin (2).
    conv_impl: the convolutions' implementation, 'auto', 'cpu' or 'xla'
      (:class:`m2m_jax.models.layers.Conv`).
  """

  num_classes: int
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  width: int = 64
  fpn_width: int = 256
  num_anchors: int = 3
  representation: int = 1024
  roi_size: int = 7
  sampling_ratio: int = 2
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  def setup(self):
    self.backbone = ResNetBackbone(tuple(self.stage_sizes), self.block, self.width,
                                   zero_init_residual=False, dtype=self.dtype,
                                   torch_padding=True, conv_impl=self.conv_impl)
    self.fpn = FPN(self.fpn_width, dtype=self.dtype, conv_impl=self.conv_impl)
    self.rpn_head = RPNHead(self.num_anchors, dtype=self.dtype, conv_impl=self.conv_impl)
    self.mlp_head = TwoMLPHead(self.representation, dtype=self.dtype)
    self.predictor = FastRCNNPredictor(self.num_classes, dtype=self.dtype)

  def pyramid(self, images: jax.Array) -> list[jax.Array]:
    """Normalised images (B, H, W, 3), H and W multiples of 32 -> [P2, ..., P6]. The backbone's
    BatchNorm always uses its stored statistics (frozen, as torchvision's with pretrained
    weights: at two images a device batch statistics are noise)."""
    return self.fpn(self.backbone(images, train=False))

  def rpn(self, pyramid: Sequence[jax.Array]) -> list[tuple[jax.Array, jax.Array]]:
    """Per level, objectness logits (B, H_l, W_l, A) and deltas (B, H_l, W_l, A, 4)."""
    return self.rpn_head(pyramid)

  def box_head(self, pyramid: Sequence[jax.Array], rois: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    """(B, R, 4) boxes in pixels, R of each image -> class logits (B, R, K + 1) and deltas
    (B, R, K + 1, 4), each RoI pooled from its level of P2-P5 of its image."""
    b, r = rois.shape[:2]
    pooled = multiscale_roi_align(list(pyramid[:4]), rois.reshape(b * r, 4),
                                  jnp.repeat(jnp.arange(b), r), (self.roi_size, self.roi_size),
                                  FPN_SCALES, self.sampling_ratio, aligned=False)
    logits, deltas = self.predictor(self.mlp_head(pooled))
    return logits.reshape(b, r, -1), deltas.reshape(b, r, -1, 4)

  def __call__(self, images: jax.Array, rois: jax.Array):
    """Every output at once (for ``init``): the RPN's and the box head's on ``rois``."""
    pyramid = self.pyramid(images)
    return self.rpn(pyramid), self.box_head(pyramid, rois)


FPN_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)  # P2-P5's sizes over the image's


def from_torchvision(state_dict, num_classes: int | None = None,
                     dtype: jnp.dtype = jnp.float32) -> tuple[FasterRCNN, dict]:
  """torchvision's ``fasterrcnn_resnet50_fpn`` weights (its ``state_dict()``: name -> tensor or
  array) as ``(model, variables)`` of :class:`FasterRCNN`; BatchNorm (or FrozenBatchNorm)
  statistics go to ``batch_stats``. ``num_classes`` (without the background) is read from the
  predictor when None. Images go in normalised as torchvision's ``GeneralizedRCNNTransform``
  does (ImageNet mean and standard deviation), channels last.

  PyTorch -> flax: a convolution (O, I, kh, kw) becomes (kh, kw, I, O), a Linear (out, in) is
  transposed, BatchNorm's weight / bias / running_mean / running_var become scale / bias /
  mean / var.
  """
  sd = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, np.float32)
        for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  used = set()

  def get(key):
    if key not in sd:
      raise DataError(f"from_torchvision: the state dict lacks {key!r}; is it "
                      f"fasterrcnn_resnet50_fpn's?")
    used.add(key)
    return sd[key]

  conv = lambda k: get(k).transpose(2, 3, 1, 0)                       # noqa: E731
  dense = lambda k: {"kernel": get(f"{k}.weight").T, "bias": get(f"{k}.bias")}  # noqa: E731

  def bn(k):
    return ({"scale": get(f"{k}.weight"), "bias": get(f"{k}.bias")},
            {"mean": get(f"{k}.running_mean"), "var": get(f"{k}.running_var")})

  body = "backbone.body"
  params, stats = {}, {}
  params["stem_conv"] = {"kernel": conv(f"{body}.conv1.weight")}
  params["stem_bn"], stats["stem_bn"] = bn(f"{body}.bn1")
  stage_sizes = [1 + max(int(k.split(".")[3]) for k in sd if k.startswith(f"{body}.layer{i}."))
                 for i in range(1, 5)]
  for i, size in enumerate(stage_sizes):
    for j in range(size):
      prefix, name = f"{body}.layer{i + 1}.{j}", f"stage{i + 1}_block{j + 1}"
      p, s = {}, {}
      for n in range(3):
        p[f"Conv_{n}"] = {"kernel": conv(f"{prefix}.conv{n + 1}.weight")}
        p[f"BatchNorm_{n}"], s[f"BatchNorm_{n}"] = bn(f"{prefix}.bn{n + 1}")
      if f"{prefix}.downsample.0.weight" in sd:
        p["projection"] = {"kernel": conv(f"{prefix}.downsample.0.weight")}
        p["BatchNorm_3"], s["BatchNorm_3"] = bn(f"{prefix}.downsample.1")
      params[name], stats[name] = p, s
  fpn = {}
  for i in range(4):
    for ours, theirs in (("inner", "inner_blocks"), ("layer", "layer_blocks")):
      k = f"backbone.fpn.{theirs}.{i}.0"
      fpn[f"{ours}{i}"] = {"kernel": conv(f"{k}.weight"), "bias": get(f"{k}.bias")}
  rpn = {"conv": {"kernel": conv("rpn.head.conv.0.0.weight"),
                  "bias": get("rpn.head.conv.0.0.bias")},
         **{n: {"kernel": conv(f"rpn.head.{n}.weight"), "bias": get(f"rpn.head.{n}.bias")}
            for n in ("cls_logits", "bbox_pred")}}
  head = {"fc6": dense("roi_heads.box_head.fc6"), "fc7": dense("roi_heads.box_head.fc7")}
  predictor = {n: dense(f"roi_heads.box_predictor.{n}") for n in ("cls_score", "bbox_pred")}
  unused = sorted(set(sd) - used)
  if unused:
    raise DataError(f"from_torchvision found entries it does not know ({', '.join(unused[:3])}); "
                    "it converts fasterrcnn_resnet50_fpn's weights only.")
  classes = predictor["cls_score"]["bias"].shape[0] - 1
  if num_classes not in (None, classes):
    raise ConfigError(f"from_torchvision: the weights' predictor has {classes} classes, not "
                      f"{num_classes}.")
  model = FasterRCNN(classes, stage_sizes=tuple(stage_sizes),
                     fpn_width=fpn["inner0"]["bias"].shape[0],
                     num_anchors=rpn["cls_logits"]["bias"].shape[0],
                     representation=head["fc6"]["bias"].shape[0], dtype=dtype)
  variables = {"params": {"backbone": params, "fpn": fpn, "rpn_head": rpn, "mlp_head": head,
                          "predictor": predictor},
               "batch_stats": {"backbone": stats}}
  return model, variables
