"""Faster R-CNN as an algorithm of the loop (algorithms/faster_rcnn.py): its ground truth and
anchors, a tiny overfit, COCO-pretrained weights from a torchvision file, and bad input. The
loop's contract (determinism, resume, 8 devices, NaN) is test_contract's; the networks' and
the ops' equality with torchvision and pycocotools is test_faster_rcnn's, test_boxes',
test_roi_align's and test_detection_metrics'."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import torchvision_detection
from m2m_jax import configlib
from m2m_jax.data.shapes import detection_shapes
from m2m_jax.algorithms import faster_rcnn as algo
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.ops import boxes as boxes_lib


def _config(**overrides):
  config = configlib.load("faster_rcnn")
  config.num_classes, config.num_steps = 3, 1000
  config.update(overrides)
  return config


def _batch(n: int = 4, seed: int = 0) -> dict:
  return detection_shapes(seed=seed, n_train=n, n_test=1).train[np.arange(n)]


def test_ground_truth_is_xyxy_pixels_and_anchors_are_the_pyramids():
  batch = {"x": np.zeros((1, 64, 32, 3)), "boxes": np.array([[[0.25, 0.5, 0.75, 1.0]]]),
           "labels": np.array([[2]]), "boxes_mask": np.array([[True]])}
  boxes, labels, valid = algo.ground_truth(batch)
  # (y0, x0, y1, x1) relative -> (x0, y0, x1, y1) pixels of a 64-high, 32-wide image.
  np.testing.assert_allclose(boxes, [[[16, 16, 32, 48]]])
  assert labels.tolist() == [[2]] and valid.tolist() == [[True]]
  config = _config()
  # P2-P6 of a 64 x 96 image: P6 is P5 (2 x 3) subsampled by 2, 1 x 2, so its strides are
  # torchvision's image // feature, 64 and 48.
  sizes = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
  levels = algo.level_anchors(config, (64, 96), sizes)
  assert [len(a) for a in levels] == [h * w * 3 for h, w in sizes]
  np.testing.assert_array_equal(
      jnp.concatenate(levels),
      boxes_lib.anchors(sizes, (4, 8, 16, 32, (64, 48)),
                        [(s,) for s in config.detector.anchor_sizes],
                        [config.detector.aspect_ratios] * 5))


def test_a_tiny_detector_overfits_four_images():
  """Four scenes (12 objects), seen 80 times: mAP@50 above 0.9 on the same scenes."""
  config = _config(learning_rate=3e-3, warmup_steps=10, num_steps=80, batch_size=4)
  config.model.update(width=8, fpn_width=32, representation=64)
  config.detector.anchor_sizes = (8, 16, 32, 64, 128)  # the scenes at 64 x 64, not resized
  batch = _batch()
  state = algo.init(config, jax.random.key(0), batch)
  step = jax.jit(lambda s, b, k: algo.train_step(config, s, b, k))
  for i in range(config.num_steps):
    state, metrics = step(state, batch, jax.random.key(i))
    if i == 0:
      first = metrics
  assert float(metrics["loss"]) < 0.3 * float(first["loss"])
  outputs = jax.jit(lambda s, b: algo.eval_step(config, s, b))(state, batch)
  summary = algo.summarize(config, outputs)
  assert summary["map50"] > 0.9, summary


def test_coco_weights_from_a_torchvision_file_with_a_new_predictor(tmp_path):
  """A torchvision fasterrcnn_resnet50_fpn (random weights, 91 classes as COCO's) saved with
  torch.save starts the run: every layer converted, the predictor replaced by one of the
  dataset's 3 classes, as the original replaced it by VOC's 21."""
  import torch
  torchvision = torchvision_detection()
  torch.manual_seed(0)
  reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None,
                                                                    weights_backbone=None)
  path = str(tmp_path / "coco.pt")
  torch.save(reference.state_dict(), path)
  state = algo.init(_config(pretrained=path), jax.random.key(0), _batch(2))
  params = state.params
  assert params["predictor"]["cls_score"]["kernel"].shape == (1024, 4)
  assert params["predictor"]["bbox_pred"]["kernel"].shape == (1024, 16)
  np.testing.assert_array_equal(
      params["rpn_head"]["cls_logits"]["kernel"],
      reference.rpn.head.cls_logits.weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      params["mlp_head"]["fc7"]["kernel"],
      reference.roi_heads.box_head.fc7.weight.detach().numpy().T)
  with pytest.raises(ConfigError, match="predict 3 anchors a location; detector.aspect_ratios "
                     "gives 2"):
    algo.init(_config(pretrained=path, detector={**_config().detector,
                                                 "aspect_ratios": (1.0, 2.0)}),
              jax.random.key(0), _batch(2))


def _broken(**changes) -> dict:
  batch = _batch(2)
  for key, (index, value) in changes.items():
    batch[key] = np.array(batch[key])
    batch[key][index] = value
  return batch


@pytest.mark.parametrize("batch, message", [
    (_broken(boxes=((0, 0), [0.5, 0.6, 0.7, 0.4])),
     r"relative \(x0, y0, x1, y1\) boxes\[0, 0\] = \(0.6, 0.5, 0.4, 0.7\) has x1 < x0"),
    (_broken(boxes=((0, 0), [0.5, 0.2, 0.4, 0.3])), r"has y1 < y0"),
    (_broken(boxes=((1, 0), [-0.1, 0.2, 0.4, 0.3])), r"boxes\[1, 0\] .* has a negative"),
    (_broken(boxes=((0, 0), [np.nan, 0.2, 0.4, 0.3])), r"is not finite"),
    (_broken(labels=((0, 0), 3)), r"labels a box 3, but its 3 classes are 0 \.\. 2"),
    (_broken(labels=((0, 0), -1)), r"labels a box -1"),
    ({**_batch(2), "x": np.zeros((2, 48, 48, 3))}, r"multiples of 32 .* gives \(2, 48, 48, 3\)"),
    ({**_batch(2), "x": np.zeros((2, 64, 64, 1))}, r"RGB images"),
    ({k: v for k, v in _batch(2).items() if k != "boxes"}, r"trains on images with boxes"),
    ({**_batch(2), "labels": np.zeros((2, 5))}, r"labels \(B, M\)"),
])
def test_bad_data_is_refused_in_one_sentence(batch, message):
  with pytest.raises(DataError, match=message):
    algo.init(_config(), jax.random.key(0), batch)


@pytest.mark.parametrize("change, message", [
    ({"anchor_sizes": (8, 16, 32, 64)}, r"needs 5 positive sizes \(P2 \.\. P6\)"),
    ({"aspect_ratios": (0.0, 1.0)}, r"aspect_ratios positive ratios"),
    ({"rpn_nms_thresh": 1.5}, r"detector.rpn_nms_thresh must lie in \[0, 1\]; got 1.5"),
    ({"rpn_bg_iou_thresh": 0.8}, r"rpn_bg_iou_thresh \(0.8\) must not exceed"),
    ({"box_batch_size_per_image": 0}, r"box_batch_size_per_image must be >= 1; got 0"),
])
def test_bad_detector_settings_are_refused(change, message):
  config = _config()
  config.detector.update(change)
  with pytest.raises(ConfigError, match=message):
    algo.validate(config)
  with pytest.raises(ConfigError, match="trains the model 'faster_rcnn'"):
    algo.validate(_config(model_name="resnet"))
