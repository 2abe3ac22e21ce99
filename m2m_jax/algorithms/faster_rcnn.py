"""Faster R-CNN: a two-stage detector (:mod:`m2m_jax.models.faster_rcnn`) trained end to end,
torchvision's recipe with static shapes.

A training step, for every image of the batch at once (``vmap``), with the settings of
``config.detector`` (torchvision's names and defaults):

1. The backbone and FPN map the normalised image to P2-P6; the RPN head gives each anchor
   (:func:`m2m_jax.ops.boxes.anchors`, ``anchor_sizes`` per level x ``aspect_ratios``) an
   objectness logit and box deltas.
2. RPN loss: the anchors are labelled against the ground truth (IoU >= ``rpn_fg_iou_thresh``
   object, < ``rpn_bg_iou_thresh`` background), ``rpn_batch_size_per_image`` of them sampled with
   at most ``rpn_positive_fraction`` objects, and scored by binary cross-entropy and smooth L1
   (:mod:`m2m_jax.ops.detection`).
3. Proposals: the ``rpn_pre_nms_top_n_train`` best anchors a level decoded, NMS at
   ``rpn_nms_thresh``, the best ``rpn_post_nms_top_n_train`` kept, the gradient stopped
   (:func:`~m2m_jax.models.faster_rcnn.rpn_proposals`).
4. Box-head loss: the proposals and the true boxes labelled (IoU >= ``box_fg_iou_thresh``: the
   box's class, else background), ``box_batch_size_per_image`` sampled with at most
   ``box_positive_fraction`` objects, pooled by multi-scale RoIAlign, classified and refined;
   cross-entropy and smooth L1 on the true class's deltas.

The loss is the sum of the four terms, each a sum over the batch's sampled candidates over
their number. Evaluation runs the test-time proposal counts and
:func:`~m2m_jax.models.faster_rcnn.detections` (score > ``box_score_thresh``, per-class NMS at
``box_nms_thresh``, ``box_detections_per_img`` kept), and ``summarize`` scores them over the
whole split with :func:`m2m_jax.ops.detection_metrics.mean_average_precision`: ``map``
(COCO's, IoU .50:.95), ``map50``, ``map75``, ``mar100`` and VOC's all-point ``voc_ap50``.

Data: ``x`` (B, H, W, 3) images in [0, 1] (H and W multiples of 32), ``boxes`` (B, M, 4) as
tfds lays them, (y0, x0, y1, x1) relative to the image, ``boxes_mask`` (B, M), and
``labels`` (B, M) in 0 .. K - 1. Inside, boxes are (x0, y0, x1, y1) pixels, the project's
convention. Images are normalised by ImageNet's mean and deviation, as torchvision does, so
that its converted weights (``config.pretrained``, a path to a ``state_dict`` saved with
``torch.save``) see what they were trained on.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.patches import Rectangle

from m2m_jax import report
from m2m_jax.algorithms import nets
from m2m_jax.data import transforms
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.models import faster_rcnn as frcnn
from m2m_jax.ops import boxes as boxes_lib
from m2m_jax.ops import detection, detection_metrics, keys, optim

SCHEDULED = True
TAKES_TRANSFORMS = True
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_FIGURE_IMAGES = 8
LEVELS = 5  # P2 .. P6


def detector_config(**overrides) -> ml_collections.ConfigDict:
  """``config.detector``: torchvision's ``FasterRCNN`` keyword arguments and defaults (anchor
  sizes (32, 64, 128, 256, 512) for 800-pixel images; scale them with the images)."""
  return ml_collections.ConfigDict({
      "anchor_sizes": (32, 64, 128, 256, 512), "aspect_ratios": (0.5, 1.0, 2.0),
      "rpn_pre_nms_top_n_train": 2000, "rpn_pre_nms_top_n_test": 1000,
      "rpn_post_nms_top_n_train": 2000, "rpn_post_nms_top_n_test": 1000,
      "rpn_nms_thresh": 0.7, "rpn_fg_iou_thresh": 0.7, "rpn_bg_iou_thresh": 0.3,
      "rpn_batch_size_per_image": 256, "rpn_positive_fraction": 0.5,
      "box_fg_iou_thresh": 0.5, "box_batch_size_per_image": 512, "box_positive_fraction": 0.25,
      "box_score_thresh": 0.05, "box_nms_thresh": 0.5, "box_detections_per_img": 100,
      **overrides})


def validate(config: ml_collections.ConfigDict) -> None:
  if config.model_name != "faster_rcnn":
    raise ConfigError(f"the faster_rcnn algorithm trains the model 'faster_rcnn'; got "
                      f"model_name {config.model_name!r}.")
  d = config.detector
  if len(d.anchor_sizes) != LEVELS or min(d.anchor_sizes) <= 0 or not d.aspect_ratios or min(
      d.aspect_ratios) <= 0:
    raise ConfigError(f"detector.anchor_sizes needs {LEVELS} positive sizes (P2 .. P6) and "
                      f"aspect_ratios positive ratios; got {tuple(d.anchor_sizes)} and "
                      f"{tuple(d.aspect_ratios)}.")
  for name in ("rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "rpn_positive_fraction",
               "box_fg_iou_thresh", "box_positive_fraction", "box_score_thresh",
               "box_nms_thresh"):
    if not 0 <= d[name] <= 1:
      raise ConfigError(f"detector.{name} must lie in [0, 1]; got {d[name]}.")
  if d.rpn_bg_iou_thresh > d.rpn_fg_iou_thresh:
    raise ConfigError(f"detector.rpn_bg_iou_thresh ({d.rpn_bg_iou_thresh}) must not exceed "
                      f"rpn_fg_iou_thresh ({d.rpn_fg_iou_thresh}).")
  for name in ("rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train",
               "rpn_post_nms_top_n_test", "rpn_batch_size_per_image", "box_batch_size_per_image",
               "box_detections_per_img"):
    if int(d[name]) < 1:
      raise ConfigError(f"detector.{name} must be >= 1; got {d[name]}.")


def _check_batch(config: ml_collections.ConfigDict, batch: dict) -> None:
  found = {k: tuple(np.shape(v)) for k, v in batch.items()}
  if not {"x", "boxes", "boxes_mask", "labels"} <= set(batch):
    raise DataError(f"faster_rcnn trains on images with boxes, {{'x': (B, H, W, 3), 'boxes': "
                    f"(B, M, 4), 'boxes_mask': (B, M), 'labels': (B, M)}}; dataset "
                    f"{config.dataset!r} gives {found}.")
  x, b = np.asarray(batch["x"]), np.asarray(batch["boxes"])
  if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1] % 32 or x.shape[2] % 32:
    raise DataError(f"faster_rcnn needs RGB images (B, H, W, 3) with H and W multiples of 32 "
                    f"(the FPN's coarsest stride); dataset {config.dataset!r} gives "
                    f"{x.shape} (resize them with config.data.image_size).")
  m = b.shape[1] if b.ndim == 3 else None
  if b.ndim != 3 or b.shape[-1] != 4 or np.shape(batch["boxes_mask"]) != (len(x), m) or (
      np.shape(batch["labels"]) != (len(x), m)):
    raise DataError(f"faster_rcnn needs boxes (B, M, 4) with boxes_mask and labels (B, M); "
                    f"dataset {config.dataset!r} gives {found}.")
  if not config.get("num_classes"):
    raise DataError(f"dataset {config.dataset!r} has no classes; faster_rcnn needs labelled "
                    "boxes.")
  valid = np.asarray(batch["boxes_mask"], bool)
  y0, x0, y1, x1 = np.moveaxis(b, -1, 0)
  boxes_lib.check_boxes(np.stack([x0, y0, x1, y1], -1), valid, nonnegative=True,
                        name=f"dataset {config.dataset!r}'s relative (x0, y0, x1, y1) boxes")
  labels = np.asarray(batch["labels"])[valid]
  bad = labels[(labels < 0) | (labels >= config.num_classes)]
  if bad.size:
    raise DataError(f"dataset {config.dataset!r} labels a box {bad[0]}, but its "
                    f"{config.num_classes} classes are 0 .. {config.num_classes - 1}.")


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> nets.State:
  """The detector (``config.model``: :class:`~m2m_jax.models.faster_rcnn.FasterRCNN`'s
  arguments) initialised on the first batch, or converted from torchvision's weights at
  ``config.pretrained``, and the optimizer."""
  _check_batch(config, batch)
  if config.get("pretrained"):
    model, variables = _pretrained(config)
  else:
    model = nets.build_model(config, num_classes=config.num_classes,
                             num_anchors=len(config.detector.aspect_ratios))
    x = jnp.asarray(batch["x"][:1])
    variables = nets.init_variables(model, rng, x, jnp.zeros((1, 1, 4)))
  return nets.State.create(apply_fn=model.apply, params=variables["params"],
                           tx=optim.optimizer(config),
                           batch_stats=variables.get("batch_stats", {}))


def _pretrained(config: ml_collections.ConfigDict) -> tuple[frcnn.FasterRCNN, dict]:
  """torchvision's weights from ``config.pretrained``, their predictor replaced by a new one of
  the dataset's classes when the counts differ (fine-tuning, as the original did)."""
  import torch  # an optional dependency: only reading a PyTorch checkpoint needs it
  state_dict = torch.load(config.pretrained, map_location="cpu", weights_only=True)
  model, variables = frcnn.from_torchvision(state_dict, dtype=jnp.dtype(config.dtype))
  if model.num_classes != config.num_classes:
    model = model.clone(num_classes=config.num_classes)
    predictor = frcnn.FastRCNNPredictor(config.num_classes, dtype=model.dtype)
    variables["params"]["predictor"] = predictor.init(
        jax.random.key(config.seed), jnp.zeros((1, model.representation)))["params"]
  if model.num_anchors != len(config.detector.aspect_ratios):
    raise ConfigError(f"the weights at {config.pretrained!r} predict {model.num_anchors} anchors "
                      f"a location; detector.aspect_ratios gives "
                      f"{len(config.detector.aspect_ratios)}.")
  return model, variables


def _normalised(x: jax.Array) -> jax.Array:
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def ground_truth(batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The batch's boxes as (x0, y0, x1, y1) pixels (B, M, 4), labels (B, M) and mask (B, M)."""
  h, w = batch["x"].shape[1:3]
  y0, x0, y1, x1 = jnp.moveaxis(batch["boxes"].astype(jnp.float32), -1, 0)
  pixels = jnp.stack([x0 * w, y0 * h, x1 * w, y1 * h], axis=-1)
  return pixels, batch["labels"].astype(jnp.int32), batch["boxes_mask"].astype(bool)


def level_anchors(config: ml_collections.ConfigDict, image_size: tuple[int, int],
                  feature_sizes: list[tuple[int, int]]) -> list[jax.Array]:
  """Each pyramid level's anchors (H_l W_l A, 4), in the RPN head's order, for images of
  ``image_size`` (height, width) and levels of ``feature_sizes`` (H_l, W_l); a level's stride
  is ``image_size // feature_size`` per axis, as torchvision's ``AnchorGenerator`` takes it."""
  d, (h, w) = config.detector, image_size
  return [boxes_lib.anchors([(fh, fw)], [(h // fh, w // fw)], [(size,)],
                            [tuple(d.aspect_ratios)])
          for (fh, fw), size in zip(feature_sizes, d.anchor_sizes, strict=True)]


def _anchors(config, image_size, levels) -> list[jax.Array]:
  return level_anchors(config, image_size, [o.shape[1:3] for o, _ in levels])


def _proposals(config, levels, anchors, image_size, train: bool):
  """Per image (vmapped) proposals (B, P, 4) and their mask (B, P)."""
  d, phase = config.detector, "train" if train else "test"

  def one(objectness, deltas):
    boxes, _, valid = frcnn.rpn_proposals(objectness, deltas, anchors, image_size,
                                          d[f"rpn_pre_nms_top_n_{phase}"],
                                          d[f"rpn_post_nms_top_n_{phase}"], d.rpn_nms_thresh)
    return boxes, valid

  return jax.vmap(one)([o for o, _ in levels], [dl for _, dl in levels])


def _losses(module, config, x, gt_boxes, gt_labels, gt_valid, rng):
  """The four loss terms of a batch (each a sum over the sampled candidates over their count)
  and what the step logs."""
  d, image_size = config.detector, x.shape[1:3]
  pyramid = module.pyramid(_normalised(x))
  levels = module.rpn(pyramid)
  anchors = _anchors(config, image_size, levels)
  all_anchors = jnp.concatenate(anchors)
  rpn_keys, head_keys = jax.random.split(rng, (2, x.shape[0]))

  def rpn_terms(objectness, deltas, boxes, valid, key):
    labels, targets = detection.rpn_targets(all_anchors, boxes, valid, d.rpn_fg_iou_thresh,
                                            d.rpn_bg_iou_thresh)
    sampled, _ = boxes_lib.sample_balanced(key, labels, d.rpn_batch_size_per_image,
                                           d.rpn_positive_fraction)
    return detection.rpn_loss_terms(objectness, deltas, labels, targets, sampled)

  objectness = jnp.concatenate([o.reshape(o.shape[0], -1) for o, _ in levels], 1)  # (B, N)
  deltas = jnp.concatenate([dl.reshape(dl.shape[0], -1, 4) for _, dl in levels], 1)  # (B, N, 4)
  rpn = jax.vmap(rpn_terms)(objectness.astype(jnp.float32), deltas.astype(jnp.float32),
                            gt_boxes, gt_valid, rpn_keys)
  proposals, valid = _proposals(config, levels, anchors, image_size, train=True)
  s = d.box_batch_size_per_image

  def head_sample(proposals, valid, boxes, labels, gt_valid, key):
    candidates, _, labels, targets = detection.head_targets(proposals, valid, boxes, labels,
                                                            gt_valid, d.box_fg_iou_thresh)
    sampled, _ = boxes_lib.sample_balanced(key, labels, s, d.box_positive_fraction)
    take = jnp.argsort(~sampled, stable=True)[:s]  # the sampled first, then unsampled filler
    return candidates[take], labels[take], targets[take], sampled[take]

  rois, labels, targets, sampled = jax.vmap(head_sample)(proposals, valid, gt_boxes, gt_labels,
                                                         gt_valid, head_keys)
  logits, deltas = module.box_head(pyramid, jax.lax.stop_gradient(rois))
  head = jax.vmap(detection.head_loss_terms)(logits.astype(jnp.float32),
                                             deltas.astype(jnp.float32), labels, targets, sampled)
  rpn_count, head_count = jnp.maximum(rpn["count"].sum(), 1), jnp.maximum(head["count"].sum(), 1)
  terms = {"rpn_objectness": rpn["objectness"].sum() / rpn_count,
           "rpn_box": rpn["box"].sum() / rpn_count,
           "classifier": head["classifier"].sum() / head_count,
           "box": head["box"].sum() / head_count}
  positives = jnp.sum(sampled & (labels > 0)) / x.shape[0]
  return terms, {"proposals": valid.sum() / x.shape[0], "head_positives": positives}


def train_step(config: ml_collections.ConfigDict, state: nets.State, batch: dict,
               rng: jax.Array) -> tuple[nets.State, dict]:
  """One optimizer step on the sum of the RPN's and the box head's losses over ``batch``."""
  gt = ground_truth(batch)
  key = jax.random.fold_in(rng, keys.STEP_KEY_OFFSET)

  def loss_fn(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    terms, logged = state.apply_fn(variables, config, batch["x"], *gt, key, method=_losses)
    return sum(terms.values()), {**terms, **logged}

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return state.apply_gradients(grads=grads), {"loss": loss, **metrics}


def _detect(module, config, x):
  """Detections (boxes, scores, labels, valid), each (B, D, ...), and the proposals
  (B, P, 4) with their mask, for images ``x`` (B, H, W, 3) in [0, 1]."""
  d, image_size = config.detector, x.shape[1:3]
  pyramid = module.pyramid(_normalised(x))
  levels = module.rpn(pyramid)
  proposals, valid = _proposals(config, levels, _anchors(config, image_size, levels), image_size,
                                train=False)
  logits, deltas = module.box_head(pyramid, proposals)

  def one(logits, deltas, proposals, valid):
    return frcnn.detections(logits.astype(jnp.float32), deltas.astype(jnp.float32), proposals,
                            valid, image_size, d.box_score_thresh, d.box_nms_thresh,
                            d.box_detections_per_img)

  return jax.vmap(one)(logits, deltas, proposals, valid), (proposals, valid)


def _detections_and_proposals(config: ml_collections.ConfigDict, state: nets.State,
                               x: jax.Array) -> tuple[tuple, tuple]:
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  return state.apply_fn(variables, config, x, method=_detect)


def detect(config: ml_collections.ConfigDict, state: nets.State, x: jax.Array):
  """``(boxes (B, D, 4) as (x0, y0, x1, y1) pixels, scores (B, D), labels (B, D) in 0 .. K - 1,
  valid (B, D))`` for images ``x`` (B, H, W, 3) in [0, 1], by descending score."""
  return _detections_and_proposals(config, state, x)[0]


def eval_step(config: ml_collections.ConfigDict, state: nets.State, batch: dict) -> dict:
  """Per image: its detections (``boxes`` (B, D, 4) pixels, ``scores``, ``labels``, ``valid``),
  its ground truth (``gt_boxes``, ``gt_labels``, ``gt_valid``), for ``summarize``, and the
  RPN's ``proposals`` (B, P, 4) with ``proposals_valid``, for a figure."""
  (boxes, scores, labels, valid), (proposals, proposals_valid) = _detections_and_proposals(
      config, state, batch["x"])
  gt_boxes, gt_labels, gt_valid = ground_truth(batch)
  return {"boxes": boxes, "scores": scores, "labels": labels, "valid": valid,
          "gt_boxes": gt_boxes, "gt_labels": gt_labels, "gt_valid": gt_valid,
          "proposals": proposals, "proposals_valid": proposals_valid}


def _metric_args(outputs: dict) -> tuple:
  return tuple(np.asarray(outputs[k]) for k in ("boxes", "scores", "labels", "valid", "gt_boxes",
                                                 "gt_labels", "gt_valid"))


def summarize(config: ml_collections.ConfigDict, outputs: dict) -> dict:
  """COCO's ``map``, ``map50``, ``map75``, ``mar100`` and VOC's ``voc_ap50`` over the split."""
  return detection_metrics.mean_average_precision(*_metric_args(outputs),
                                                  num_classes=config.num_classes)


def plot_detections(images: np.ndarray, detected: tuple, truth: tuple, class_names, path: str,
                    title: str = "", min_score: float = 0.5) -> None:
  """The images with their true boxes (green) and detections scoring >= ``min_score`` (red,
  labelled with class and score). ``detected`` = (boxes (N, D, 4) pixels, scores, labels,
  valid); ``truth`` = (boxes (N, M, 4) pixels, labels, valid)."""
  n = len(images)
  cols = min(n, 4)
  rows = -(-n // cols)
  fig, axes = report.figure(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  names = list(class_names) if class_names is not None else None
  for i, ax in enumerate(axes.ravel()[:n]):
    ax.imshow(np.clip(images[i], 0, 1))
    for box, valid in zip(truth[0][i], truth[2][i]):
      if valid:
        _draw_box(ax, box, "lime")
    for box, score, label, valid in zip(*(t[i] for t in detected)):
      if valid and score >= min_score:
        _draw_box(ax, box, "red")
        name = names[label] if names else str(label)
        ax.text(box[0], box[1], f"{name} {score:.2f}", color="white", fontsize=6,
                va="bottom", bbox={"facecolor": "red", "alpha": 0.6, "pad": 0.5, "lw": 0})
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _draw_box(ax, box, color: str) -> None:
  x0, y0, x1, y1 = box
  ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color,
                                    linewidth=1.2))


def plot_precision_recall(outputs: dict, num_classes: int, class_names, path: str) -> None:
  """Each class's precision-recall curve at IoU 0.5 (raw and its envelope), AP in the legend."""
  args = _metric_args(outputs)
  voc = detection_metrics.voc_average_precision(*args, num_classes)
  fig, ax = report.figure(1, 1, figsize=(5, 4))
  for c in range(num_classes):
    if not np.any((args[5] == c) & args[6]):
      continue
    recall, precision, _ = detection_metrics.precision_recall(*args, num_classes, c)
    name = class_names[c] if class_names is not None else str(c)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    line, = ax.plot(recall, envelope, label=f"{name}: AP50 {voc[c]:.3f}")
    ax.plot(recall, precision, color=line.get_color(), alpha=0.3, lw=0.8)
  ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01),
         title="precision-recall at IoU 0.5 (faint: raw)")
  ax.legend(fontsize=8, loc="lower left")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_proposals(image: np.ndarray, proposals: np.ndarray, truth: np.ndarray, path: str,
                   count: int = 50) -> None:
  """One image with its ``count`` best RPN proposals (orange) and true boxes (green)."""
  fig, ax = report.figure(1, 1, figsize=(4, 4))
  ax.imshow(np.clip(image, 0, 1))
  ax.axis("off")
  for box in proposals[:count]:
    _draw_box(ax, box, "orange")
  for box in truth:
    _draw_box(ax, box, "lime")
  ax.set_title(f"the RPN's {min(count, len(proposals))} best proposals", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def figures(config: ml_collections.ConfigDict, state: nets.State, outputs: dict, dataset,
            outdir: str) -> None:
  """``detections.png`` (test images with true and detected boxes), ``precision_recall.png``
  (a curve per class) and ``proposals.png`` (the RPN's best proposals on a test image)."""
  n = min(NUM_FIGURE_IMAGES, len(outputs["boxes"]))
  x = dataset.test[np.arange(n)]["x"]
  prepare = transforms.parse(config.eval_transforms, "eval_transforms")
  if prepare:  # the images as evaluated
    x = np.asarray(jax.jit(lambda x: prepare(jax.random.key(0), {"x": x})["x"])(x))
  detected = tuple(np.asarray(outputs[k][:n]) for k in ("boxes", "scores", "labels", "valid"))
  truth = tuple(np.asarray(outputs[k][:n]) for k in ("gt_boxes", "gt_labels", "gt_valid"))
  summary = summarize(config, outputs)
  names = dataset.class_names
  plot_detections(x, detected, truth, names, os.path.join(outdir, "detections.png"),
                  f"{dataset.name}: mAP@50 {summary['map50']:.3f}, mAP {summary['map']:.3f}")
  if np.any(outputs["gt_valid"]):
    plot_precision_recall(outputs, config.num_classes, names,
                          os.path.join(outdir, "precision_recall.png"))
  first = outputs["proposals"][0][outputs["proposals_valid"][0]]
  plot_proposals(x[0], first, truth[0][0][truth[2][0]], os.path.join(outdir, "proposals.png"))
