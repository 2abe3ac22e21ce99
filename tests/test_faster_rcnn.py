"""Faster R-CNN's networks (models/faster_rcnn.py): torchvision's parameter counts layer for
layer, the feature pyramid's top-down pass against its definition, the heads' output layouts,
and bad input refused in one sentence."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m2m_jax.errors import DataError
from m2m_jax.models.faster_rcnn import FPN, FastRCNNPredictor, RPNHead, TwoMLPHead


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
