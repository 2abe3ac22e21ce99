"""RoIAlign, the pooling of each box's features into a fixed grid (Mask R-CNN), and its feature
pyramid form, as pure functions with static shapes: torchvision's ``roi_align`` and
``MultiScaleRoIAlign``, channels-last.

What it holds: :func:`roi_align` pools each box (a region of interest, "roi") of a feature map
into an ``output_size`` grid of bins; :func:`assign_levels` picks each box's pyramid level (the
FPN paper's equation 1, torchvision's ``LevelMapper``); :func:`multiscale_roi_align` pools each
box from the level it is assigned.

The definition, torchvision's CPU kernel (``roi_align_kernel.cpp``), per box and axis (y shown;
x is the same with x0, x1, W and pw), in float32 as the kernel computes it::

  start = y0 * spatial_scale - offset,  end = y1 * spatial_scale - offset
  size  = end - start               (at least 1 without ``aligned``: a degenerate box pools 1 x 1)
  bin   = size / ph,  n = sampling_ratio if sampling_ratio > 0 else ceil(size / ph)
  sample points of bin i:  start + i * bin + (k + 0.5) * bin / n,   k = 0 .. n - 1
  bin value = the mean over its n_y * n_x samples, each bilinearly interpolated (0 if n <= 0).

``offset`` is 0.5 with ``aligned`` (pixel j covers [j, j + 1) in box coordinates and its value
sits at its centre j + 0.5, so the half-pixel shift makes a box's samples land where its pixels
are) and 0 without (Mask R-CNN's original, half a pixel off; torchvision's default).

Border rules of the interpolation, kept exactly: a sample at y < -1 or y > H (or x < -1 or
x > W) contributes 0 but still counts in the mean; otherwise y <= 0 reads row 0, and
y >= H - 1 reads row H - 1 alone (low = high = H - 1); in between, rows floor(y) and
floor(y) + 1 weighted 1 - frac and frac. So the map is extended by its edge values for one
pixel around it, and by zeros beyond. A NaN coordinate contributes 0, as in the kernel.

Why a static maximum of sample points: with ``sampling_ratio <= 0`` the number of samples per
bin, ceil(size / output size), depends on each box, a shape known only once the boxes are seen,
which ``jax.jit`` cannot compile. Here every box gets ``max_samples`` sample slots per axis;
slots k >= n carry weight 0 and the mean divides by the box's own n, so the result equals
torchvision's whenever ceil(size / output size) <= ``max_samples``; above that, a box gets
``max_samples`` evenly spaced points per axis instead (torchvision with ``sampling_ratio =
max_samples`` for that box and axis: a coarser estimate of the same bin average). With
``sampling_ratio > 0`` the grid is static and ``max_samples`` plays no part.

Cost: each sample reads its four neighbours, so a call gathers R * ph * pw * (2 S_y) * (2 S_x)
feature vectors of C channels, S = ``sampling_ratio`` or ``max_samples`` (R * 49 * 16 * C for
torchvision's detector settings, 7 x 7 bins and sampling_ratio 2), whatever the boxes' own n:
memory and work grow with S^2. The weighted sum is a product and a sum, not a matmul, so it stays
float32 on GPUs that would run a float32 matmul in TF32.

Input checks are on static shapes and static Python values only, so they hold under ``jit``
too, and fail with one :class:`~m2m_jax.errors.DataError` sentence. Batch indices outside
[0, B) are clipped into it (torchvision reads out of bounds there).
"""

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.errors import DataError
from m2m_jax.ops.boxes import _check_boxes_shape, _check_vector, _upcast, area


# --- checks -----------------------------------------------------------------------------------

def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _output_size(fn: str, output_size) -> tuple[int, int]:
  """``output_size`` as (ph, pw), or DataError."""
  pair = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 2
  if len(pair) != 2 or not all(_is_int(v) and v >= 1 for v in pair):
    raise DataError(f"{fn}: output_size must be an int >= 1 or a pair (ph, pw) of them; got "
                    f"{output_size!r}.")
  return int(pair[0]), int(pair[1])


def _check_sampling(fn: str, sampling_ratio, max_samples) -> None:
  if not _is_int(sampling_ratio):
    raise DataError(f"{fn}: sampling_ratio must be a Python int (> 0: that many samples per bin "
                    f"and axis; <= 0: adaptive); got {sampling_ratio!r}.")
  if not _is_int(max_samples) or max_samples < 1:
    raise DataError(f"{fn}: max_samples must be a Python int >= 1 (it fixes the sample grid's "
                    f"shape); got {max_samples!r}.")


def _check_batch_indices(fn: str, batch_indices, num_boxes: int) -> None:
  _check_vector(fn, "batch_indices", batch_indices, num_boxes)
  if not jnp.issubdtype(jnp.result_type(batch_indices), jnp.integer):
    raise DataError(f"{fn}: batch_indices must be integers (each box's image in the batch); got "
                    f"dtype {jnp.result_type(batch_indices)}.")


def _check_map(fn: str, name: str, shape: tuple, ranks: str) -> None:
  if 0 in shape[-3:-1]:
    raise DataError(f"{fn}: {name} must have a height and width >= 1, {ranks}; got shape "
                    f"{shape}.")


# --- the kernel -------------------------------------------------------------------------------

def _counts(size: jax.Array, bins: int, sampling_ratio: int, slots: int) -> jax.Array:
  """(R,) sample points per bin along one axis: ``sampling_ratio``, or ceil(size / bins) capped
  at ``slots`` (0 for a size <= 0 or NaN, where torchvision's loop runs no sample)."""
  if sampling_ratio > 0:
    return jnp.full(size.shape, sampling_ratio, jnp.int32)
  n = jnp.ceil(size / bins)
  return jnp.where(n >= 1, jnp.minimum(n, slots), 0).astype(jnp.int32)


def _axis(start: jax.Array, size: jax.Array, bins: int, n: jax.Array, slots: int,
          extent: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The samples of one axis and their neighbours.

  Args:
    start, size: (R,) each box's start and size along the axis, in feature pixels.
    bins: the output size along the axis.
    n: (R,) int32 samples per bin used, <= ``slots``.
    slots: static number of sample slots per bin.
    extent: (R,) int32 the feature map's size along the axis (H or W).

  Returns:
    (index, weight): (R, bins, 2 slots) each: the low neighbours of the slots then their high
    neighbours (int32 pixel indices in [0, extent)), and their bilinear weights divided by n,
    0 for unused slots and for samples outside [-1, extent].
  """
  dtype = start.dtype
  step = (size / bins)[:, None, None]
  count = jnp.maximum(n, 1).astype(dtype)[:, None, None]
  i = jnp.arange(bins, dtype=dtype)[None, :, None]
  k = jnp.arange(slots, dtype=dtype)[None, None, :]
  t = start[:, None, None] + i * step + (k + 0.5) * step / count  # the kernel's order of ops
  top = extent.astype(dtype)[:, None, None]
  use = (t >= -1) & (t <= top) & (jnp.arange(slots)[None, None, :] < n[:, None, None])
  t = jnp.maximum(t, 0)
  low = jnp.floor(t)
  edge = low >= top - 1  # the last row: read it alone
  low = jnp.where(edge, top - 1, low)
  high = jnp.where(edge, low, low + 1)
  frac = jnp.where(edge, 0, t - low)
  weight = jnp.concatenate([jnp.where(use, 1 - frac, 0), jnp.where(use, frac, 0)], -1) / count
  index = jnp.concatenate([jnp.where(use, low, 0), jnp.where(use, high, 0)], -1)
  return index.astype(jnp.int32), weight


def _pool(table: jax.Array, base: jax.Array, heights: jax.Array, widths: jax.Array,
          boxes: jax.Array, scale: jax.Array, output_size: tuple[int, int], sampling_ratio: int,
          aligned: bool, max_samples: int, out_dtype) -> jax.Array:
  """RoIAlign of R boxes, each on its own map stored row-major in a shared table.

  Args:
    table: (N, C) the feature maps' pixels, each map's rows one after the other.
    base: (R,) int32 the table row of pixel (0, 0) of each box's map.
    heights, widths: (R,) int32 the size of each box's map.
    boxes: (R, 4) float boxes in image pixels; scale: (R,) their maps' spatial scales.

  Returns:
    (R, ph, pw, C) of ``out_dtype``.
  """
  ph, pw = output_size
  offset = 0.5 if aligned else 0.0
  x0, y0, x1, y1 = jnp.moveaxis(boxes * scale[:, None] - offset, -1, 0)
  w, h = x1 - x0, y1 - y0
  if not aligned:
    w, h = jnp.maximum(w, 1), jnp.maximum(h, 1)
  slots = sampling_ratio if sampling_ratio > 0 else max_samples
  yi, yw = _axis(y0, h, ph, _counts(h, ph, sampling_ratio, slots), slots, heights)
  xi, xw = _axis(x0, w, pw, _counts(w, pw, sampling_ratio, slots), slots, widths)
  # (R, ph, pw, 2 S_y, 2 S_x): every (y neighbour, x neighbour) pair of every sample of a bin.
  index = (base[:, None, None, None, None] + yi[:, :, None, :, None]
           * widths[:, None, None, None, None] + xi[:, None, :, None, :])
  weight = yw[:, :, None, :, None] * xw[:, None, :, None, :]
  values = table[index]
  return jnp.sum(weight[..., None] * values, axis=(3, 4)).astype(out_dtype)


def _out_dtype(features: jax.Array):
  return features.dtype if jnp.issubdtype(features.dtype, jnp.floating) else jnp.float32


# --- public functions -------------------------------------------------------------------------

def roi_align(features: jax.Array, boxes: jax.Array, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False, *,
              batch_indices: jax.Array | None = None, max_samples: int = 4) -> jax.Array:
  """Pools each box of a feature map into an ``output_size`` grid of bins, torchvision's
  ``roi_align`` (its arguments in its order), channels-last; see the module docstring for the
  definition, its border rules, and what ``max_samples`` changes.

  Args:
    features: (H, W, C) one feature map, or (B, H, W, C) a batch of them (then
      ``batch_indices`` says which map each box is on).
    boxes: (R, 4) boxes (x0, y0, x1, y1) in the pixels of the image the map was computed from.
    output_size: static int or pair (ph, pw), the bins per box along y and x.
    spatial_scale: the map's size over the image's, e.g. 1/16 for a stride-16 map.
    sampling_ratio: static int: > 0 that many samples per bin along each axis (torchvision's
      detectors use 2); <= 0 ceil(box size / output size) per box and axis (adaptive).
    aligned: static bool: shift the boxes by -0.5 pixel (pixel centres) and keep their size as
      is, instead of forcing it to at least 1 x 1.
    batch_indices: (R,) ints in [0, B), each box's map; required for (B, H, W, C) features and
      refused for (H, W, C).
    max_samples: static int >= 1, the most samples per bin along an axis when ``sampling_ratio <=
      0`` (exact while ceil(box size / output size) <= max_samples; capped above).

  Returns:
    (R, ph, pw, C), the dtype of ``features`` (float32 for integer features); bin (i, j) of box r
    is the mean of the map over its samples. The gradient reaches ``features`` (a scatter-add of
    the same weights: torchvision's backward kernel).
  """
  fn = "roi_align"
  shape = jnp.shape(features)
  if len(shape) not in (3, 4):
    raise DataError(f"{fn}: features must be (H, W, C) or (B, H, W, C), channels-last; got shape "
                    f"{shape}.")
  _check_map(fn, "features", shape, "(H, W, C) or (B, H, W, C)")
  _check_boxes_shape(fn, "boxes", boxes, ndim=2)
  r = jnp.shape(boxes)[0]
  if len(shape) == 3 and batch_indices is not None:
    raise DataError(f"{fn}: batch_indices goes with (B, H, W, C) features; these are one map of "
                    f"shape {shape}, so leave it None.")
  if len(shape) == 4 and batch_indices is None:
    raise DataError(f"{fn}: (B, H, W, C) features of shape {shape} need batch_indices, one entry a "
                    f"box, saying which map it is on.")
  if batch_indices is not None:
    _check_batch_indices(fn, batch_indices, r)
  output_size = _output_size(fn, output_size)
  _check_sampling(fn, sampling_ratio, max_samples)
  features = jnp.asarray(features)
  *_, height, width, channels = shape
  boxes = _upcast(boxes)
  if batch_indices is None:
    base = jnp.zeros(r, jnp.int32)
  else:
    batch = jnp.clip(jnp.asarray(batch_indices), 0, shape[0] - 1).astype(jnp.int32)
    base = batch * (height * width)
  full = lambda v: jnp.full(r, v, jnp.int32)  # noqa: E731
  return _pool(features.reshape(-1, channels), base, full(height), full(width), boxes,
               jnp.full(r, spatial_scale, boxes.dtype), output_size, sampling_ratio,
               bool(aligned), max_samples, _out_dtype(features))


def assign_levels(boxes: jax.Array, k_min: int = 2, k_max: int = 5, canonical_scale: float = 224,
                  canonical_level: int = 4, eps: float = 1e-6) -> jax.Array:
  """Each box's feature pyramid level, the FPN paper's equation 1 as torchvision's
  ``LevelMapper`` computes it (float32):

    level = clip(floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps), k_min, k_max)

  so a 224 x 224 box goes to level 4 (P4, stride 16), one half that size a level finer.

  Args:
    boxes: (..., 4) boxes (x0, y0, x1, y1) in image pixels.
    k_min, k_max: the finest and coarsest level numbers (P2 .. P5: 2, 5).
    canonical_scale, canonical_level: a box of sqrt(area) ``canonical_scale`` maps to
      ``canonical_level``.
    eps: added before the floor, so that an exact power-of-2 size is not sent a level lower by
      rounding in log2.

  Returns:
    (...) int32 level indices counted from ``k_min``, in [0, k_max - k_min] (torchvision's
    convention: the index into the list of levels; the level number is index + k_min). A box of
    zero area goes to index 0; one of negative area (flipped corners), where torchvision's
    result is undefined, to index 0 too.
  """
  _check_boxes_shape("assign_levels", "boxes", boxes)
  if not (_is_int(k_min) and _is_int(k_max) and k_min <= k_max):
    raise DataError(f"assign_levels: k_min and k_max must be ints with k_min <= k_max; got "
                    f"{k_min!r} and {k_max!r}.")
  if not canonical_scale > 0:
    raise DataError(f"assign_levels: canonical_scale must be > 0; got {canonical_scale!r}.")
  s = jnp.sqrt(area(boxes))
  level = jnp.floor(canonical_level + jnp.log2(s / canonical_scale) + jnp.asarray(eps, s.dtype))
  level = jnp.where(jnp.isnan(level), k_min, jnp.clip(level, k_min, k_max))
  return (level - k_min).astype(jnp.int32)


def _pyramid_levels(scales: Sequence[float], num_levels: int) -> tuple[int, int]:
  """(k_min, k_max) of ``scales`` = 2^-k_min, ..., 2^-k_max, one a level, or DataError."""
  ks = [-math.log2(s) if isinstance(s, (int, float, np.floating)) and s > 0 else math.nan
        for s in scales]
  if (len(ks) != num_levels
      or not all(abs(k - round(k)) < 1e-9 and round(k) == round(ks[0]) + i
                 for i, k in enumerate(ks))):
    raise DataError(f"multiscale_roi_align: scales must hold one scale a level of features "
                    f"({num_levels}), finest first, powers of 2 each half the one before (P2-P5: "
                    f"(1/4, 1/8, 1/16, 1/32)); got {tuple(scales)!r}.")
  return round(ks[0]), round(ks[-1])


def multiscale_roi_align(features: Sequence[jax.Array], boxes: jax.Array,
                         batch_indices: jax.Array, output_size, scales: Sequence[float],
                         sampling_ratio: int, *, aligned: bool = False, max_samples: int = 4,
                         canonical_scale: float = 224, canonical_level: int = 4,
                         eps: float = 1e-6) -> jax.Array:
  """RoIAlign of each box from its feature pyramid level, torchvision's ``MultiScaleRoIAlign``.

  Box r goes to level ``assign_levels(boxes, k_min, k_max, canonical_scale, canonical_level,
  eps)[r]`` with k_min = -log2(scales[0]) and k_max = -log2(scales[-1]) (as torchvision, which
  infers the scales as 2 ** round(log2(feature size / image size)); here they are given), and
  is pooled there exactly as :func:`roi_align` with that level's map and scale would.

  Static shapes and cost: torchvision pools each level's boxes (a data-dependent subset) and
  scatters them back. Here the levels' pixels are laid one after the other in one (sum_l B H_l
  W_l, C) table (a copy of the pyramid, and of its gradient) and each box's samples are gathered
  from its own level's part of it, so the cost is one :func:`roi_align` of R boxes (see the
  module docstring), not one per level; nothing depends on how the boxes spread over levels.

  Args:
    features: L (B, H_l, W_l, C) maps, finest first (e.g. P2 .. P5), same B and C.
    boxes: (R, 4) boxes (x0, y0, x1, y1) in image pixels.
    batch_indices: (R,) ints in [0, B), each box's image.
    output_size: static int or pair (ph, pw).
    scales: L static floats, each level's map size over the image's, powers of 2 halving level
      by level: (1/4, 1/8, 1/16, 1/32) for P2 .. P5.
    sampling_ratio, aligned, max_samples: as in :func:`roi_align` (torchvision's detectors:
      sampling_ratio 2, aligned False).
    canonical_scale, canonical_level, eps: as in :func:`assign_levels`.

  Returns:
    (R, ph, pw, C), the dtype the levels' dtypes promote to.
  """
  fn = "multiscale_roi_align"
  if isinstance(features, (jax.Array, np.ndarray)) or not len(features):
    raise DataError(f"{fn}: features must be a non-empty sequence of (B, H_l, W_l, C) maps, one a "
                    f"pyramid level; got {type(features).__name__}.")
  shapes = [jnp.shape(f) for f in features]
  for l, shape in enumerate(shapes):
    if len(shape) != 4 or shape[0] != shapes[0][0] or shape[-1] != shapes[0][-1]:
      raise DataError(f"{fn}: features[{l}] must be (B, H, W, C) with the B and C of features[0] "
                      f"{shapes[0]}; got shape {shape}.")
    _check_map(fn, f"features[{l}]", shape, "(B, H, W, C)")
  _check_boxes_shape(fn, "boxes", boxes, ndim=2)
  r = jnp.shape(boxes)[0]
  _check_batch_indices(fn, batch_indices, r)
  output_size = _output_size(fn, output_size)
  _check_sampling(fn, sampling_ratio, max_samples)
  k_min, k_max = _pyramid_levels(scales, len(features))
  batch, channels = shapes[0][0], shapes[0][-1]
  boxes = _upcast(boxes)
  level = assign_levels(boxes, k_min, k_max, canonical_scale, canonical_level, eps)
  sizes = [h * w for _, h, w, _ in shapes]
  starts = np.concatenate([[0], np.cumsum([batch * s for s in sizes])[:-1]])
  per_level = lambda values, dtype: jnp.asarray(np.asarray(values), dtype)[level]  # noqa: E731
  b = jnp.clip(jnp.asarray(batch_indices), 0, batch - 1).astype(jnp.int32)
  base = per_level(starts, jnp.int32) + b * per_level(sizes, jnp.int32)
  table = jnp.concatenate([jnp.asarray(f).reshape(-1, channels) for f in features])
  return _pool(table, base, per_level([s[1] for s in shapes], jnp.int32),
               per_level([s[2] for s in shapes], jnp.int32), boxes,
               per_level(scales, boxes.dtype), output_size, sampling_ratio, bool(aligned),
               max_samples, _out_dtype(table))
