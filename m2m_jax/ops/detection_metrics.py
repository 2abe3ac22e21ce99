"""Detection metrics over a whole split, on the host: COCO's mAP and AR (equal to pycocotools'
``COCOeval``) and PASCAL VOC's AP, from padded arrays of predictions and ground truth.

What it holds: :func:`coco_evaluate` (COCO's interpolated precision and recall at every IoU
threshold, recall threshold and class), :func:`voc_average_precision` (VOC's all-point AP of
each class), :func:`precision_recall` (one class's precision-recall curve, for a figure) and
:func:`mean_average_precision`, the summary a training run logs.

Inputs (every function takes the same seven arrays, numpy or jax, and ``num_classes``): N images,
each with K predictions padded by ``pred_valid`` and M ground-truth objects padded by
``gt_valid``; boxes are ``(x0, y0, x1, y1)`` pixels (:mod:`m2m_jax.ops.boxes`' convention);
labels are class ids ``0 .. num_classes - 1``, all of them object classes: there is no
background class here (a detector that predicts one drops it before calling). Nothing here is
jitted: these are metrics of a split, computed once an evaluation has gathered its outputs.

COCO, as ``COCOeval(iouType='bbox')`` with its defaults (maxDets 100, area 'all') computes it,
which its source (cocoapi's PythonAPI/pycocotools/cocoeval.py) fixes in these details:

- IoU is taken from ``(x, y, w, h)`` boxes, area ``w * h`` (no ``+ 1`` pixel), in float64, in the
  order of pycocotools' C code (``bbIou``), so the numbers agree to the last bit.
- In each (image, class) the predictions are sorted by descending score, stably (equal scores
  keep their order), and only the first ``max_detections`` are kept: COCO's maxDets caps each
  (image, class) pair, not each image.
- Matching, at each IoU threshold t: each prediction in that order takes, among the ground
  truth of its image and class not yet taken, the one of the highest IoU if that IoU is
  ``>= t``; between equal IoUs the one listed last wins (COCOeval's loop keeps a later one on
  ``>=``). A prediction that takes nothing is a false positive. An IoU equal to a threshold
  matches: IoU 0.6 counts at 0.5, 0.55 and 0.6 (the thresholds are :data:`IOU_THRESHOLDS`' float64
  values; the ninth is 0.8999999999999999).
- Per class, the predictions of all images are ranked by descending score (equal scores: the
  earlier image first, then the earlier prediction), precision ``tp / (tp + fp + eps)`` is made
  non-increasing from the right, and read at the 101 recalls ``0, 0.01, .., 1`` (the first rank
  whose recall reaches each; 0 past the last recall reached).
- A class without ground truth in the whole split has precision and recall -1 and is left out
  of every mean; with no ground truth at all the means are -1, as ``COCOeval`` prints.
- Not needed here, so left out: crowd regions (``iscrowd``; no box here is one), the small,
  medium and large area ranges, and maxDets 1 and 10. Area 'all' is COCO's range
  ``[0, 1e5 ** 2]`` pixels^2, which no box in pixels leaves.
"""

from typing import NamedTuple

import numpy as np

from m2m_jax.errors import DataError
from m2m_jax.ops.boxes import check_boxes

# COCOeval's Params.setDetParams, computed by the same expressions (so 0.75 is exactly its 0.75).
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
MAX_DETECTIONS = 100
ELEVEN_RECALLS = np.arange(0., 1.1, 0.1)  # VOC2007's, as its devkit and py-faster-rcnn write them


class CocoEvaluation(NamedTuple):
  """What ``COCOeval.accumulate`` holds for area 'all' at ``max_detections``, for T IoU
  thresholds, R recall thresholds and C classes.

  Attributes:
    precision: (T, R, C) interpolated precision; -1 for a class without ground truth.
    recall: (T, C) recall with every kept prediction; -1 for a class without ground truth.
    num_gt: (C,) ints, the ground-truth objects of each class.
  """
  precision: np.ndarray
  recall: np.ndarray
  num_gt: np.ndarray

  @property
  def ap_per_class(self) -> np.ndarray:
    """(C,) each class's AP averaged over the IoU thresholds; -1 without ground truth."""
    return np.where(self.num_gt > 0, self.precision.mean((0, 1)), -1.)

  @property
  def ap50_per_class(self) -> np.ndarray:
    """(C,) each class's AP at IoU 0.5 (the first threshold); -1 without ground truth."""
    return np.where(self.num_gt > 0, self.precision[0].mean(0), -1.)


class _Split(NamedTuple):
  """Checked inputs: float64 boxes and scores, int64 labels, bool masks; padded entries zeroed."""
  boxes: np.ndarray      # (N, K, 4)
  scores: np.ndarray     # (N, K)
  labels: np.ndarray     # (N, K)
  valid: np.ndarray      # (N, K)
  gt_boxes: np.ndarray   # (N, M, 4)
  gt_labels: np.ndarray  # (N, M)
  gt_valid: np.ndarray   # (N, M)
  num_classes: int


class _Ranked(NamedTuple):
  """The kept predictions, grouped by class (ascending) and ranked within each class."""
  labels: np.ndarray  # (D,) class of each
  scores: np.ndarray  # (D,)
  tp: np.ndarray      # (D, T) bool: a true positive at each IoU threshold
  num_gt: np.ndarray  # (C,)


# --- checks -----------------------------------------------------------------------------------

def _check_int(fn: str, name: str, value, low: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise DataError(f"{fn}: {name} must be a Python int >= {low}; got {value!r}.")


def _check_labels(fn: str, name: str, labels: np.ndarray, valid: np.ndarray,
                  num_classes: int) -> np.ndarray:
  """int64 labels, 0 where not valid; refuses a non-integer dtype or a label out of range."""
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{fn}: {name} must hold integer class ids; got dtype {labels.dtype}.")
  labels = np.where(valid, labels, 0).astype(np.int64)
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    where = ", ".join(str(int(j)) for j in np.unravel_index(np.argmax(bad), labels.shape))
    raise DataError(f"{fn}: {name}[{where}] = {labels[bad][0]} is not a class id in "
                    f"0 .. {num_classes - 1} (num_classes = {num_classes}; no background class).")
  return labels


def _prepare(fn: str, pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels,
             gt_valid, num_classes) -> _Split:
  """Checks the seven arrays against each other and their values; raises one DataError."""
  _check_int(fn, "num_classes", num_classes)
  boxes, gt = np.asarray(pred_boxes), np.asarray(gt_boxes)
  if boxes.ndim != 3 or boxes.shape[-1] != 4:
    raise DataError(f"{fn}: pred_boxes must be (N, K, 4) boxes (x0, y0, x1, y1); got shape "
                    f"{boxes.shape}.")
  if gt.ndim != 3 or gt.shape[-1] != 4 or gt.shape[0] != boxes.shape[0]:
    raise DataError(f"{fn}: gt_boxes must be (N, M, 4) boxes with N = {boxes.shape[0]} images "
                    f"as in pred_boxes; got shape {gt.shape}.")
  arrays = {}
  for name, x, shape in [("pred_scores", pred_scores, boxes.shape[:2]),
                         ("pred_labels", pred_labels, boxes.shape[:2]),
                         ("pred_valid", pred_valid, boxes.shape[:2]),
                         ("gt_labels", gt_labels, gt.shape[:2]),
                         ("gt_valid", gt_valid, gt.shape[:2])]:
    arrays[name] = np.asarray(x)
    if arrays[name].shape != shape:
      raise DataError(f"{fn}: {name} must have shape {shape}, one entry a box of "
                      f"{'pred_boxes' if name.startswith('pred') else 'gt_boxes'}; got "
                      f"{arrays[name].shape}.")
  valid, gt_valid = arrays["pred_valid"].astype(bool), arrays["gt_valid"].astype(bool)
  try:
    check_boxes(boxes, valid, name="pred_boxes")
    check_boxes(gt, gt_valid, name="gt_boxes")
  except DataError as e:  # the same sentence, naming the function called
    raise DataError(f"{fn}: {str(e).removeprefix('check_boxes: ')}") from None
  scores = np.where(valid, arrays["pred_scores"], 0).astype(np.float64)
  if np.isnan(scores).any():
    where = ", ".join(str(int(j)) for j in np.unravel_index(np.argmax(np.isnan(scores)),
                                                             scores.shape))
    raise DataError(f"{fn}: pred_scores[{where}] is NaN; scores must be numbers to rank by.")
  return _Split(np.where(valid[..., None], boxes, 0).astype(np.float64), scores,
                _check_labels(fn, "pred_labels", arrays["pred_labels"], valid, num_classes),
                valid, np.where(gt_valid[..., None], gt, 0).astype(np.float64),
                _check_labels(fn, "gt_labels", arrays["gt_labels"], gt_valid, num_classes),
                gt_valid, int(num_classes))


# --- matching ---------------------------------------------------------------------------------

def _iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """IoU of (n, 4) predictions with (n, M, 4) ground truth -> (n, M), float64, computed as
  pycocotools' ``bbIou`` does from ``(x, y, w, h)``: 0 unless the overlap's width and height
  are both > 0, else ``i / (area_det + area_gt - i)``."""
  dx, dy = det[:, None, 0], det[:, None, 1]
  dw, dh = det[:, None, 2] - dx, det[:, None, 3] - dy
  gx, gy = gt[..., 0], gt[..., 1]
  gw, gh = gt[..., 2] - gx, gt[..., 3] - gy
  w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
  h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
  overlap = (w > 0) & (h > 0)
  inter = np.where(overlap, w * h, 0.)
  union = dw * dh + gw * gh - inter
  return np.divide(inter, union, out=np.zeros_like(inter), where=overlap)


def _match(split: _Split, thresholds: np.ndarray, max_detections: int | None,
           voc: bool) -> _Ranked:
  """Marks each kept prediction a true or false positive at each of T IoU thresholds.

  COCO (``voc=False``): a prediction takes the unmatched ground truth of the highest IoU that
  is ``>= t`` (the last of equal ones). VOC (``voc=True``): it looks only at the ground truth
  of the highest IoU, taken or not (the first of equal ones), and is a true positive if that
  IoU is ``>= t`` and no earlier prediction took it. Both visit each image's predictions class
  by class in descending score, all N images at once, one rank a step.
  """
  n_img, k = split.scores.shape
  num_t = len(thresholds)
  # Each image's predictions: valid first, then by class, descending score, stable.
  image = np.repeat(np.arange(n_img), k)
  index = np.tile(np.arange(k), n_img)
  flat = lambda x: x.reshape(n_img * k)  # noqa: E731
  order = np.lexsort((index, -flat(split.scores), flat(split.labels), ~flat(split.valid), image))
  sorted_k = index[order].reshape(n_img, k)
  labels = np.take_along_axis(split.labels, sorted_k, 1)
  scores = np.take_along_axis(split.scores, sorted_k, 1)
  boxes = np.take_along_axis(split.boxes, sorted_k[..., None], 1)
  keep = np.take_along_axis(split.valid, sorted_k, 1)
  if max_detections is not None:  # the rank of each within its (image, class)
    first = np.ones((n_img, k), bool)
    first[:, 1:] = labels[:, 1:] != labels[:, :-1]
    col = np.broadcast_to(np.arange(k), (n_img, k))
    keep &= col - np.maximum.accumulate(np.where(first, col, 0), 1) < max_detections

  # The ground truth, valid first (stably: equal-IoU ties keep their order), trimmed.
  gt_order = np.argsort(~split.gt_valid, 1, kind="stable")
  m = int(split.gt_valid.sum(1).max(initial=0))
  gt_order = gt_order[:, :m]
  gt_boxes = np.take_along_axis(split.gt_boxes, gt_order[..., None], 1)
  gt_labels = np.take_along_axis(split.gt_labels, gt_order, 1)
  gt_valid = np.take_along_axis(split.gt_valid, gt_order, 1)

  tp = np.zeros((n_img, k, num_t), bool)
  taken = np.zeros((n_img, num_t, m), bool)
  steps = np.arange(num_t)
  last = np.flatnonzero(keep.any(0))
  for r in range(last[-1] + 1 if m and last.size else 0):
    n = np.flatnonzero(keep[:, r])
    same = gt_valid[n] & (gt_labels[n] == labels[n, r, None])  # (n, m)
    iou = _iou(boxes[n, r], gt_boxes[n])
    if voc:
      best = np.argmax(np.where(same, iou, -np.inf), 1)                  # (n,)
      hit = same[np.arange(len(n)), best, None] & (
          iou[np.arange(len(n)), best, None] >= thresholds)             # (n, T)
      best = np.broadcast_to(best[:, None], hit.shape)
      hit &= ~taken[n[:, None], steps, best]
    else:
      free = same[:, None] & ~taken[n] & (iou[:, None] >= thresholds[:, None])  # (n, T, m)
      masked = np.where(free, iou[:, None], -1.)
      best = m - 1 - np.argmax(masked[..., ::-1], -1)                    # (n, T), last max
      hit = free.any(-1)
    taken[n[:, None], steps, best] |= hit
    tp[n, r] = hit

  # Per class, all images: descending score, equal scores by (image, original index).
  img_k = np.arange(n_img)[:, None] * k + sorted_k
  ranked = np.lexsort((img_k[keep], -scores[keep], labels[keep]))
  num_gt = np.bincount(split.gt_labels[split.gt_valid], minlength=split.num_classes)
  return _Ranked(labels[keep][ranked], scores[keep][ranked], tp[keep][ranked], num_gt)


def _class_slices(ranked: _Ranked, num_classes: int) -> list[slice]:
  edges = np.searchsorted(ranked.labels, np.arange(num_classes + 1))
  return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


# --- COCO -------------------------------------------------------------------------------------

def coco_evaluate(pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels,
                  gt_valid, num_classes: int, *, max_detections: int = MAX_DETECTIONS
                  ) -> CocoEvaluation:
  """COCO's precision and recall of every class at every IoU and recall threshold, as
  ``COCOeval(iouType='bbox')``'s ``evaluate(); accumulate()`` at area 'all' (module docstring).

  Args:
    pred_boxes: (N, K, 4) predicted boxes (x0, y0, x1, y1) in pixels.
    pred_scores: (N, K) their scores (higher: more confident); no NaN.
    pred_labels: (N, K) integer class ids in ``0 .. num_classes - 1``.
    pred_valid: (N, K) bool, False on padding.
    gt_boxes: (N, M, 4) ground-truth boxes.
    gt_labels: (N, M) integer class ids.
    gt_valid: (N, M) bool, False on padding.
    num_classes: C, the object classes (no background class).
    max_detections: the predictions kept in each (image, class), the top ones by score
      (COCO's maxDets, 100).

  Returns:
    A :class:`CocoEvaluation`: precision (T, R, C) at :data:`IOU_THRESHOLDS` (T = 10) and
    :data:`RECALL_THRESHOLDS` (R = 101), recall (T, C), num_gt (C,).

  Raises:
    DataError: one sentence, for arrays of mismatched shapes, a box with x1 < x0 or y1 < y0 or
      a coordinate NaN or inf, a label out of range, a NaN score.
  """
  fn = "coco_evaluate"
  split = _prepare(fn, pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels,
                   gt_valid, num_classes)
  _check_int(fn, "max_detections", max_detections)
  return _coco_accumulate(_match(split, IOU_THRESHOLDS, max_detections, voc=False),
                          split.num_classes)


def _coco_accumulate(ranked: _Ranked, num_classes: int) -> CocoEvaluation:
  """``COCOeval.accumulate`` for one area range and maxDets, all classes."""
  num_t, num_r = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
  precision = -np.ones((num_t, num_r, num_classes))
  recall = -np.ones((num_t, num_classes))
  for c, part in enumerate(_class_slices(ranked, num_classes)):
    npig = ranked.num_gt[c]
    if npig == 0:
      continue
    tps = ranked.tp[part].T                                               # (T, nd)
    nd = tps.shape[1]
    tp_sum = np.cumsum(tps, 1).astype(np.float64)
    fp_sum = np.cumsum(~tps, 1).astype(np.float64)
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    recall[:, c] = rc[:, -1] if nd else 0
    pr = np.maximum.accumulate(pr[:, ::-1], 1)[:, ::-1]  # non-increasing from the right
    q = np.zeros((num_t, num_r))
    for t in range(num_t):
      inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
      reached = inds < nd
      q[t, reached] = pr[t, inds[reached]]
    precision[:, :, c] = q
  return CocoEvaluation(precision, recall, ranked.num_gt)


def _mean_present(values: np.ndarray) -> float:
  """COCOeval.summarize's mean of the entries > -1, or -1 if there are none."""
  present = values[values > -1]
  return float(np.mean(present)) if present.size else -1.


# --- VOC --------------------------------------------------------------------------------------

def voc_average_precision(pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels,
                          gt_valid, num_classes: int, *, iou_threshold: float = 0.5,
                          eleven_point: bool = False) -> np.ndarray:
  """PASCAL VOC's AP of each class, all-point interpolated (the VOC2010+ devkit's ``VOCap``),
  or with ``eleven_point`` the VOC2007 devkit's 11-point one.

  Per class, every valid prediction of the split (no cap per image), by descending score
  (stably), looks at the ground truth of its image and class of the highest IoU (the first of
  equal ones, as the devkit's ``ov > ovmax``): a true positive if that IoU is
  ``>= iou_threshold`` and no earlier prediction took that object, a false positive otherwise
  (a duplicate, or too little overlap). With recall ``r_i`` and precision ``p_i`` at each rank,
  precision is made non-increasing from the right (``p~_i = max_{j >= i} p_j``) and

    AP = sum_i (r_i - r_{i-1}) p~_i,   r_0 = 0,

  the area under that envelope. The 11-point AP of VOC2007 (and of the papers that report
  VOC07 test) instead averages the best precision at recall >= t over t = 0, 0.1, ..., 1
  (0 where no rank reaches t). IoU is the project's (no ``+ 1`` pixel, unlike the devkit's);
  there are no 'difficult' objects here.

  Args:
    pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels, gt_valid,
      num_classes: as in :func:`coco_evaluate`.
    iou_threshold: the IoU a true positive needs, 0.5 in VOC.
    eleven_point: VOC2007's 11-point interpolation instead of the area under the envelope.

  Returns:
    (C,) float64, each class's AP; -1 for a class without ground truth.
  """
  split = _prepare("voc_average_precision", pred_boxes, pred_scores, pred_labels, pred_valid,
                   gt_boxes, gt_labels, gt_valid, num_classes)
  return _voc_ap(split, float(iou_threshold), eleven_point)


def _voc_ap(split: _Split, iou_threshold: float, eleven_point: bool = False) -> np.ndarray:
  """(C,) VOC AP of each class of checked inputs (all-point, or 11-point), -1 without ground
  truth."""
  ranked = _match(split, np.array([iou_threshold]), None, voc=True)
  ap = -np.ones(split.num_classes)
  for c, part in enumerate(_class_slices(ranked, split.num_classes)):
    if ranked.num_gt[c] == 0:
      continue
    tp = ranked.tp[part, 0]
    tp_sum = np.cumsum(tp).astype(np.float64)
    fp_sum = np.cumsum(~tp).astype(np.float64)
    rec = np.concatenate([[0.], tp_sum / ranked.num_gt[c], [1.]])
    prec = np.concatenate([[0.], tp_sum / np.maximum(tp_sum + fp_sum, np.finfo(np.float64).eps),
                           [0.]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    if eleven_point:  # the envelope at the first rank reaching t is the best precision past t
      reached = np.searchsorted(rec[1:-1], ELEVEN_RECALLS, side="left")
      ap[c] = np.mean(np.concatenate([prec[1:-1], [0.]])[reached])
      continue
    step = np.flatnonzero(rec[1:] != rec[:-1])
    ap[c] = np.sum((rec[step + 1] - rec[step]) * prec[step + 1])
  return ap


# --- curves and the summary -------------------------------------------------------------------

def precision_recall(pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels,
                     gt_valid, num_classes: int, class_id: int, *, iou_threshold: float = 0.5,
                     max_detections: int = MAX_DETECTIONS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One class's precision-recall curve, for a figure: the precision and recall after each of
  its D kept predictions in descending score, matched as :func:`coco_evaluate` matches.

  Args:
    pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels, gt_valid,
      num_classes, max_detections: as in :func:`coco_evaluate`.
    class_id: the class, in ``0 .. num_classes - 1``; it needs ground truth in the split.
    iou_threshold: the IoU a true positive needs.

  Returns:
    (recall, precision, scores): (D,) float64 each: ``tp / num_gt`` and ``tp / (tp + fp)``
    after each prediction (raw; ``np.maximum.accumulate(precision[::-1])[::-1]`` is the
    envelope that AP averages), and the score of each, descending.
  """
  fn = "precision_recall"
  split = _prepare(fn, pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels,
                   gt_valid, num_classes)
  _check_int(fn, "max_detections", max_detections)
  if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) or not (
      0 <= class_id < split.num_classes):
    raise DataError(f"{fn}: class_id must be an int in 0 .. {split.num_classes - 1}; got "
                    f"{class_id!r}.")
  ranked = _match(split, np.array([min(float(iou_threshold), 1 - 1e-10)]), max_detections,
                  voc=False)
  if ranked.num_gt[class_id] == 0:
    raise DataError(f"{fn}: class {class_id} has no ground-truth box in the split, so it has no "
                    f"recall to plot.")
  part = _class_slices(ranked, split.num_classes)[class_id]
  tp_sum = np.cumsum(ranked.tp[part, 0]).astype(np.float64)
  ranks = np.arange(1, len(tp_sum) + 1, dtype=np.float64)
  return tp_sum / ranked.num_gt[class_id], tp_sum / ranks, ranked.scores[part]


def mean_average_precision(pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels,
                           gt_valid, num_classes: int, *, max_detections: int = MAX_DETECTIONS
                           ) -> dict[str, float]:
  """The detection metrics a run logs, for N images with K predictions and M ground-truth
  objects each (padded; boxes (x0, y0, x1, y1) pixels, labels ``0 .. num_classes - 1``, no
  background class).

  Args:
    pred_boxes: (N, K, 4), pred_scores: (N, K), pred_labels: (N, K) ints, pred_valid: (N, K)
      bool; gt_boxes: (N, M, 4), gt_labels: (N, M) ints, gt_valid: (N, M) bool;
      num_classes: C; max_detections: as in :func:`coco_evaluate`.

  Returns:
    A dict of floats, the COCO ones equal to pycocotools' ``COCOeval.stats``:
    ``map`` (AP at IoU .50:.05:.95, stats[0]), ``map50`` (IoU .5, stats[1]), ``map75``
    (IoU .75, stats[2]), ``mar100`` (AR with 100 predictions per image and class, stats[8]),
    each a mean over the classes with ground truth (-1 if none has any), and ``voc_ap50``, the
    mean over those classes of :func:`voc_average_precision`, and ``voc07_ap50``, the same
    with VOC2007's 11-point interpolation.

  Raises:
    DataError: as :func:`coco_evaluate`.
  """
  fn = "mean_average_precision"
  split = _prepare(fn, pred_boxes, pred_scores, pred_labels, pred_valid, gt_boxes, gt_labels,
                   gt_valid, num_classes)
  _check_int(fn, "max_detections", max_detections)
  coco = _coco_accumulate(_match(split, IOU_THRESHOLDS, max_detections, voc=False),
                          split.num_classes)
  t75 = int(np.flatnonzero(IOU_THRESHOLDS == .75)[0])
  return {"map": _mean_present(coco.precision), "map50": _mean_present(coco.precision[0]),
          "map75": _mean_present(coco.precision[t75]), "mar100": _mean_present(coco.recall),
          "voc_ap50": _mean_present(_voc_ap(split, 0.5)),
          "voc07_ap50": _mean_present(_voc_ap(split, 0.5, eleven_point=True))}
