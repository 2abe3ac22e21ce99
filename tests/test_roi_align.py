"""RoIAlign (m2m_jax.ops.roi_align): against a numpy loop written from torchvision's CPU kernel
(torchvision itself does not load here), hand cases, its gradient, level assignment, the
pyramid form, under jit, and the inputs it refuses."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m2m_jax.errors import DataError
from m2m_jax.ops import roi_align as RA

F32 = np.float32
# One compiled program a shape (eager dispatch compiles every jnp op on its own: slower here).
roi_align = jax.jit(RA.roi_align, static_argnames=("output_size", "sampling_ratio", "aligned",
                                                   "max_samples"))
multiscale = jax.jit(RA.multiscale_roi_align, static_argnames=(
    "output_size", "scales", "sampling_ratio", "aligned", "max_samples"))


def _samples(shape_hw, box, scale, output_size, sampling_ratio, aligned, cap=None):
  """torchvision's kernel for one box, one sample at a time, in float32: yields (i, j, y, x,
  weight) per neighbour read, the weight including the 1 / count of the mean. ``cap`` caps
  the adaptive count (what ``max_samples`` does)."""
  height, width = shape_hw
  ph, pw = output_size
  offset = F32(0.5) if aligned else F32(0)
  x0, y0, x1, y1 = (F32(c) * F32(scale) - offset for c in box)
  roi_w, roi_h = x1 - x0, y1 - y0
  if not aligned:
    roi_w, roi_h = max(roi_w, F32(1)), max(roi_h, F32(1))
  bin_h, bin_w = roi_h / F32(ph), roi_w / F32(pw)
  grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / F32(ph)))
  grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / F32(pw)))
  if cap is not None and sampling_ratio <= 0:
    grid_h, grid_w = min(grid_h, cap), min(grid_w, cap)
  count = F32(max(grid_h * grid_w, 1))
  for i in range(ph):
    for j in range(pw):
      for iy in range(grid_h):
        y = y0 + F32(i) * bin_h + F32(iy + 0.5) * bin_h / F32(grid_h)
        for ix in range(grid_w):
          x = x0 + F32(j) * bin_w + F32(ix + 0.5) * bin_w / F32(grid_w)
          if not (-1 <= y <= height and -1 <= x <= width):
            continue
          yy, xx = max(y, F32(0)), max(x, F32(0))
          y_low, x_low = int(yy), int(xx)
          if y_low >= height - 1:
            y_low = y_high = height - 1
            yy = F32(y_low)
          else:
            y_high = y_low + 1
          if x_low >= width - 1:
            x_low = x_high = width - 1
            xx = F32(x_low)
          else:
            x_high = x_low + 1
          ly, lx = yy - F32(y_low), xx - F32(x_low)
          hy, hx = F32(1) - ly, F32(1) - lx
          for ya, xa, wgt in ((y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
                              (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)):
            yield i, j, ya, xa, wgt / count


def _numpy_roi_align(features, boxes, batch, output_size, scale=1.0, sampling_ratio=-1,
                     aligned=False, cap=None):
  """(B, H, W, C) features, (R, 4) boxes, (R,) batch -> (R, ph, pw, C) float64."""
  out = np.zeros((len(boxes),) + tuple(output_size) + features.shape[-1:])
  for r, (box, b) in enumerate(zip(boxes, batch)):
    for i, j, y, x, w in _samples(features.shape[1:3], box, scale, output_size, sampling_ratio,
                                  aligned, cap):
      out[r, i, j] += w * features[b, y, x].astype(np.float64)
  return out


def _numpy_adjoint(grad_out, shape, boxes, batch, output_size, scale, sampling_ratio, aligned,
                   cap=None):
  """torchvision's backward kernel: scatter each bin's gradient by the forward's weights."""
  grad = np.zeros(shape)
  for r, (box, b) in enumerate(zip(boxes, batch)):
    for i, j, y, x, w in _samples(shape[1:3], box, scale, output_size, sampling_ratio, aligned,
                                  cap):
      grad[b, y, x] += w * grad_out[r, i, j]
  return grad


def _boxes(rng, n: int, size: float) -> np.ndarray:
  """(n, 4) float32 boxes: random ones, some partly or wholly outside [0, size]^2, tiny and
  empty ones."""
  xy = rng.uniform(-0.3 * size, size, (n, 2))
  wh = rng.uniform(0, 0.9 * size, (n, 2))
  special = [[-size, -size, size * 2, size * 2],   # the whole map and far beyond
             [size * 1.5, 2, size * 1.6, 5],       # wholly outside (right)
             [3.2, 4.1, 3.3, 4.15],                # tiny
             [5, 5, 5, 5],                         # empty
             [0, 0, size, size]]
  return np.concatenate([np.concatenate([xy, xy + wh], 1), special]).astype(F32)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_roi_align_matches_numpy_kernel(aligned, sampling_ratio):
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 9, 11, 3)).astype(F32)
  boxes = _boxes(rng, 9, 40.0)
  batch = rng.integers(0, 2, len(boxes))
  # Scale 1/4: the random boxes are up to 9 map pixels, so on a 3 x 2 grid their adaptive counts
  # ceil(size / 3) and ceil(size / 2) range over 1 .. 5, and the biggest box's reach 15;
  # max_samples 15 makes every one of them exact.
  args = dict(spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=aligned)
  got = roi_align(features, boxes, (3, 2), batch_indices=batch, max_samples=15, **args)
  assert got.shape == (len(boxes), 3, 2, 3) and got.dtype == jnp.float32
  want = _numpy_roi_align(features, boxes, batch, (3, 2), 0.25, sampling_ratio, aligned)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.abs(want[-4]).max() == 0  # the box wholly outside pools zeros
  if sampling_ratio == 0:  # the adaptive counts really differ from box to box
    counts = {math.ceil(max(w, 0 if aligned else 1) / 2)
              for w in (boxes[:, 2] - boxes[:, 0]) * 0.25}
    assert {1, 2, 3, 4, 15} <= counts


def test_adaptive_count_above_max_samples_is_capped():
  rng = np.random.default_rng(1)
  features = rng.normal(size=(1, 16, 16, 2)).astype(F32)
  boxes = np.array([[0.5, 1, 15.5, 14], [2, 2, 4, 5]], F32)  # counts 8 x 8 and 1 x 2 at 2 x 2
  got = roi_align(features, boxes, 2, batch_indices=np.zeros(2, int), sampling_ratio=0,
                     max_samples=3)
  capped = _numpy_roi_align(features, boxes, [0, 0], (2, 2), cap=3)
  exact = _numpy_roi_align(features, boxes, [0, 0], (2, 2))
  np.testing.assert_allclose(got, capped, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[1], exact[1], rtol=1e-5, atol=1e-6)  # within the cap: exact
  assert np.abs(got[0] - exact[0]).max() > 1e-3  # a coarser estimate beyond it


def test_hand_cases_constant_map_and_linear_ramp():
  # A constant map gives that constant in every bin whose samples lie in [-1, H] x [-1, W].
  constant = np.full((6, 8, 2), 3.5, F32)
  boxes = np.array([[0, 0, 8, 6], [-0.4, -0.4, 8.4, 6.2], [1.3, 2.2, 1.4, 2.25]], F32)
  for aligned in (False, True):
    got = roi_align(constant, boxes, (2, 3), sampling_ratio=0, aligned=aligned)
    np.testing.assert_allclose(got, 3.5, rtol=1e-6)
  # A ramp f(y, x) = 2 x - 3 y + 1 (value at pixel centres, aligned): a bin's samples are
  # symmetric about its centre, so their bilinear mean is the ramp at the bin centre.
  y, x = np.meshgrid(np.arange(10), np.arange(12), indexing="ij")
  ramp = (2 * x - 3 * y + 1).astype(F32)[..., None]
  box = np.array([[2.0, 1.5, 10.0, 9.5]], F32)  # 8 x 8 pixels -> 4 x 2 bins of 2 x 4
  got = roi_align(ramp, box, (4, 2), sampling_ratio=2, aligned=True)[0, ..., 0]
  cy = 1.5 - 0.5 + (np.arange(4) + 0.5) * 2  # bin centres in pixel-index coordinates
  cx = 2.0 - 0.5 + (np.arange(2) + 0.5) * 4
  np.testing.assert_allclose(got, 2 * cx[None, :] - 3 * cy[:, None] + 1, rtol=1e-6, atol=1e-5)
  # Centres x = 3.5, 7.5 and y = 2, 4, 6, 8: 2 * 3.5 - 3 * 2 + 1 = 2, and so on.
  np.testing.assert_allclose(got, [[2, 10], [-4, 4], [-10, -2], [-16, -8]], atol=1e-5)


def test_border_rules_by_hand():
  # One row of 4 pixels [1, 2, 3, 4]; 1 x 1 output, one sample at the box centre.
  row = np.array([[1, 2, 3, 4]], F32)[..., None]

  def pool(x0: float, x1: float) -> float:
    return float(roi_align(row, np.array([[x0, 0, x1, 1]], F32), 1, sampling_ratio=1)[0, 0, 0, 0])

  assert pool(1, 2) == pytest.approx(2.5)      # x = 1.5: halfway between pixels 1 and 2
  assert pool(-1.6, -0.6) == 0                 # x = -1.1 < -1: zero
  assert pool(-1.5, -0.5) == pytest.approx(1)  # x = -1: clamped to pixel 0
  assert pool(3.2, 4.2) == pytest.approx(4)    # x = 3.7 >= W - 1: the last pixel alone
  assert pool(4.5, 5.5) == 0                   # x = 5 > W: zero
  assert pool(3.5, 4.5) == pytest.approx(4)    # x = 4 = W: still the last pixel


def test_jit_batched_and_single_map_agree():
  rng = np.random.default_rng(2)
  features = rng.normal(size=(3, 7, 5, 4)).astype(F32)
  boxes = _boxes(rng, 6, 20.0)
  batch = np.array([2, 0, 1, 2, 1, 0, 0, 1, 2, 2, 0])
  fn = jax.jit(functools.partial(RA.roi_align, output_size=(2, 3), spatial_scale=0.5,
                                 sampling_ratio=0, aligned=True))
  got = fn(features, boxes, batch_indices=batch)
  # max_samples 4 (the default): the big box's counts, 15 and 10, are capped at 4.
  want = _numpy_roi_align(features, boxes, batch, (2, 3), 0.5, 0, True, cap=4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  single = roi_align(features[1], boxes, (2, 3), 0.5, 0, True)
  np.testing.assert_allclose(single[batch == 1], got[batch == 1], rtol=1e-6, atol=1e-6)
  empty = roi_align(features, np.zeros((0, 4), F32), 2, batch_indices=np.zeros(0, int))
  assert empty.shape == (0, 2, 2, 4)
  half = roi_align(features.astype(jnp.bfloat16), boxes, 2, batch_indices=batch)
  assert half.dtype == jnp.bfloat16


@pytest.mark.parametrize("aligned", [False, True])
def test_gradient_is_torchvisions_backward(aligned):
  rng = np.random.default_rng(3)
  features = rng.normal(size=(2, 6, 7, 2)).astype(F32)
  boxes = _boxes(rng, 4, 14.0)
  batch = rng.integers(0, 2, len(boxes))
  grad_out = rng.normal(size=(len(boxes), 2, 3, 2)).astype(F32)
  loss = lambda f: jnp.sum(roi_align(f, boxes, (2, 3), 0.5, 0, aligned,  # noqa: E731
                                        batch_indices=batch) * grad_out)
  grad = jax.jit(jax.grad(loss))(features)
  assert np.isfinite(grad).all() and np.abs(grad).max() > 0
  want = _numpy_adjoint(grad_out, features.shape, boxes, batch, (2, 3), 0.5, 0, aligned, cap=4)
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-5)
  # A finite difference at a few pixels (the map is linear in the features: exact up to
  # rounding).
  for index in [(0, 2, 3, 0), (1, 0, 0, 1), (1, 5, 6, 0)]:
    bump = np.zeros_like(features)
    bump[index] = 0.5
    diff = (loss(features + bump) - loss(features - bump)) / 1.0
    assert float(diff) == pytest.approx(float(grad[index]), abs=1e-4)


def test_assign_levels_hand_boxes_and_formula():
  side = np.array([224, 112, 448, 1, 0, 223, 225, 56, 55, 10_000, 896], F32)
  boxes = np.stack([np.zeros_like(side), np.zeros_like(side) + 5, side, side + 5], 1)
  got = RA.assign_levels(boxes)
  assert got.dtype == jnp.int32
  # Levels 4, 3, 5, k_min (tiny, empty), 3 (just under 224), 4, 2, k_min (55 < 56), k_max, 5.
  np.testing.assert_array_equal(got + 2, [4, 3, 5, 2, 2, 3, 4, 2, 2, 5, 5])
  np.testing.assert_array_equal(RA.assign_levels(boxes, 3, 6) + 3, [4, 3, 5, 3, 3, 3, 4, 3, 3,
                                                                    6, 6])
  rng = np.random.default_rng(4)
  wh = rng.uniform(1, 900, (50, 2)).astype(F32)
  boxes = np.concatenate([np.zeros_like(wh), wh], 1)
  s = np.sqrt(wh[:, 0] * wh[:, 1])
  want = np.clip(np.floor(4 + np.log2(s / 224) + 1e-6), 2, 5) - 2
  np.testing.assert_array_equal(jax.jit(RA.assign_levels)(boxes), want)
  assert int(RA.assign_levels(np.array([5., 5, 1, 1]))) == 0  # flipped: negative area -> k_min


def test_multiscale_equals_roi_align_on_each_boxs_level():
  rng = np.random.default_rng(5)
  scales = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
  features = [rng.normal(size=(2, 128 // s, 96 // s, 3)).astype(F32) for s in (4, 8, 16, 32)]
  centre = rng.uniform(0, 100, (12, 2))
  side = np.array([8, 40, 90, 100, 130, 180, 230, 300, 460, 500, 20, 260])[:, None]
  boxes = np.concatenate([centre - side / 2, centre + side / 2], 1).astype(F32)
  batch = rng.integers(0, 2, len(boxes))
  fn = functools.partial(multiscale, output_size=3, scales=scales, sampling_ratio=2)
  got = fn(features, boxes, batch)
  level = np.asarray(RA.assign_levels(boxes))
  assert set(level) == {0, 1, 2, 3}
  for l, scale in enumerate(scales):
    alone = roi_align(features[l], boxes, 3, scale, 2, batch_indices=batch)
    np.testing.assert_allclose(got[level == l], alone[level == l], rtol=1e-5, atol=1e-5)
  # One level: every box pooled from it, as torchvision's single-level path.
  only = multiscale(features[2:3], boxes, batch, 3, scales[2:3], 0, aligned=True)
  np.testing.assert_allclose(only, roi_align(features[2], boxes, 3, 1 / 16, 0, True,
                                                batch_indices=batch), rtol=1e-6, atol=1e-6)
  grad = jax.grad(lambda fs: fn(fs, boxes, batch).sum())(features)
  assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in grad)


def test_bad_input_refused_in_one_sentence():
  f3, f4 = np.zeros((5, 6, 2), F32), np.zeros((2, 5, 6, 2), F32)
  box, one = np.zeros((1, 4), F32), np.zeros(1, int)
  cases = [
      (lambda: roi_align(np.zeros((5, 6)), box, 2), "features must be (H, W, C) or"),
      (lambda: roi_align(np.zeros((1, 0, 6, 2)), box, 2, batch_indices=one), "height and width"),
      (lambda: roi_align(f3, np.zeros((1, 5)), 2), "(..., 4)"),
      (lambda: roi_align(f3, np.zeros(4), 2), "must be 2-D"),
      (lambda: roi_align(f4, box, 2), "need batch_indices"),
      (lambda: roi_align(f3, box, 2, batch_indices=one), "leave it None"),
      (lambda: roi_align(f4, box, 2, batch_indices=np.zeros(2, int)), "shape (1,)"),
      (lambda: roi_align(f4, box, 2, batch_indices=np.zeros(1)), "must be integers"),
      (lambda: roi_align(f3, box, 0), "output_size must be an int >= 1"),
      (lambda: roi_align(f3, box, (2, 2, 2)), "output_size"),
      (lambda: roi_align(f3, box, 2, sampling_ratio=1.5), "sampling_ratio must be"),
      (lambda: roi_align(f3, box, 2, max_samples=0), "max_samples must be"),
      (lambda: RA.assign_levels(box, 5, 2), "k_min <= k_max"),
      (lambda: RA.multiscale_roi_align([f4, f4[..., :1]], box, one, 2, (1 / 4, 1 / 8), 2),
       "features[1] must be (B, H, W, C)"),
      (lambda: RA.multiscale_roi_align(f4, box, one, 2, (1 / 4,), 2), "non-empty sequence"),
      (lambda: RA.multiscale_roi_align([f4, f4], box, one, 2, (1 / 4, 1 / 16), 2),
       "powers of 2 each half"),
      (lambda: RA.multiscale_roi_align([f4, f4], box, one, 2, (1 / 4,), 2), "one scale a level"),
      (lambda: RA.multiscale_roi_align([f4], box, np.zeros(3, int), 2, (1 / 4,), 2),
       "shape (1,)"),
  ]
  for call, words in cases:
    with pytest.raises(DataError) as info:
      call()
    message = str(info.value)
    assert words in message, message
    assert message.count(". ") == 0 and message.endswith("."), message
  # Under jit the same static checks fire while tracing.
  with pytest.raises(DataError, match="shape \\(1,\\)"):
    jax.jit(lambda f, b, i: RA.roi_align(f, b, 2, batch_indices=i))(f4, box, np.zeros(3, int))
  with pytest.raises(DataError, match="features must be"):
    jax.jit(lambda f, b: RA.roi_align(f, b, 2))(np.zeros((2, 3, 4, 5, 6)), box)
