"""Detection metrics (m2m_jax.ops.detection_metrics): COCO's against pycocotools' COCOeval on
random splits and hand cases, VOC's against a loop written from the devkit's definition, and the
inputs they refuse."""

import contextlib
import io

import jax.numpy as jnp
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from m2m_jax.errors import DataError
from m2m_jax.ops import detection_metrics as DM

NAMES = ("pred_boxes", "pred_scores", "pred_labels", "pred_valid", "gt_boxes", "gt_labels",
         "gt_valid")


def _random_split(seed: int, n_images: int = 15, max_gt: int = 6, max_pred: int = 12,
                  num_classes: int = 5, gt_classes: int = 4, dtype=np.float64) -> dict:
  """Padded predictions and ground truth of a random split: predictions jittered around the
  ground truth (mostly of its class, scored higher on average) and scattered ones, so APs are
  mid-range; scores rounded to tenths (many ties); classes >= gt_classes never in the ground
  truth; images without ground truth; padding holding garbage that must be ignored."""
  rng = np.random.default_rng(seed)

  def boxes(shape):
    xy = rng.uniform(0, 80, shape + (2,))
    return np.concatenate([xy, xy + rng.uniform(4, 40, shape + (2,))], -1)

  n, k = n_images, max_pred
  gt = boxes((n, max_gt))
  gt_valid = rng.random((n, max_gt)) < rng.uniform(-0.2, 1, (n, 1))
  gt_labels = rng.integers(0, gt_classes, (n, max_gt))
  source = rng.integers(0, max_gt, (n, k))
  near = np.take_along_axis(gt_valid, source, 1) & (rng.random((n, k)) < 0.75)
  base = np.take_along_axis(gt, source[..., None], 1)
  jitter = base + rng.normal(0, 0.12, base.shape) * np.tile(base[..., 2:] - base[..., :2], 2)
  jitter = np.concatenate([np.minimum(jitter[..., :2], jitter[..., 2:]),
                           np.maximum(jitter[..., :2], jitter[..., 2:])], -1)
  pred = np.where(near[..., None], jitter, boxes((n, k)))
  labels = np.where(near & (rng.random((n, k)) < 0.9), np.take_along_axis(gt_labels, source, 1),
                    rng.integers(0, num_classes, (n, k)))
  scores = np.round(rng.random((n, k)) + 0.3 * near, 1)
  valid = rng.random((n, k)) < 0.85
  return {"pred_boxes": np.where(valid[..., None], pred, np.nan).astype(dtype),
          "pred_scores": np.where(valid, scores, np.nan),
          "pred_labels": np.where(valid, labels, 99), "pred_valid": valid,
          "gt_boxes": np.where(gt_valid[..., None], gt, [5., 5, 1, 1]).astype(dtype),
          "gt_labels": np.where(gt_valid, gt_labels, -1), "gt_valid": gt_valid,
          "num_classes": num_classes}


def _cocoeval(split: dict):
  """pycocotools' COCOeval(iouType='bbox') on the same split -> (stats (12,), precision
  (T, R, C), recall (T, C)) at area 'all' and maxDets 100. Image, annotation and category ids
  start at 1: COCOeval records a match by the matched annotation's id, so an id 0 would read
  as no match."""
  n = len(split["pred_boxes"])
  gt, dt = [], []
  for (i, j), valid in np.ndenumerate(split["gt_valid"]):
    if valid:
      x0, y0, x1, y1 = (float(v) for v in split["gt_boxes"][i, j])
      gt.append({"id": len(gt) + 1, "image_id": i + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                 "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                 "category_id": int(split["gt_labels"][i, j]) + 1})
  for (i, k), valid in np.ndenumerate(split["pred_valid"]):
    if valid:
      x0, y0, x1, y1 = (float(v) for v in split["pred_boxes"][i, k])
      dt.append({"image_id": i + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                 "score": float(split["pred_scores"][i, k]),
                 "category_id": int(split["pred_labels"][i, k]) + 1})
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = {"images": [{"id": i + 1} for i in range(n)], "annotations": gt,
                       "categories": [{"id": c + 1, "name": str(c)}
                                      for c in range(split["num_classes"])]}
    coco_gt.createIndex()
    evaluation = COCOeval(coco_gt, coco_gt.loadRes(dt), iouType="bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
  return (evaluation.stats, evaluation.eval["precision"][:, :, :, 0, -1],
          evaluation.eval["recall"][:, :, 0, -1])


def _args(split: dict) -> list:
  return [split[name] for name in NAMES] + [split["num_classes"]]


def _assert_like_cocoeval(split: dict, atol: float = 1e-12) -> dict:
  stats, precision, recall = _cocoeval(split)
  ours = DM.mean_average_precision(*_args(split))
  np.testing.assert_allclose([ours["map"], ours["map50"], ours["map75"], ours["mar100"]],
                             stats[[0, 1, 2, 8]], rtol=0, atol=atol)
  coco = DM.coco_evaluate(*_args(split))
  np.testing.assert_allclose(coco.precision, precision, rtol=0, atol=atol)
  np.testing.assert_allclose(coco.recall, recall, rtol=0, atol=atol)
  return ours


# --- COCO against pycocotools -----------------------------------------------------------------

@pytest.mark.parametrize("seed, n_images, max_pred, num_classes, gt_classes, dtype", [
    (0, 15, 12, 5, 4, np.float64), (1, 20, 8, 3, 3, np.float64), (2, 10, 20, 6, 2, np.float64),
    (3, 25, 10, 4, 4, np.float32), (4, 1, 12, 2, 1, np.float64)])
def test_coco_matches_pycocotools_on_random_splits(seed, n_images, max_pred, num_classes,
                                                   gt_classes, dtype):
  split = _random_split(seed, n_images, max_pred=max_pred, num_classes=num_classes,
                        gt_classes=gt_classes, dtype=dtype)
  ours = _assert_like_cocoeval(split)
  assert 0.1 < ours["map"] < 0.9 and 0.1 < ours["map50"] < 0.95 and 0.1 < ours["mar100"] < 1
  coco = DM.coco_evaluate(*_args(split))
  absent = np.arange(num_classes) >= gt_classes
  assert (coco.ap_per_class[absent] == -1).all() and (coco.ap_per_class[~absent] >= 0).all()
  assert ours["map"] == pytest.approx(coco.ap_per_class[~absent].mean(), abs=1e-12)
  assert ours["map50"] == pytest.approx(coco.ap50_per_class[~absent].mean(), abs=1e-12)


def test_coco_keeps_the_top_100_predictions_of_each_image_and_class():
  # 150 predictions of each class in each image: COCOeval's maxDets cuts each (image, class).
  split = _random_split(5, n_images=3, max_gt=8, max_pred=300, num_classes=2, gt_classes=2)
  split["pred_valid"] = np.ones_like(split["pred_valid"])
  split["pred_scores"] = np.round(np.random.default_rng(5).random((3, 300)), 2)
  split["pred_labels"] = np.tile(np.arange(300) % 2, (3, 1))
  split["pred_boxes"] = np.nan_to_num(split["pred_boxes"], nan=1.)
  ours = _assert_like_cocoeval(split)
  uncapped = DM.mean_average_precision(*_args(split), max_detections=1000)
  assert uncapped["mar100"] > ours["mar100"]


def _one_prediction(box) -> dict:
  """One image, one object [0, 0, 10, 10] of class 0 and one prediction of it."""
  return dict(pred_boxes=np.array([[box]], float), pred_scores=np.ones((1, 1)),
              pred_labels=np.zeros((1, 1), int), pred_valid=np.ones((1, 1), bool),
              gt_boxes=np.array([[[0., 0, 10, 10]]]), gt_labels=np.zeros((1, 1), int),
              gt_valid=np.ones((1, 1), bool), num_classes=1)


def test_coco_hand_cases():
  perfect = _assert_like_cocoeval(_one_prediction([0, 0, 10, 10]))
  # COCOeval's precision tp / (tp + fp + eps) is 1 - 2.2e-16 here, not 1.
  assert perfect == pytest.approx({"map": 1, "map50": 1, "map75": 1, "mar100": 1,
                                   "voc_ap50": 1, "voc07_ap50": 1}, abs=1e-12)
  # An IoU of width / 10 matches at each threshold t <= IoU (COCOeval's ``IoU >= t``: an IoU
  # equal to a threshold matches, so IoU 0.6 passes 0.5, 0.55 and 0.6), so that
  # map = mar100 = (the thresholds passed) / 10; VOC counts IoU 0.5 a hit too (the devkit's >=).
  for width, passed in [(5, 1), (5.8, 2), (6, 3), (7, 5), (7.5, 6), (9, 9), (9.5, 10)]:
    ours = _assert_like_cocoeval(_one_prediction([0, 0, width, 10]))
    assert ours == pytest.approx({"map": passed / 10, "map50": 1, "map75": float(passed >= 6),
                                  "mar100": passed / 10, "voc_ap50": 1, "voc07_ap50": 1},
                                 abs=1e-12)
  miss = DM.mean_average_precision(*_args(_one_prediction([0, 0, 4.9, 10])))
  assert miss == {"map": 0, "map50": 0, "map75": 0, "mar100": 0, "voc_ap50": 0,
                  "voc07_ap50": 0}


def test_coco_ties_in_iou_go_to_the_ground_truth_listed_last():
  # The first prediction overlaps A and B by the same 90 / 110; the second overlaps A by
  # 80 / 140 = 0.571 and B by 60 / 160. COCOeval gives the first B (the later one), so the second
  # takes A up to the threshold 0.55: AP 1 at 0.5 and 0.55, 51/101 at 0.6 .. 0.8 (recall 0.5 at
  # precision 1), 0 above. VOC's devkit gives the first A, so the second is a duplicate: 0.5,
  # and in 11 points precision 1 at recall 0 .. 0.5 and nothing above: 6 / 11.
  split = dict(pred_boxes=np.array([[[1., 0, 11, 10], [-4, 0, 8, 10]]]),
               pred_scores=np.array([[0.9, 0.8]]), pred_labels=np.zeros((1, 2), int),
               pred_valid=np.ones((1, 2), bool),
               gt_boxes=np.array([[[0., 0, 10, 10], [2, 0, 12, 10]]]),
               gt_labels=np.zeros((1, 2), int), gt_valid=np.ones((1, 2), bool), num_classes=1)
  ours = _assert_like_cocoeval(split)
  assert ours == pytest.approx({"map": (2 + 5 * 51 / 101) / 10, "map50": 1, "map75": 51 / 101,
                                "mar100": (2 + 5 * 0.5) / 10, "voc_ap50": 0.5,
                                "voc07_ap50": 6 / 11}, abs=1e-12)
  # jax arrays (float32 here, exact on these integer boxes) give the same numbers.
  assert DM.mean_average_precision(*[jnp.asarray(x) for x in _args(split)[:7]], 1) == ours


def test_duplicates_absent_classes_and_empty_inputs():
  gt = dict(gt_boxes=np.array([[[0., 0, 10, 10]], [[0, 0, 1, 1]]]), gt_labels=np.zeros((2, 1), int),
            gt_valid=np.array([[True], [False]]), num_classes=3)
  # A miss scored above the hit: precision 1/2 at recall 1, so AP 0.5 in COCO and in VOC; a
  # duplicate below the hit costs nothing; class 2, predicted but never in the ground truth, and
  # class 1, in neither, are left out of the means.
  pred = dict(pred_boxes=np.array([[[50., 50, 60, 60], [0, 0, 10, 10], [0, 0, 10, 10]],
                                   [[0, 0, 10, 10], [0, 0, 5, 5], [0, 0, 0, 0]]]),
              pred_scores=np.array([[0.9, 0.8, 0.1], [0.95, 0.9, np.nan]]),
              pred_labels=np.array([[0, 0, 0], [2, 2, 0]]),
              pred_valid=np.array([[True, True, True], [True, True, False]]))
  ours = _assert_like_cocoeval({**pred, **gt})
  assert ours == pytest.approx({"map": 0.5, "map50": 0.5, "map75": 0.5, "mar100": 1,
                                "voc_ap50": 0.5, "voc07_ap50": 0.5}, abs=1e-12)
  np.testing.assert_array_equal(DM.coco_evaluate(*_args({**pred, **gt})).num_gt, [1, 0, 0])
  # No predictions at all (pycocotools' loadRes refuses an empty list): every AP is 0.
  none = dict(pred_boxes=np.zeros((2, 0, 4)), pred_scores=np.zeros((2, 0)),
              pred_labels=np.zeros((2, 0), int), pred_valid=np.zeros((2, 0), bool))
  assert DM.mean_average_precision(*_args({**none, **gt})) == {
      "map": 0, "map50": 0, "map75": 0, "mar100": 0, "voc_ap50": 0, "voc07_ap50": 0}
  # No ground truth at all: COCOeval's -1 for every mean.
  empty_gt = {**pred, **gt, "gt_valid": np.zeros((2, 1), bool)}
  assert set(DM.mean_average_precision(*_args(empty_gt)).values()) == {-1}


# --- VOC --------------------------------------------------------------------------------------

def _voc_ap_loop(split: dict, threshold: float = 0.5, eleven_point: bool = False) -> np.ndarray:
  """PASCAL VOC's AP of each class as the devkit defines it (VOCevaldet.m, VOCap.m), one
  prediction at a time: the area under the precision envelope, summed over the true positives
  (each raises recall by 1 / npos); or VOC2007's 11-point AP as py-faster-rcnn's voc_ap writes
  it (use_07_metric)."""
  aps = []
  for c in range(split["num_classes"]):
    gts = {i: [g for g, label, v in zip(split["gt_boxes"][i], split["gt_labels"][i],
                                        split["gt_valid"][i]) if v and label == c]
           for i in range(len(split["gt_boxes"]))}
    npos = sum(len(g) for g in gts.values())
    if npos == 0:
      aps.append(-1.)
      continue
    dets = [(s, i, b) for (i, k), v in np.ndenumerate(split["pred_valid"]) if v
            and split["pred_labels"][i, k] == c
            for s, b in [(split["pred_scores"][i, k], split["pred_boxes"][i, k])]]
    dets.sort(key=lambda d: -d[0])  # stable
    taken = {i: [False] * len(g) for i, g in gts.items()}
    tp = []
    for _, i, (x0, y0, x1, y1) in dets:
      ovmax, jmax = -np.inf, -1
      for j, (gx0, gy0, gx1, gy1) in enumerate(gts[i]):
        iw, ih = min(x1, gx1) - max(x0, gx0), min(y1, gy1) - max(y0, gy0)
        if iw > 0 and ih > 0:
          ov = iw * ih / ((x1 - x0) * (y1 - y0) + (gx1 - gx0) * (gy1 - gy0) - iw * ih)
          if ov > ovmax:
            ovmax, jmax = ov, j
      tp.append(ovmax >= threshold and not taken[i][jmax])
      if tp[-1]:
        taken[i][jmax] = True
    precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    if eleven_point:
      recall = np.cumsum(tp) / npos
      aps.append(sum(0 if np.sum(recall >= t) == 0 else np.max(precision[recall >= t])
                     for t in np.arange(0., 1.1, 0.1)) / 11)
      continue
    aps.append(sum(precision[r:].max() / npos for r in range(len(tp)) if tp[r]))
  return np.array(aps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voc_ap_matches_the_devkit_definition(seed):
  split = _random_split(10 + seed, n_images=20, max_pred=15)
  expected = _voc_ap_loop(split)
  ap = DM.voc_average_precision(*_args(split))
  np.testing.assert_allclose(ap, expected, rtol=0, atol=1e-12)
  assert ap[-1] == -1 and 0.1 < ap[:-1].mean() < 0.95
  assert DM.mean_average_precision(*_args(split))["voc_ap50"] == pytest.approx(ap[:-1].mean(),
                                                                               abs=1e-12)
  np.testing.assert_allclose(DM.voc_average_precision(*_args(split), iou_threshold=0.7),
                             _voc_ap_loop(split, 0.7), rtol=0, atol=1e-12)
  eleven = DM.voc_average_precision(*_args(split), eleven_point=True)
  np.testing.assert_allclose(eleven, _voc_ap_loop(split, eleven_point=True), rtol=0, atol=1e-12)
  assert not np.allclose(eleven[:-1], ap[:-1])
  assert DM.mean_average_precision(*_args(split))["voc07_ap50"] == pytest.approx(
      eleven[:-1].mean(), abs=1e-12)


def test_voc_ap_hand_case():
  # Three objects; by score: hit, miss, hit, miss, hit. Recall 1/3, 1/3, 2/3, 2/3, 1 at
  # precision 1, 1/2, 2/3, 1/2, 3/5; the envelope is 1, 2/3, 2/3, 3/5, 3/5, so
  # AP = (1 + 2/3 + 3/5) / 3.
  gt = np.array([[[0., 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]])
  pred = np.array([[[0., 0, 10, 10], [60, 60, 70, 70], [20, 20, 30, 30], [0, 0, 10, 10],
                    [41, 40, 51, 50]]])
  split = dict(pred_boxes=pred, pred_scores=np.array([[5., 4, 3, 2, 1]]),
               pred_labels=np.zeros((1, 5), int), pred_valid=np.ones((1, 5), bool),
               gt_boxes=gt, gt_labels=np.zeros((1, 3), int), gt_valid=np.ones((1, 3), bool),
               num_classes=1)
  np.testing.assert_allclose(DM.voc_average_precision(*_args(split)), [(1 + 2 / 3 + 3 / 5) / 3],
                             rtol=1e-12)
  # 11 points: recall 0 .. 0.3 first reached at precision 1, 0.4 .. 0.6 at 2/3, 0.7 .. 1 at 3/5.
  np.testing.assert_allclose(DM.voc_average_precision(*_args(split), eleven_point=True),
                             [(4 + 3 * 2 / 3 + 4 * 3 / 5) / 11], rtol=1e-12)
  recall, precision, scores = DM.precision_recall(*_args(split), class_id=0)
  np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1], rtol=1e-12)
  np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5], rtol=1e-12)
  np.testing.assert_array_equal(scores, [5, 4, 3, 2, 1])


def test_precision_recall_curve_gives_cocoeval_precision():
  split = _random_split(20)
  _, precision, _ = _cocoeval(split)
  for c in range(4):
    recall, raw, scores = DM.precision_recall(*_args(split), class_id=c)
    assert (np.diff(scores) <= 0).all() and (np.diff(recall) >= 0).all()
    envelope = np.maximum.accumulate(raw[::-1])[::-1]
    at = np.searchsorted(recall, DM.RECALL_THRESHOLDS, side="left")
    expected = np.where(at < len(recall), envelope[np.minimum(at, len(recall) - 1)], 0)
    np.testing.assert_allclose(expected, precision[0, :, c], rtol=0, atol=1e-12)
  with pytest.raises(DataError, match=r"precision_recall: class 4 has no ground-truth box in the "
                                      r"split, so it has no recall to plot\."):
    DM.precision_recall(*_args(split), class_id=4)


# --- bad input --------------------------------------------------------------------------------

def _good() -> dict:
  """A small split of valid inputs: every prediction real, image 0's first object real."""
  split = _random_split(30, n_images=3, max_pred=4)
  split["pred_valid"][:] = True
  split["pred_boxes"] = np.nan_to_num(split["pred_boxes"], nan=1.)
  split["pred_scores"] = np.nan_to_num(split["pred_scores"], nan=0.5)
  split["pred_labels"] = np.clip(split["pred_labels"], 0, 4)
  split["gt_valid"][0, 0], split["gt_labels"][0, 0] = True, 1
  split["gt_boxes"][0, 0] = [0, 0, 10, 10]
  return split


def _set(index, value):
  def change(x):
    x = x.copy()
    x[index] = value
    return x
  return change


@pytest.mark.parametrize("name, value, message", [
    ("pred_scores", np.zeros((3, 5)), r"pred_scores must have shape \(3, 4\), one entry a box of "
                                      r"pred_boxes; got \(3, 5\)\."),
    ("gt_boxes", np.zeros((4, 6, 4)), r"gt_boxes must be \(N, M, 4\) boxes with N = 3 images as "
                                      r"in pred_boxes; got shape \(4, 6, 4\)\."),
    ("pred_boxes", np.zeros((3, 4)), r"pred_boxes must be \(N, K, 4\) boxes \(x0, y0, x1, y1\); "
                                     r"got shape \(3, 4\)\."),
    ("gt_valid", np.ones((3, 5), bool), r"gt_valid must have shape \(3, 6\), one entry a box of "
                                        r"gt_boxes; got \(3, 5\)\."),
    ("pred_boxes", _set((1, 2), [5, 1, 3, 4]),
     r"pred_boxes\[1, 2\] = \(5, 1, 3, 4\) has x1 < x0; boxes must be \(x0, y0, x1, y1\) pixels "
     r"with x0 <= x1 and y0 <= y1\."),
    ("gt_boxes", _set((0, 0), [0, 5, 1, 2]), r"gt_boxes\[0, 0\] = \(0, 5, 1, 2\) has y1 < y0"),
    ("pred_labels", _set((2, 1), 5), r"pred_labels\[2, 1\] = 5 is not a class id in 0 \.\. 4 "
                                     r"\(num_classes = 5; no background class\)\."),
    ("gt_labels", _set((0, 0), -1), r"gt_labels\[0, 0\] = -1 is not a class id in 0 \.\. 4"),
    ("pred_labels", lambda x: x.astype(float), r"pred_labels must hold integer class ids; got "
                                               r"dtype float64\."),
    ("pred_scores", _set((0, 3), np.nan), r"pred_scores\[0, 3\] is NaN; scores must be numbers to "
                                          r"rank by\."),
    ("num_classes", 0, r"num_classes must be a Python int >= 1; got 0\."),
])
def test_bad_input_is_refused_in_one_sentence(name, value, message):
  split = _good()
  DM.mean_average_precision(*_args(split))  # the good split passes
  split[name] = value(split[name]) if callable(value) else value
  for fn in (DM.mean_average_precision, DM.coco_evaluate, DM.voc_average_precision):
    with pytest.raises(DataError, match=rf"^{fn.__name__}: {message}"):
      fn(*_args(split))
  with pytest.raises(DataError, match=r"^precision_recall: "):
    DM.precision_recall(*_args(split), class_id=1)


def test_bad_options_are_refused():
  with pytest.raises(DataError, match=r"^mean_average_precision: max_detections must be a Python "
                                      r"int >= 1; got 0\.$"):
    DM.mean_average_precision(*_args(_good()), max_detections=0)
  with pytest.raises(DataError, match=r"^precision_recall: class_id must be an int in 0 \.\. 4; "
                                      r"got 5\.$"):
    DM.precision_recall(*_args(_good()), class_id=5)
