"""Box operations of a two-stage detector (Faster R-CNN) as pure functions with static shapes.

What it holds: box conversions, areas, pairwise IoU and clipping; the anchor grid
(:func:`anchors`); the box coder that turns a box into regression targets against a reference
box and back (:func:`encode`, :func:`decode`); the matcher that assigns each anchor or proposal a
ground-truth box (:func:`match`); the sampler of a fixed-size, class-balanced training batch of
anchors or proposals (:func:`sample_balanced`); greedy non-maximum suppression, plain and per
class (:func:`nms`, :func:`batched_nms`); and a host-side check of boxes given by a user
(:func:`check_boxes`).

Conventions (torchvision's, so that its weights and numbers carry over): a box is a row
``(x0, y0, x1, y1)`` in pixels, x to the right and y down, of the last axis of a ``(..., 4)``
array; its width is ``x1 - x0`` and its height ``y1 - y0`` (no ``+ 1``, unlike the original
Caffe code), its centre ``(x0 + w / 2, y0 + h / 2)``. Each function says which torchvision code
it follows and where it departs (a tie, a padded entry).

Why static shapes: under ``jax.jit`` every array's shape is fixed when the function is traced,
and accelerators (GPU, TPU) run one compiled program per shape. torchvision returns as many
boxes as survive (NMS, sampling, matching with empty images), a shape known only after the
data is seen; here every output has a shape fixed by the inputs' shapes and static Python
arguments (``max_output``, ``num_samples``), and what would have been dropped is marked by a
boolean mask instead (``valid``), as padded ground truth is marked by ``gt_valid``. Nothing
here syncs with the host, so a whole detector step compiles into one program.

Input checks are on static shapes and static Python values only, so they hold under ``jit``
too, and fail with one :class:`~m2m_jax.errors.DataError` sentence; :func:`check_boxes` checks
the values themselves, on the host, before any tracing.
"""

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from m2m_jax.errors import DataError

RPN_WEIGHTS = (1., 1., 1., 1.)    # the box coder's (wx, wy, ww, wh) in the region proposal network
HEAD_WEIGHTS = (10., 10., 5., 5.)  # and in the box head (torchvision's RoIHeads)
BBOX_CLAMP = math.log(1000. / 16)  # the largest dw, dh decoded: a box grows at most 62.5 times
BELOW_LOW_THRESHOLD = -1  # match(): the best IoU is below ``low``: a negative (background)
BETWEEN_THRESHOLDS = -2   # match(): ``low <= best IoU < high``: ignored in training


# --- checks -----------------------------------------------------------------------------------

def _check_boxes_shape(fn: str, name: str, x, ndim: int | None = None) -> None:
  """Raises DataError unless ``x`` is (..., 4) (exactly ``ndim``-D where given)."""
  shape = jnp.shape(x)
  if ndim is not None and len(shape) != ndim:
    raise DataError(f"{fn}: {name} must be {ndim}-D (N, 4) boxes; got shape {shape}.")
  if not shape or shape[-1] != 4:
    raise DataError(f"{fn}: {name} must hold boxes on its last axis, (..., 4) = (x0, y0, x1, y1); "
                    f"got shape {shape}.")


def _check_vector(fn: str, name: str, x, n: int) -> None:
  """Raises DataError unless ``x`` has shape (n,)."""
  if jnp.shape(x) != (n,):
    raise DataError(f"{fn}: {name} must have shape ({n},), one entry a box; got shape "
                    f"{jnp.shape(x)}.")


def _check_count(fn: str, name: str, value, low: int = 1) -> None:
  """Raises DataError unless ``value`` is a static Python int >= ``low``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise DataError(f"{fn}: {name} must be a Python int >= {low} (it fixes an output's shape); "
                    f"got {value!r}.")


def _check_weights(fn: str, weights) -> None:
  if len(weights) != 4:
    raise DataError(f"{fn}: weights must be 4 numbers (wx, wy, ww, wh); got {weights!r}.")


def check_boxes(boxes, valid=None, *, nonnegative: bool = False, name: str = "boxes") -> None:
  """Refuses, on the host, boxes that no function here should be given: NaN or inf, x1 < x0 or
  y1 < y0 (flipped corners, often a (y, x) box read as (x, y)), and with ``nonnegative`` a
  coordinate below 0.

  Args:
    boxes: (..., 4) array-like of (x0, y0, x1, y1) boxes (a numpy array, a list, a jax array).
    valid: optional bool array of shape ``boxes.shape[:-1]``; only the boxes it marks are
      checked (padding may hold anything). None: all of them.
    nonnegative: refuse negative coordinates too (ground truth inside an image).
    name: how the message names the array.

  Raises:
    DataError: one sentence naming the first offending box (in row-major order), its
      coordinates and what is wrong with it.
  """
  b = np.asarray(boxes, dtype=np.float64)
  if b.ndim == 0 or b.shape[-1] != 4:
    raise DataError(f"check_boxes: {name} must hold boxes on its last axis, (..., 4) = "
                    f"(x0, y0, x1, y1); got shape {b.shape}.")
  rows = b.reshape(-1, 4)
  mask = np.ones(len(rows), bool)
  if valid is not None:
    v = np.asarray(valid, bool)
    if v.shape != b.shape[:-1]:
      raise DataError(f"check_boxes: valid must have the shape {b.shape[:-1]} of {name} without "
                      f"its last axis; got {v.shape}.")
    mask = v.reshape(-1)
  problems = [(~np.isfinite(rows).all(1), "is not finite (NaN or inf)"),
              (rows[:, 2] < rows[:, 0], "has x1 < x0"),
              (rows[:, 3] < rows[:, 1], "has y1 < y0")]
  if nonnegative:
    problems.append(((rows < 0).any(1), "has a negative coordinate"))
  bad = mask & np.any([p for p, _ in problems], axis=0)
  if bad.any():
    i = int(np.argmax(bad))
    reason = next(text for p, text in problems if p[i])
    where = ", ".join(str(int(j)) for j in np.unravel_index(i, b.shape[:-1]))
    coords = ", ".join(f"{c:g}" for c in rows[i])
    raise DataError(f"check_boxes: {name}[{where}] = ({coords}) {reason}; boxes must be "
                    f"(x0, y0, x1, y1) pixels with x0 <= x1 and y0 <= y1"
                    f"{' and no coordinate below 0' if nonnegative else ''}.")


# --- conversions, areas, IoU ------------------------------------------------------------------

def _upcast(x) -> jax.Array:
  """``x`` as a float array of at least float32 (integers and bfloat16 become float32)."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits >= 32:
    return x
  return x.astype(jnp.float32)


def xyxy_to_cxcywh(boxes: jax.Array) -> jax.Array:
  """(..., 4) ``(x0, y0, x1, y1)`` -> (..., 4) ``(cx, cy, w, h)``, the centre and the size,
  float32 or wider."""
  _check_boxes_shape("xyxy_to_cxcywh", "boxes", boxes)
  x0, y0, x1, y1 = jnp.moveaxis(_upcast(boxes), -1, 0)
  return jnp.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def cxcywh_to_xyxy(boxes: jax.Array) -> jax.Array:
  """(..., 4) ``(cx, cy, w, h)`` -> (..., 4) ``(x0, y0, x1, y1)``, float32 or wider."""
  _check_boxes_shape("cxcywh_to_xyxy", "boxes", boxes)
  cx, cy, w, h = jnp.moveaxis(_upcast(boxes), -1, 0)
  return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)


def area(boxes: jax.Array) -> jax.Array:
  """(..., 4) boxes -> (...) ``(x1 - x0) * (y1 - y0)``, float32 or wider (negative for a box
  with flipped corners, as torchvision's ``box_area``; :func:`check_boxes` refuses those)."""
  _check_boxes_shape("area", "boxes", boxes)
  b = _upcast(boxes)
  return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def _iou(a: jax.Array, b: jax.Array, area_a: jax.Array, area_b: jax.Array) -> jax.Array:
  """IoU of broadcasting (..., 4) boxes ``a`` and ``b`` with their areas, torchvision's formula
  ``inter / (area_a + area_b - inter)``, 0 where that union is 0."""
  wh = jnp.maximum(jnp.minimum(a[..., 2:], b[..., 2:]) - jnp.maximum(a[..., :2], b[..., :2]), 0)
  inter = wh[..., 0] * wh[..., 1]
  union = area_a + area_b - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1), 0)


def pairwise_iou(a: jax.Array, b: jax.Array) -> jax.Array:
  """Intersection over union of every box of ``a`` with every box of ``b``.

  Args:
    a: (N, 4) boxes.
    b: (M, 4) boxes.

  Returns:
    (N, M), float32 or wider: ``|a_i n b_j| / |a_i u b_j|`` (torchvision's ``box_iou``), and 0
    where the union is 0 (two empty boxes) instead of torchvision's NaN.
  """
  _check_boxes_shape("pairwise_iou", "a", a, ndim=2)
  _check_boxes_shape("pairwise_iou", "b", b, ndim=2)
  a, b = _upcast(a), _upcast(b)
  return _iou(a[:, None, :], b[None, :, :], area(a)[:, None], area(b)[None, :])


def clip_to_image(boxes: jax.Array, height, width) -> jax.Array:
  """Clamps x to [0, width] and y to [0, height] (torchvision's ``clip_boxes_to_image``).

  Args:
    boxes: (..., 4) boxes; their dtype is kept.
    height, width: the image's size in pixels: Python numbers, or arrays that broadcast against
      ``boxes.shape[:-1]`` (e.g. (B, 1) for (B, N, 4) boxes), for images of a padded batch that
      each have their own size.

  Returns:
    (..., 4) boxes of the dtype of ``boxes``.
  """
  _check_boxes_shape("clip_to_image", "boxes", boxes)
  boxes = jnp.asarray(boxes)
  upper = jnp.stack(jnp.broadcast_arrays(width, height, width, height), -1)
  return jnp.clip(boxes, 0, upper.astype(boxes.dtype))


# --- anchors ----------------------------------------------------------------------------------

def _pair(value, what: str) -> tuple[int, int]:
  pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
  if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                               and v > 0 for v in pair):
    raise DataError(f"anchors: {what} must be a positive int or a pair of them; got {value!r}.")
  return int(pair[0]), int(pair[1])


def cell_anchors(sizes: Sequence[int], aspect_ratios: Sequence[float]) -> np.ndarray:
  """The (A, 4) zero-centred anchors of one level, A = len(aspect_ratios) * len(sizes), in
  torchvision's order (ratio-major: every size of the first ratio, then of the next).

  An aspect ratio r is height / width: ``h_ratio = sqrt(r)``, ``w_ratio = 1 / h_ratio``,
  ``w = w_ratio * size``, ``h = h_ratio * size`` (so w * h = size^2), and the anchor is
  ``round((-w, -h, w, h) / 2)``, computed in float32 as torchvision does and rounded half to
  even (``torch.round``).
  """
  s = np.asarray(sizes, np.float32)
  h_ratios = np.sqrt(np.asarray(aspect_ratios, np.float32))
  w_ratios = np.float32(1) / h_ratios
  ws = (w_ratios[:, None] * s[None, :]).reshape(-1)
  hs = (h_ratios[:, None] * s[None, :]).reshape(-1)
  return np.round(np.stack([-ws, -hs, ws, hs], 1) / np.float32(2))


def anchors(feature_sizes: Sequence[tuple[int, int]], strides: Sequence, sizes: Sequence[
    Sequence[int]], aspect_ratios: Sequence[Sequence[float]]) -> jax.Array:
  """Every anchor box of every feature level, torchvision's ``AnchorGenerator``.

  Level l, a feature map of H_l x W_l cells that stride_l pixels apart, puts its A_l =
  ``len(aspect_ratios[l]) * len(sizes[l])`` :func:`cell_anchors` at every cell's top-left pixel
  ``(x, y) = (j * stride_w, i * stride_h)``. All arguments are static Python values, so the
  result is a constant of the compiled program.

  Args:
    feature_sizes: L pairs (H_l, W_l), the feature maps' heights and widths.
    strides: L strides in pixels, an int or a pair (stride_h, stride_w) each; torchvision takes
      ``image_size // feature_size`` per axis.
    sizes: L sequences of anchor sizes (the square root of the area, in pixels), e.g.
      ``((32,), (64,), (128,), (256,), (512,))`` for a feature pyramid, ``((128, 256, 512),)``
      for one level.
    aspect_ratios: L sequences of ratios height / width, e.g. ``((0.5, 1.0, 2.0),) * L``.

  Returns:
    (sum_l H_l W_l A_l, 4) float32 boxes, level after level; within a level row after row of
    cells (y outer, x inner), and within a cell the A_l anchors in :func:`cell_anchors`' order,
    so anchor ``a`` of cell ``(i, j)`` of level l is row ``offset_l + (i * W_l + j) * A_l + a``,
    the order of the RPN head's outputs reshaped (H, W, A).
  """
  n = len(feature_sizes)
  if not (len(strides) == len(sizes) == len(aspect_ratios) == n) or n == 0:
    raise DataError(f"anchors: feature_sizes, strides, sizes and aspect_ratios need one entry a "
                    f"level each (at least one); got {n}, {len(strides)}, {len(sizes)} and "
                    f"{len(aspect_ratios)}.")
  levels = []
  for (h, w), stride, level_sizes, ratios in zip(
      (_pair(f, "each feature size") for f in feature_sizes), strides, sizes, aspect_ratios):
    sh, sw = _pair(stride, "each stride")
    if not level_sizes or not ratios or min(level_sizes) <= 0 or min(ratios) <= 0:
      raise DataError(f"anchors: each level needs positive sizes and aspect ratios; got sizes "
                      f"{level_sizes!r} and aspect_ratios {ratios!r}.")
    y, x = np.meshgrid(np.arange(h) * sh, np.arange(w) * sw, indexing="ij")
    shifts = np.stack([x, y, x, y], -1).reshape(-1, 1, 4).astype(np.float32)
    levels.append((shifts + cell_anchors(level_sizes, ratios)[None]).reshape(-1, 4))
  return jnp.asarray(np.concatenate(levels), jnp.float32)


# --- box coder --------------------------------------------------------------------------------

def _centres_sizes(boxes: jax.Array) -> tuple[jax.Array, ...]:
  """(..., 4) boxes -> their widths, heights, centre x and y, (...) each, torchvision's way."""
  w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
  return w, h, boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h


def encode(reference_boxes: jax.Array, proposals: jax.Array,
           weights: Sequence[float] = RPN_WEIGHTS) -> jax.Array:
  """The regression targets that move each proposal (anchor) onto its reference box, exactly
  as torchvision's ``BoxCoder.encode_single``:

    dx = wx (cx_ref - cx_prop) / w_prop,   dw = ww log(w_ref / w_prop),
    dy = wy (cy_ref - cy_prop) / h_prop,   dh = wh log(h_ref / h_prop).

  Args:
    reference_boxes: (..., 4) the boxes to reach (the matched ground truth).
    proposals: (..., 4) the boxes they are expressed against (anchors, proposals); the two
      broadcast against each other.
    weights: (wx, wy, ww, wh): :data:`RPN_WEIGHTS` in the RPN, :data:`HEAD_WEIGHTS` in the box
      head.

  Returns:
    (..., 4) ``(dx, dy, dw, dh)``, float32 or wider; inf or NaN where a proposal or a
    reference box has zero width or height (as torchvision: keep those out of the loss).
  """
  _check_boxes_shape("encode", "reference_boxes", reference_boxes)
  _check_boxes_shape("encode", "proposals", proposals)
  _check_weights("encode", weights)
  wx, wy, ww, wh = weights
  pw, ph, px, py = _centres_sizes(_upcast(proposals))
  gw, gh, gx, gy = _centres_sizes(_upcast(reference_boxes))
  return jnp.stack([wx * (gx - px) / pw, wy * (gy - py) / ph, ww * jnp.log(gw / pw),
                    wh * jnp.log(gh / ph)], -1)


def decode(deltas: jax.Array, boxes: jax.Array, weights: Sequence[float] = RPN_WEIGHTS,
           clamp: float = BBOX_CLAMP) -> jax.Array:
  """The boxes that ``deltas`` make of ``boxes``, the inverse of :func:`encode`, exactly as
  torchvision's ``BoxCoder.decode_single``: with (dx, dy, dw, dh) = deltas / weights and dw, dh
  first clamped above at ``clamp`` (so exp stays finite),

    cx = dx w + cx_box,   w' = exp(dw) w,   box = (cx - w'/2, cy - h'/2, cx + w'/2, cy + h'/2).

  Args:
    deltas: (..., 4) ``(dx, dy, dw, dh)``; for K classes' deltas of N boxes, shape (N, K, 4)
      with ``boxes`` (N, 1, 4).
    boxes: (..., 4) the boxes the deltas are relative to, broadcasting against ``deltas``.
    weights: the (wx, wy, ww, wh) the deltas were encoded with.
    clamp: the largest dw and dh used, :data:`BBOX_CLAMP` = log(1000 / 16) by default.

  Returns:
    (..., 4) boxes, float32 or wider, not clipped to the image (see :func:`clip_to_image`).
  """
  _check_boxes_shape("decode", "deltas", deltas)
  _check_boxes_shape("decode", "boxes", boxes)
  _check_weights("decode", weights)
  deltas = _upcast(deltas)
  w, h, cx, cy = _centres_sizes(_upcast(boxes).astype(deltas.dtype))
  wx, wy, ww, wh = weights
  dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
  dw = jnp.minimum(deltas[..., 2] / ww, clamp)
  dh = jnp.minimum(deltas[..., 3] / wh, clamp)
  pcx, pcy = dx * w + cx, dy * h + cy
  half_w, half_h = 0.5 * (jnp.exp(dw) * w), 0.5 * (jnp.exp(dh) * h)
  return jnp.stack([pcx - half_w, pcy - half_h, pcx + half_w, pcy + half_h], -1)


# --- matcher and sampler ----------------------------------------------------------------------

def match(iou: jax.Array, gt_valid: jax.Array, high: float, low: float,
          allow_low_quality: bool = False) -> jax.Array:
  """Each anchor's (column's) ground-truth box, torchvision's ``Matcher``.

  For anchor n, the valid gt m of highest ``iou[m, n]`` (the lowest m among equals) is its
  match if that IoU >= ``high``; below it the anchor gets :data:`BETWEEN_THRESHOLDS` (-2, ignored
  in training) when IoU >= ``low``, else :data:`BELOW_LOW_THRESHOLD` (-1, background). With
  ``allow_low_quality`` (the RPN's setting), each valid gt's best anchors (all that tie for the
  highest IoU of that gt, however low, even 0) keep their own best match, the m above, whatever
  the thresholds: torchvision's ``set_low_quality_matches_``, which gives such an anchor its
  best gt, not necessarily the gt it is best for. Padded gt (``gt_valid`` False) never match and
  nominate no anchor; with no valid gt every anchor is -1 (torchvision refuses an image without
  gt instead).

  Torchvision's settings: RPN ``high=0.7, low=0.3, allow_low_quality=True``; box head
  ``high=low=0.5, allow_low_quality=False``.

  Args:
    iou: (M, N) quality of each (gt, anchor) pair, usually ``pairwise_iou(gt, anchors)``.
    gt_valid: (M,) bool, False on padded gt rows.
    high, low: thresholds, ``low <= high``.
    allow_low_quality: a static bool.

  Returns:
    (N,) int32: a gt index in [0, M), or -1, or -2.
  """
  shape = jnp.shape(iou)
  if len(shape) != 2:
    raise DataError(f"match: iou must be 2-D (M gt, N anchors); got shape {shape}.")
  if jnp.shape(gt_valid) != shape[:1]:
    raise DataError(f"match: gt_valid must have shape ({shape[0]},), one entry a gt row of iou; "
                    f"got shape {jnp.shape(gt_valid)}.")
  if isinstance(high, (int, float)) and isinstance(low, (int, float)) and low > high:
    raise DataError(f"match: low must be <= high; got low={low} and high={high}.")
  if shape[0] == 0:
    return jnp.full(shape[1:], BELOW_LOW_THRESHOLD, jnp.int32)
  valid = jnp.asarray(gt_valid, bool)[:, None]
  quality = jnp.where(valid, _upcast(iou), -jnp.inf)
  best = quality.max(0)
  best_gt = jnp.argmax(quality, 0).astype(jnp.int32)
  matches = jnp.where(best < low, BELOW_LOW_THRESHOLD,
                      jnp.where(best < high, BETWEEN_THRESHOLDS, best_gt))
  if allow_low_quality:
    ties = valid & (quality == quality.max(1, keepdims=True))
    matches = jnp.where(ties.any(0), best_gt, matches)
  return matches.astype(jnp.int32)


def sample_balanced(key: jax.Array, labels: jax.Array, num_samples: int,
                    positive_fraction: float) -> tuple[jax.Array, jax.Array]:
  """A fixed-size training batch of anchors or proposals, torchvision's
  ``BalancedPositiveNegativeSampler`` with fixed output shapes.

  Takes ``min(#positives, int(num_samples * positive_fraction))`` positives uniformly at random
  among the positives, then ``min(#negatives, num_samples - positives taken)`` negatives
  uniformly at random among the negatives; ignored entries are never taken. Torchvision's
  settings: RPN ``256, 0.5``; box head ``512, 0.25``.

  Args:
    key: a jax.random key; the same key and labels give the same sample.
    labels: (N,) ints: >= 1 positive (1 in the RPN, the class in the box head), 0 negative,
      < 0 ignored (-1, or a padded entry).
    num_samples: static Python int >= 1, the most entries sampled.
    positive_fraction: static float in [0, 1], the most positives' share of ``num_samples``.

  Returns:
    (sampled, positive): (N,) bool each: the entries taken, and those of them that are
    positives (the negatives taken are ``sampled & ~positive``).
  """
  if jnp.ndim(labels) != 1:
    raise DataError(f"sample_balanced: labels must be 1-D (N,); got shape {jnp.shape(labels)}.")
  _check_count("sample_balanced", "num_samples", num_samples)
  if not 0 <= positive_fraction <= 1:
    raise DataError(f"sample_balanced: positive_fraction must be in [0, 1]; got "
                    f"{positive_fraction!r}.")
  labels = jnp.asarray(labels)
  n = labels.shape[0]
  order = jax.random.permutation(key, n)  # a uniformly random order; take the first ones of it
  positive, negative = (labels >= 1)[order], (labels == 0)[order]
  take_positive = positive & (jnp.cumsum(positive) <= int(num_samples * positive_fraction))
  take_negative = negative & (jnp.cumsum(negative) <= num_samples - take_positive.sum())
  unshuffle = lambda x: jnp.zeros(n, bool).at[order].set(x)  # noqa: E731
  return unshuffle(take_positive | take_negative), unshuffle(take_positive)


# --- non-maximum suppression ------------------------------------------------------------------

def _check_nms(fn: str, boxes, scores, max_output, valid_in, classes=None) -> None:
  _check_boxes_shape(fn, "boxes", boxes, ndim=2)
  n = jnp.shape(boxes)[0]
  _check_vector(fn, "scores", scores, n)
  if valid_in is not None:
    _check_vector(fn, "valid_in", valid_in, n)
  if classes is not None:
    _check_vector(fn, "classes", classes, n)
  _check_count(fn, "max_output", max_output)


def _greedy_nms(boxes, scores, iou_threshold, max_output: int, valid_in, groups):
  """Greedy NMS; with ``groups``, a box suppresses only boxes of its own group."""
  n = boxes.shape[0]
  boxes = _upcast(boxes)
  valid = jnp.ones(n, bool) if valid_in is None else jnp.asarray(valid_in, bool)
  iota = lax.iota(jnp.int32, n)
  # Valid boxes first, by descending score, ties by index (NaN scores last among the valid).
  _, _, order = lax.sort(((~valid).astype(jnp.int32), -_upcast(scores), iota), num_keys=3)
  boxes, areas = boxes[order], area(boxes[order])
  groups = None if groups is None else jnp.asarray(groups)[order]

  def more(state):
    kept, candidates, _ = state
    return (kept < max_output) & candidates.any()

  def keep_next(state):
    # The next candidate in score order is kept; it removes itself and every later candidate
    # it overlaps by IoU > iou_threshold (of its group). One row of IoU a kept box.
    kept, candidates, out = state
    i = jnp.argmax(candidates)
    over = _iou(boxes[i], boxes, areas[i], areas) > iou_threshold
    if groups is not None:
      over &= groups == groups[i]
    return kept + 1, candidates & ~over & (iota != i), out.at[kept].set(order[i])

  kept, _, out = lax.while_loop(more, keep_next, (jnp.int32(0), valid[order],
                                                  jnp.zeros(max_output, jnp.int32)))
  return out, jnp.arange(max_output) < kept


def nms(boxes: jax.Array, scores: jax.Array, iou_threshold: float, max_output: int,
        valid_in: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Greedy non-maximum suppression with a fixed output size (torchvision's ``nms``, then its
  first ``max_output`` entries).

  Visits the boxes by descending score (equal scores: the lower index first) and keeps each box
  that no box kept before it overlaps by IoU > ``iou_threshold`` (strictly: an IoU equal to the
  threshold, compared in the IoU's float32, keeps the box). Stops after ``max_output`` kept
  boxes. Each kept box costs one O(N) row of IoU, inside a ``lax.while_loop`` that runs
  ``min(kept, max_output)`` times: O(N max_output) work and O(N) memory.

  Args:
    boxes: (N, 4) boxes.
    scores: (N,) scores.
    iou_threshold: a Python float or a traced scalar.
    max_output: static Python int >= 1, the output's length.
    valid_in: optional (N,) bool: False on padded boxes, which are never kept and suppress
      nothing. None: all boxes are real.

  Returns:
    (indices, valid): (max_output,) int32 indices into ``boxes`` of the kept boxes in the order
    kept (descending score), and (max_output,) bool marking the real ones, a prefix; the
    padding indices after them are 0.
  """
  _check_nms("nms", boxes, scores, max_output, valid_in)
  return _greedy_nms(boxes, scores, iou_threshold, max_output, valid_in, None)


def batched_nms(boxes: jax.Array, scores: jax.Array, classes: jax.Array, iou_threshold: float,
                max_output: int, valid_in: jax.Array | None = None
                ) -> tuple[jax.Array, jax.Array]:
  """Non-maximum suppression within each class: a box suppresses only boxes of its own class,
  and the survivors of every class come out merged by descending score (torchvision's
  ``batched_nms``).

  torchvision gets there by shifting each class's boxes by ``class * (max coordinate + 1)`` so
  that classes never overlap, then running one :func:`nms` (``_batched_nms_coordinate_trick``).
  Here the class test is made directly on each IoU row, ``IoU > threshold and same class``,
  which gives the same boxes without the trick's two caveats: it needs coordinates >= 0, and
  large offsets (class 90 of a COCO head) cost float32 IoU bits near the threshold.

  Args:
    boxes: (N, 4) boxes.
    scores: (N,) scores.
    classes: (N,) ints, each box's class.
    iou_threshold, max_output, valid_in: as in :func:`nms`.

  Returns:
    (indices, valid): as in :func:`nms`.
  """
  _check_nms("batched_nms", boxes, scores, max_output, valid_in, classes)
  return _greedy_nms(boxes, scores, iou_threshold, max_output, valid_in, classes)
