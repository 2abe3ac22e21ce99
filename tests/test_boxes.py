"""The box operations (m2m_jax.ops.boxes): against numpy loops written from torchvision's
definitions (torchvision itself does not load here) and hand-computed cases, under jit, and the
inputs they refuse."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m2m_jax.errors import DataError
from m2m_jax.ops import boxes as B


def _random_boxes(rng, n: int, scale: float = 20.0) -> np.ndarray:
  """(n, 4) float32 boxes with corners in [0, scale] and sizes in [0, scale / 2]."""
  xy = rng.uniform(0, scale, (n, 2))
  wh = rng.uniform(0, scale / 2, (n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def _grid_boxes(rng, n: int) -> np.ndarray:
  """(n, 4) float32 boxes on an integer grid: exact IoUs, many ties, some of zero area."""
  xy = rng.integers(0, 12, (n, 2))
  wh = rng.integers(0, 7, (n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


# --- conversions, areas, IoU ------------------------------------------------------------------

def test_conversions_round_trip_and_area():
  boxes = _random_boxes(np.random.default_rng(0), 12).reshape(3, 4, 4)
  centred = B.xyxy_to_cxcywh(boxes)
  assert centred.shape == (3, 4, 4) and centred.dtype == jnp.float32
  np.testing.assert_allclose(B.cxcywh_to_xyxy(centred), boxes, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(B.xyxy_to_cxcywh(np.array([1, 2, 5, 4])), [3, 3, 4, 2])
  np.testing.assert_allclose(B.cxcywh_to_xyxy(np.array([3., 3, 4, 2])), [1, 2, 5, 4])
  np.testing.assert_allclose(B.area(np.array([[1, 2, 5, 4], [0, 0, 0, 7]])), [8, 0])
  np.testing.assert_allclose(B.area(boxes), (boxes[..., 2] - boxes[..., 0])
                             * (boxes[..., 3] - boxes[..., 1]), rtol=1e-6)


def _numpy_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  out = np.zeros((len(a), len(b)))
  for i, (ax0, ay0, ax1, ay1) in enumerate(a.astype(np.float64)):
    for j, (bx0, by0, bx1, by1) in enumerate(b.astype(np.float64)):
      inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
      union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
      out[i, j] = inter / union if union > 0 else 0.0
  return out


def test_pairwise_iou_matches_numpy_and_a_hand_case():
  rng = np.random.default_rng(1)
  special = np.array([[2, 2, 6, 6], [2, 2, 6, 6],     # identical
                      [30, 30, 31, 32],               # disjoint from everything
                      [3, 3, 4, 5],                   # nested in the first
                      [5, 5, 5, 9], [7, 7, 7, 7]],    # zero area: a segment, a point
                     np.float32)
  a = np.concatenate([_random_boxes(rng, 7), special])
  b = np.concatenate([special, _random_boxes(rng, 5)])
  iou = jax.jit(B.pairwise_iou)(a, b)
  assert iou.shape == (13, 11) and iou.dtype == jnp.float32
  np.testing.assert_allclose(iou, _numpy_iou(a, b), rtol=1e-6, atol=1e-7)
  # [1,1,3,3] with [0,0,2,2]: 1 / (4 + 4 - 1), with [2,2,6,6]: 1 / (4 + 16 - 1); [3,3,4,5]
  # nested in [2,2,6,6]: 2 / 16; a point with anything: 0.
  hand = B.pairwise_iou(np.array([[0, 0, 2, 2], [2, 2, 6, 6]]),
                        np.array([[1, 1, 3, 3], [3, 3, 4, 5], [2, 2, 6, 6], [7, 7, 7, 7]]))
  np.testing.assert_allclose(hand, [[1 / 7, 0, 0, 0], [1 / 19, 2 / 16, 1, 0]], rtol=1e-6)
  np.testing.assert_array_equal(B.pairwise_iou(special[5:], special[5:]), [[0]])


def test_clip_to_image_clamps_x_to_width_and_y_to_height():
  np.testing.assert_array_equal(B.clip_to_image(np.array([-5., 3, 50, 70]), 60, 40),
                                [0, 3, 40, 60])
  boxes = np.tile(np.array([-1., -1, 100, 100], np.float32), (2, 3, 1))
  sizes = np.array([[10], [20]]), np.array([[30], [40]])  # per image of a padded batch
  clipped = jax.jit(B.clip_to_image)(boxes, *sizes)
  assert clipped.shape == (2, 3, 4)
  np.testing.assert_array_equal(clipped[:, 0], [[0, 0, 30, 10], [0, 0, 40, 20]])


# --- anchors ----------------------------------------------------------------------------------

def _numpy_anchors(feature_sizes, strides, sizes, aspect_ratios) -> np.ndarray:
  """torchvision's AnchorGenerator, one anchor at a time: cells row by row, then per cell the
  ratios, then the sizes."""
  out = []
  for (h, w), (sh, sw), level_sizes, ratios in zip(feature_sizes, strides, sizes, aspect_ratios):
    for i in range(h):
      for j in range(w):
        for r in ratios:
          for s in level_sizes:
            half_w, half_h = s / math.sqrt(r) / 2, s * math.sqrt(r) / 2
            out.append([j * sw - round(half_w), i * sh - round(half_h),
                        j * sw + round(half_w), i * sh + round(half_h)])
  return np.array(out, np.float32)


def test_anchors_hand_case():
  # Size 32: ratio 0.5 (h/w) -> w = 32 sqrt(2) = 45.25, h = 22.63 -> (-23, -11, 23, 11);
  # ratio 1 -> (-16, -16, 16, 16); ratio 2 -> (-11, -23, 11, 23); cells (x, y) = (0, 0),
  # (16, 0), (0, 16), (16, 16).
  base = np.array([[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]])
  expected = np.concatenate([base + [x, y, x, y] for y in (0, 16) for x in (0, 16)])
  np.testing.assert_array_equal(expected[3:6], [[-7, -11, 39, 11], [0, -16, 32, 16],
                                                [5, -23, 27, 23]])
  got = B.anchors([(2, 2)], [16], [(32,)], [(0.5, 1.0, 2.0)])
  assert got.shape == (12, 4) and got.dtype == jnp.float32
  np.testing.assert_array_equal(got, expected)


def test_anchors_match_torchvision_formula_on_two_levels():
  args = ([(3, 4), (2, 3)], [8, (16, 12)], [(32, 64), (128,)], [(0.5, 1.0, 2.0), (1.0, 2.0)])
  got = B.anchors(*args)
  assert got.shape == (3 * 4 * 6 + 2 * 3 * 2, 4)
  np.testing.assert_array_equal(got, _numpy_anchors(args[0], [(8, 8), (16, 12)], *args[2:]))
  # torchvision's FPN default: 5 levels of 3 anchors (a 64x64 image, strides 4 to 64).
  fpn = B.anchors([(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], [4, 8, 16, 32, 64],
                  [(32,), (64,), (128,), (256,), (512,)], [(0.5, 1.0, 2.0)] * 5)
  assert fpn.shape == (3 * (256 + 64 + 16 + 4 + 1), 4)
  np.testing.assert_array_equal(fpn[-3:], [[-362, -181, 362, 181], [-256, -256, 256, 256],
                                           [-181, -362, 181, 362]])


# --- box coder --------------------------------------------------------------------------------

def test_encode_decode_hand_case_and_clamp():
  # Proposal (0, 0, 10, 10): centre (5, 5), size 10 x 10. Reference (5, 5, 25, 15): centre
  # (15, 10), size 20 x 10 -> dx = 10 / 10, dy = 5 / 10, dw = log 2, dh = 0.
  proposal, reference = np.array([0., 0, 10, 10]), np.array([5., 5, 25, 15])
  np.testing.assert_allclose(B.encode(reference, proposal), [1, 0.5, math.log(2), 0], atol=1e-7)
  np.testing.assert_allclose(B.encode(reference, proposal, B.HEAD_WEIGHTS),
                             [10, 5, 5 * math.log(2), 0], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(B.decode(np.array([1., 0.5, math.log(2), 0]), proposal), reference,
                             rtol=1e-6)
  # A huge dw decodes as dw = log(1000 / 16): width 10 * 62.5 = 625 around the centre 5.
  np.testing.assert_allclose(B.decode(np.array([0., 0, 100, 0]), proposal),
                             [5 - 312.5, 0, 5 + 312.5, 10], rtol=1e-6)
  np.testing.assert_allclose(B.decode(np.array([0., 0, 100, 0]), proposal, clamp=math.log(2)),
                             [-5, 0, 15, 10], rtol=1e-6)
  assert B.BBOX_CLAMP == math.log(1000 / 16) and B.RPN_WEIGHTS == (1, 1, 1, 1)


@pytest.mark.parametrize("weights", [B.RPN_WEIGHTS, B.HEAD_WEIGHTS])
def test_encode_decode_round_trip(weights):
  rng = np.random.default_rng(2)
  proposals = _random_boxes(rng, 10) + np.float32([0, 0, 1, 1])  # widths >= 1
  targets = _random_boxes(rng, 10) + np.float32([0, 0, 1, 1])
  deltas = jax.jit(B.encode, static_argnums=2)(targets, proposals, weights)
  assert deltas.shape == (10, 4)
  np.testing.assert_allclose(B.decode(deltas, proposals, weights), targets, rtol=1e-5,
                             atol=1e-4)
  # K = 3 classes' deltas per box (N, K, 4) against (N, 1, 4) boxes.
  per_class = jnp.stack([deltas, deltas * 0, deltas], 1)
  decoded = B.decode(per_class, proposals[:, None], weights)
  assert decoded.shape == (10, 3, 4)
  np.testing.assert_allclose(decoded[:, 1], proposals, rtol=1e-6, atol=1e-5)


# --- matcher ----------------------------------------------------------------------------------

def _numpy_match(iou, gt_valid, high, low, allow_low_quality) -> np.ndarray:
  """torchvision's Matcher on the valid gt rows, their indices mapped back."""
  rows = np.flatnonzero(gt_valid)
  n = iou.shape[1]
  if len(rows) == 0:
    return np.full(n, -1)
  q = iou[rows]
  out = np.empty(n, int)
  for j in range(n):
    m = int(np.argmax(q[:, j]))  # the first of equal maxima
    best = q[m, j]
    out[j] = -1 if best < low else -2 if best < high else rows[m]
  if allow_low_quality:
    for g in range(len(rows)):
      for j in range(n):
        if q[g, j] == q[g].max():
          out[j] = rows[int(np.argmax(q[:, j]))]
  return out


@pytest.mark.parametrize("allow_low_quality", [False, True])
def test_match_against_numpy(allow_low_quality):
  rng = np.random.default_rng(3)
  matcher = jax.jit(B.match, static_argnums=(2, 3, 4))
  gt_valid = np.array([True, False, True, True, False])
  for seed, (high, low) in enumerate([(0.7, 0.3), (0.5, 0.5), (0.7, 0.3)]):
    iou = np.round(rng.uniform(0, 0.8, (5, 30)), 1).astype(np.float32)  # ties aplenty
    iou[1] = 1.0  # a padded row that would beat every valid one
    valid = gt_valid if seed < 2 else np.zeros(5, bool)
    got = matcher(iou, valid, high, low, allow_low_quality)
    assert got.dtype == jnp.int32 and got.shape == (30,)
    np.testing.assert_array_equal(got, _numpy_match(iou, valid, high, low, allow_low_quality))


def test_match_hand_cases():
  iou = np.array([[0.9, 0.4, 0.1, 0.2, 0.0],
                  [0.1, 0.6, 0.2, 0.6, 0.0],
                  [1.0, 1.0, 1.0, 1.0, 1.0]], np.float32)  # row 2 is padding
  valid = np.array([True, True, False])
  # Anchor 0: gt 0 at 0.9. Anchors 1, 3: best 0.6, between. Anchor 2: best 0.2, below. Anchor
  # 4: nothing.
  np.testing.assert_array_equal(B.match(iou, valid, 0.7, 0.3), [0, -2, -1, -2, -1])
  # gt 1's highest IoU is 0.6, at anchors 1 and 3 (a tie): both keep gt 1 though below 0.7.
  np.testing.assert_array_equal(B.match(iou, valid, 0.7, 0.3, True), [0, 1, -1, 1, -1])
  # torchvision's rule gives a nominated anchor ITS best gt: gt 0 nominates anchor 0 (0.5), whose
  # best is gt 1 (0.55).
  np.testing.assert_array_equal(B.match(np.array([[0.5, 0.1], [0.55, 0.9]]), np.ones(2, bool),
                                        0.7, 0.3, True), [1, 1])
  # A gt that overlaps no anchor (highest IoU 0) nominates every anchor, each getting its best
  # gt (the first of equals): torchvision's behaviour, kept.
  np.testing.assert_array_equal(B.match(np.array([[0.9, 0, 0], [0, 0, 0]]), np.ones(2, bool),
                                        0.7, 0.3, True), [0, 0, 0])
  np.testing.assert_array_equal(B.match(iou, np.zeros(3, bool), 0.7, 0.3, True), [-1] * 5)
  np.testing.assert_array_equal(B.match(np.zeros((0, 3)), np.zeros(0, bool), 0.7, 0.3), [-1] * 3)


# --- sampler ----------------------------------------------------------------------------------

def _labels(positives: int, negatives: int, ignored: int, positive_label: int = 1) -> np.ndarray:
  labels = np.array([positive_label] * positives + [0] * negatives + [-1] * ignored)
  return np.random.default_rng(positives).permutation(labels).astype(np.int32)


@pytest.mark.parametrize("counts, n, fraction, expected", [
    ((100, 150, 50), 64, 0.25, (16, 48)),    # enough of both: 16 positives, 48 negatives
    ((5, 150, 50), 64, 0.25, (5, 59)),       # few positives: the negatives fill the batch
    ((100, 10, 50), 64, 0.25, (16, 10)),     # few negatives: a smaller batch
    ((200, 80, 20), 256, 0.5, (128, 80)),    # the RPN's numbers
    ((0, 0, 40), 64, 0.25, (0, 0)),          # nothing to sample
])
def test_sample_balanced_counts(counts, n, fraction, expected):
  labels = _labels(*counts, positive_label=3 if n == 64 else 1)  # a class label is a positive
  sampled, positive = jax.jit(B.sample_balanced, static_argnums=(2, 3))(
      jax.random.key(0), labels, n, fraction)
  assert sampled.shape == positive.shape == labels.shape and sampled.dtype == jnp.bool_
  sampled, positive = np.asarray(sampled), np.asarray(positive)
  assert (positive.sum(), (sampled & ~positive).sum()) == expected
  assert np.all(labels[positive] >= 1) and np.all(labels[sampled & ~positive] == 0)
  assert not np.any(positive & ~sampled)


def test_sample_balanced_is_random_and_uniform():
  labels = _labels(100, 150, 50)
  sample = jax.jit(jax.vmap(functools.partial(B.sample_balanced, num_samples=64,
                                              positive_fraction=0.25), in_axes=(0, None)))
  sampled, positive = map(np.asarray, sample(jax.random.split(jax.random.key(1), 400), labels))
  assert not np.array_equal(sampled[0], sampled[1])
  assert np.array_equal(sampled[0], np.asarray(B.sample_balanced(
      jax.random.split(jax.random.key(1), 400)[0], labels, 64, 0.25)[0]))
  # Each positive is taken with probability 16/100, each negative with 48/150 (std about 0.02
  # over 400 draws).
  assert np.all(np.abs(positive.mean(0)[labels == 1] - 0.16) < 0.1)
  assert np.all(np.abs(sampled.mean(0)[labels == 0] - 0.32) < 0.12)


# --- NMS --------------------------------------------------------------------------------------

def _numpy_nms(boxes, scores, threshold, valid=None, classes=None) -> list[int]:
  """Greedy NMS as torchvision's CPU kernel, in float32: visit by descending score (ties: lower
  index first), keep what is not suppressed, suppress later boxes with IoU > threshold (and
  the same class, where classes are given)."""
  b = boxes.astype(np.float32)
  order = [i for i in sorted(range(len(b)), key=lambda i: (-scores[i], i))
           if valid is None or valid[i]]
  areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  suppressed, keep = set(), []
  for k, i in enumerate(order):
    if i in suppressed:
      continue
    keep.append(i)
    for j in order[k + 1:]:
      if classes is not None and classes[j] != classes[i]:
        continue
      w = max(np.float32(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
      h = max(np.float32(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
      union = areas[i] + areas[j] - w * h
      if union > 0 and w * h / union > np.float32(threshold):
        suppressed.add(j)
  return keep


def _kept(indices, valid) -> list[int]:
  valid = np.asarray(valid)
  assert np.all(valid[:valid.sum()]) and np.all(np.asarray(indices)[~valid] == 0)
  return np.asarray(indices)[valid].tolist()


NMS = jax.jit(B.nms, static_argnames="max_output")
BATCHED_NMS = jax.jit(B.batched_nms, static_argnames="max_output")


def test_nms_matches_numpy_greedy():
  for seed in range(3):
    rng = np.random.default_rng(10 + seed)
    boxes = _grid_boxes(rng, 40)
    scores = (rng.integers(0, 6, 40) / 5).astype(np.float32)  # ties of scores
    for threshold in (0.0, 0.3, 0.5, 0.7):
      expected = _numpy_nms(boxes, scores, threshold)
      indices, valid = NMS(boxes, scores, threshold, max_output=40)
      assert indices.dtype == jnp.int32 and indices.shape == valid.shape == (40,)
      assert _kept(indices, valid) == expected, (seed, threshold)
      few = NMS(boxes, scores, threshold, max_output=3)  # stops after 3
      assert _kept(*few) == expected[:3]


def test_nms_hand_cases_ties_edges_and_padding():
  # Boxes 0 and 1: IoU 1 / 2 exactly; box 2 duplicates box 3 with the same score.
  boxes = np.array([[0, 0, 2, 1], [0, 0, 1, 1], [5, 5, 7, 7], [5, 5, 7, 7]], np.float32)
  scores = np.array([0.9, 0.8, 0.5, 0.5], np.float32)
  indices, valid = NMS(boxes, scores, 0.5, max_output=6)  # IoU = threshold: kept
  np.testing.assert_array_equal(indices, [0, 1, 2, 0, 0, 0])
  np.testing.assert_array_equal(valid, [True, True, True, False, False, False])
  assert _kept(*NMS(boxes, scores, 0.49, max_output=6)) == [0, 2]  # the lower index of a tie
  # Padded boxes (valid_in False) are never kept and suppress nothing, whatever their score.
  padded = np.concatenate([np.array([[0, 0, 2, 1]], np.float32), boxes])
  padded_scores = np.concatenate([np.float32([5.0]), scores])
  valid_in = np.array([False, True, True, True, True])
  assert _kept(*NMS(padded, padded_scores, 0.49, max_output=6, valid_in=valid_in)) == [1, 3]
  assert _kept(*NMS(padded, padded_scores, 0.49, max_output=6,
                    valid_in=np.zeros(5, bool))) == []


def test_nms_valid_in_against_numpy():
  rng = np.random.default_rng(4)
  boxes, scores = _grid_boxes(rng, 40), rng.uniform(size=40).astype(np.float32)
  valid_in = rng.uniform(size=40) < 0.7
  got = NMS(boxes, scores, 0.3, max_output=40, valid_in=valid_in)
  assert _kept(*got) == _numpy_nms(boxes, scores, 0.3, valid=valid_in)


def test_batched_nms_matches_per_class_numpy():
  for seed in range(2):
    rng = np.random.default_rng(20 + seed)
    boxes = _grid_boxes(rng, 40) - 6  # negative coordinates too
    scores = (rng.integers(0, 8, 40) / 7).astype(np.float32)
    classes = rng.integers(0, 3, 40).astype(np.int32)
    per_class = [i for c in range(3) for i in np.flatnonzero(classes == c)[
        _numpy_nms(boxes[classes == c], scores[classes == c], 0.5)]]
    expected = sorted(per_class, key=lambda i: (-scores[i], i))
    assert expected == _numpy_nms(boxes, scores, 0.5, classes=classes)
    assert _kept(*BATCHED_NMS(boxes, scores, classes, 0.5, max_output=40)) == expected
  # The same box in two classes: both kept.
  same = np.array([[0, 0, 4, 4]] * 2, np.float32)
  assert _kept(*B.batched_nms(same, np.float32([0.5, 0.9]), np.array([1, 7]), 0.5, 4)) == [1, 0]


# --- bad input --------------------------------------------------------------------------------

def test_bad_input_is_refused_in_one_sentence():
  four, three = np.zeros((5, 4), np.float32), np.zeros((5, 3), np.float32)
  with pytest.raises(DataError, match=r"pairwise_iou: b must hold boxes on its last axis, "
                                      r"\(\.\.\., 4\) = \(x0, y0, x1, y1\); got shape \(5, 3\)\."):
    jax.jit(B.pairwise_iou)(four, three)
  with pytest.raises(DataError, match=r"pairwise_iou: a must be 2-D \(N, 4\) boxes; got shape "
                                      r"\(4,\)\."):
    B.pairwise_iou(four[0], four)
  with pytest.raises(DataError, match=r"nms: scores must have shape \(5,\), one entry a box; got "
                                      r"shape \(4,\)\."):
    NMS(four, np.zeros(4), 0.5, max_output=3)
  with pytest.raises(DataError, match=r"nms: max_output must be a Python int >= 1 \(it fixes an "
                                      r"output's shape\); got 0\."):
    B.nms(four, np.zeros(5), 0.5, 0)
  with pytest.raises(DataError, match=r"batched_nms: classes must have shape \(5,\)"):
    BATCHED_NMS(four, np.zeros(5), np.zeros(6, int), 0.5, max_output=3)
  with pytest.raises(DataError, match=r"decode: weights must be 4 numbers \(wx, wy, ww, wh\); "
                                      r"got \(1, 1, 1\)\."):
    B.decode(four, four, (1, 1, 1))
  with pytest.raises(DataError, match=r"encode: proposals must hold boxes"):
    B.encode(four, three)
  with pytest.raises(DataError, match=r"match: low must be <= high; got low=0\.7 and high=0\.3\."):
    B.match(np.zeros((2, 3)), np.ones(2, bool), 0.3, 0.7)
  with pytest.raises(DataError, match=r"match: gt_valid must have shape \(2,\)"):
    jax.jit(B.match, static_argnums=(2, 3))(np.zeros((2, 3)), np.ones(3, bool), 0.7, 0.3)
  with pytest.raises(DataError, match=r"sample_balanced: positive_fraction must be in \[0, 1\]; "
                                      r"got 1\.5\."):
    B.sample_balanced(jax.random.key(0), np.zeros(4, int), 8, 1.5)
  with pytest.raises(DataError, match=r"anchors: feature_sizes, strides, sizes and aspect_ratios "
                                      r"need one entry a level each \(at least one\); got 2, 2, 1 "
                                      r"and 1\."):
    B.anchors([(2, 2), (1, 1)], [8, 16], [(32,)], [(1.0,)])
  with pytest.raises(DataError, match=r"anchors: each stride must be a positive int or a pair of "
                                      r"them; got 0\."):
    B.anchors([(2, 2)], [0], [(32,)], [(1.0,)])


def test_check_boxes_names_the_first_offender():
  good = np.array([[0, 0, 2, 3], [1, 1, 1, 1]], np.float32)
  B.check_boxes(good, nonnegative=True)
  with pytest.raises(DataError, match=r"check_boxes: boxes\[1\] = \(5, 1, 3, 4\) has x1 < x0; "
                                      r"boxes must be \(x0, y0, x1, y1\) pixels with x0 <= x1 and "
                                      r"y0 <= y1\."):
    B.check_boxes([[0, 0, 1, 1], [5, 1, 3, 4], [0, 4, 1, 2]])
  with pytest.raises(DataError, match=r"boxes\[0, 2\] = \(0, 4, 1, 2\) has y1 < y0"):
    B.check_boxes(np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [0, 4, 1, 2]]]))
  with pytest.raises(DataError, match=r"gt\[1\] = \(0, nan, 1, 1\) is not finite \(NaN or inf\)"):
    B.check_boxes(np.array([[0, 0, 1, 1], [0, np.nan, 1, 1]]), name="gt")
  with pytest.raises(DataError, match=r"boxes\[0\] = \(-1, 0, 1, 1\) has a negative coordinate; "
                                      r".* and no coordinate below 0\."):
    B.check_boxes([[-1, 0, 1, 1]], nonnegative=True)
  B.check_boxes([[-1, 0, 1, 1]])  # negative coordinates are fine unless asked
  B.check_boxes([[0, 0, 1, 1], [np.nan, 0, 0, 0]], valid=[True, False])  # padding is not checked
  with pytest.raises(DataError, match=r"check_boxes: valid must have the shape \(2,\)"):
    B.check_boxes(good, valid=[True])
