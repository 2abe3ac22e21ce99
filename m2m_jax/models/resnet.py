"""Residual networks (He et al. 2016): y = relu(F(x) + S(x)).

F is two 3x3 convolutions (``BasicBlock``) or a 1x1-3x3-1x1 bottleneck (``Bottleneck``), each
followed by BatchNorm; the shortcut S is the identity, or a strided 1x1 convolution + BatchNorm
where the shape changes. With the last BatchNorm's scale initialised to zero
(``zero_init_residual``) every block starts as the identity, y = relu(x), which is what lets
very deep stacks train from the first step.

``ResNetBackbone`` returns the feature map of every stage (strides 4, 8, 16, 32 with the
ImageNet stem; 1, 2, 4, 8 with the CIFAR stem) for detection and CLIP; ``ResNet`` adds global
average pooling and a linear classifier. BatchNorm statistics live in the ``batch_stats``
collection: ``model.apply(variables, x, train=True, mutable=['batch_stats'])`` uses and updates
the batch's statistics, ``train=False`` the running ones. Under ``jit`` over a sharded batch
the batch mean is taken over the global batch, so every device normalises alike.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from m2m_jax.errors import choose
from m2m_jax.models.layers import Conv, batch_norm, check_images


def _block_layers(block: nn.Module, train: bool):
  """A residual block's bias-free convolution and BatchNorm factories and its last BatchNorm's
  scale initializer (zeros with ``zero_init_residual``)."""
  conv = functools.partial(Conv, use_bias=False, dtype=block.dtype, impl=block.conv_impl)
  last_scale = nn.initializers.zeros if block.zero_init_residual else nn.initializers.ones
  return conv, batch_norm(train, block.dtype), last_scale


def _padding_3x3(block: nn.Module):
  """A 3x3 convolution's padding: XLA's SAME, or one pixel on every side as PyTorch pads (the
  two differ where the stride is 2 and the size even: SAME pads 0 before and 1 after)."""
  return ((1, 1), (1, 1)) if block.torch_padding else "SAME"


class BasicBlock(nn.Module):
  """conv3x3(s)-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (ResNet-18/34).

  Attributes:
    features: output channels.
    strides: stride of the first convolution (and of the projection shortcut).
    zero_init_residual: start the last BatchNorm's scale at 0, so the block is relu(S(x)).
    conv_impl: the convolutions' implementation (:class:`m2m_jax.models.layers.Conv`).
  """

  features: int
  strides: int = 1
  zero_init_residual: bool = True
  dtype: jnp.dtype = jnp.float32
  torch_padding: bool = False
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: (B, H, W, C) -> (B, H / strides, W / strides, features)."""
    conv, norm, last_scale = _block_layers(self, train)
    s, pad = (self.strides, self.strides), _padding_3x3(self)
    y = nn.relu(norm()(conv(self.features, (3, 3), s, padding=pad)(x)))
    y = norm(scale_init=last_scale)(conv(self.features, (3, 3), padding=pad)(y))
    return nn.relu(y + shortcut(x, self.features, self.strides, conv, norm))


class Bottleneck(nn.Module):
  """conv1x1-BN-ReLU-conv3x3(s)-BN-ReLU-conv1x1(4f)-BN, plus the shortcut, then ReLU (ResNet-50).

  Attributes:
    features: width of the 3x3 convolution; the block outputs ``4 * features`` channels.
  """

  features: int
  strides: int = 1
  zero_init_residual: bool = True
  dtype: jnp.dtype = jnp.float32
  torch_padding: bool = False
  conv_impl: str = "auto"
  expansion: int = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: (B, H, W, C) -> (B, H / strides, W / strides, 4 * features)."""
    conv, norm, last_scale = _block_layers(self, train)
    out = self.expansion * self.features
    y = nn.relu(norm()(conv(self.features, (1, 1))(x)))
    y = nn.relu(norm()(conv(self.features, (3, 3), (self.strides, self.strides),
                            padding=_padding_3x3(self))(y)))
    y = norm(scale_init=last_scale)(conv(out, (1, 1))(y))
    return nn.relu(y + shortcut(x, out, self.strides, conv, norm))


def shortcut(x: jnp.ndarray, features: int, strides: int, conv, norm) -> jnp.ndarray:
  """The identity where the shape is kept, else a strided 1x1 convolution + BatchNorm."""
  if x.shape[-1] == features and strides == 1:
    return x
  return norm()(conv(features, (1, 1), (strides, strides), name="projection")(x))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetBackbone(nn.Module):
  """Stem, then ``len(stage_sizes)`` stages of residual blocks; the first block of every stage
  after the first halves the resolution and the widths double: ``width * 2**i``.

  Attributes:
    stage_sizes: blocks per stage ((2, 2, 2, 2) is ResNet-18, (3, 4, 6, 3) ResNet-34/50).
    block: ``'basic'`` or ``'bottleneck'``.
    width: channels of the first stage (64 for the ImageNet ResNets).
    stem: ``'imagenet'`` (conv7x7 s2 + maxpool 3x3 s2: stride 4) or ``'cifar'`` (conv3x3 s1,
      for 32x32 or smaller images).
    in_channels: the input channels the network is built for (None: whatever ``init`` sees).
    torch_padding: pad the 3x3 convolutions by one pixel on every side, as PyTorch does,
      instead of XLA's SAME; the strided ones then see the same pixels as torchvision's
      (:mod:`m2m_jax.models.faster_rcnn`'s converted weights need it).
    conv_impl: the convolutions' implementation, 'auto', 'cpu' or 'xla'
      (:class:`m2m_jax.models.layers.Conv`).
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  width: int = 64
  stem: str = "imagenet"
  zero_init_residual: bool = True
  in_channels: int | None = None
  dtype: jnp.dtype = jnp.float32
  torch_padding: bool = False
  conv_impl: str = "auto"

  @property
  def reduction(self) -> int:
    """The total stride: input size over the last stage's size."""
    return (4 if self.stem == "imagenet" else 1) * 2 ** (len(self.stage_sizes) - 1)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> list[jnp.ndarray]:
    """x: (B, H, W, C), H and W multiples of ``reduction`` -> one map per stage,
    stage i of shape (B, H / s_i, W / s_i, width * 2**i * expansion)."""
    choose("stem", self.stem, ("imagenet", "cifar"))
    choose("block", self.block, BLOCKS)
    check_images(x, self.in_channels, self.reduction, "ResNet")
    block = BLOCKS[self.block]
    h = x.astype(self.dtype)
    conv = functools.partial(Conv, use_bias=False, dtype=self.dtype, impl=self.conv_impl,
                             name="stem_conv")
    if self.stem == "imagenet":
      h = conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)])(h)
    else:
      h = conv(self.width, (3, 3))(h)
    h = batch_norm(train, self.dtype, name="stem_bn")()(h)
    h = nn.relu(h)
    if self.stem == "imagenet":
      h = nn.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    features = []
    for i, size in enumerate(self.stage_sizes):
      for j in range(size):
        strides = 2 if i > 0 and j == 0 else 1
        h = block(self.width * 2**i, strides, self.zero_init_residual, self.dtype,
                  self.torch_padding, self.conv_impl,
                  name=f"stage{i + 1}_block{j + 1}")(h, train)
      features.append(h)
    return features


class ResNet(nn.Module):
  """``ResNetBackbone`` -> global average pool -> dense logits.

  Attributes: those of :class:`ResNetBackbone`, plus ``num_classes``.
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"
  width: int = 64
  stem: str = "imagenet"
  zero_init_residual: bool = True
  in_channels: int | None = None
  num_classes: int = 10
  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """x: (B, H, W, C) -> logits (B, num_classes)."""
    features = ResNetBackbone(self.stage_sizes, self.block, self.width, self.stem,
                              self.zero_init_residual, self.in_channels, self.dtype,
                              conv_impl=self.conv_impl, name="backbone")(x, train)
    h = jnp.mean(features[-1], axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(h)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic")
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="basic")
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck")
# The CIFAR ResNet of the paper's section 4.2: 3 stages of 3 basic blocks, widths 16/32/64.
ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), block="basic", width=16, stem="cifar")
