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

Tensors are channels-last, (B, H, W, C). The parameter counts equal torchvision's layer for
layer (``tests/test_faster_rcnn.py``).
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from m2m_jax.errors import DataError

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
  """

  width: int = 256
  extra_pool: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> list[jax.Array]:
    if not features or any(f.ndim != 4 for f in features):
      raise DataError(f"FPN takes the backbone's stages as (B, H, W, C) maps; got shapes "
                      f"{[tuple(f.shape) for f in features]}.")
    for fine, coarse in zip(features, features[1:]):
      if (fine.shape[1] != 2 * coarse.shape[1]) or (fine.shape[2] != 2 * coarse.shape[2]):
        raise DataError(f"FPN needs each stage at half the resolution of the one before; got "
                        f"{[tuple(f.shape[1:3]) for f in features]}.")
    conv = lambda k, name: nn.Conv(self.width, (k, k), padding="SAME", dtype=self.dtype,
                                   kernel_init=_FPN_INIT, name=name)
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

  @nn.compact
  def __call__(self, pyramid: Sequence[jax.Array]) -> list[tuple[jax.Array, jax.Array]]:
    width = pyramid[0].shape[-1]
    conv = nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype, kernel_init=_RPN_INIT,
                   name="conv")
    logits = nn.Conv(self.num_anchors, (1, 1), dtype=self.dtype, kernel_init=_RPN_INIT,
                     name="cls_logits")
    deltas = nn.Conv(4 * self.num_anchors, (1, 1), dtype=self.dtype, kernel_init=_RPN_INIT,
                     name="bbox_pred")
    out = []
    for level in pyramid:
      h = nn.relu(conv(level))
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
