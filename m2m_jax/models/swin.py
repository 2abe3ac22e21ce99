"""Swin Transformer (Liu et al., 2021): attention inside windows, shifted between blocks.

Global self-attention over N tokens costs O(N^2 D). Swin splits the token map into windows of
w x w tokens and attends only inside each, O(N w^2 D): linear in the number of tokens. So that
information crosses windows, every second block shifts the map by (w/2, w/2) first (a cyclic
roll), and windows of the shifted map straddle the previous ones. The roll wraps tokens from
the far border into windows beside tokens they were never adjacent to, so those pairs are
masked out of the attention (:func:`window_attention_mask`); without the mask (the seed's bug)
they attend to each other.

Each window's attention adds a learned bias for the relative offset of query and key, read
from a table of (2w - 1)^2 entries per head through a fixed index. Between stages, patch
merging concatenates each 2 x 2 group of tokens (4C channels), normalises it and maps it to 2C:
the map halves in each direction and the width doubles, a pyramid like a CNN's.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.errors import ConfigError, choose
from m2m_jax.models.layers import MlpBlock, PatchEmbedding, check_images, drop_path

# torchvision's Swin-T, -S, -B: name -> (embed_dim, depths, num_heads), window 7.
VARIANTS = {"T": (96, (2, 2, 6, 2), (3, 6, 12, 24)), "S": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
            "B": (128, (2, 2, 18, 2), (4, 8, 16, 32))}


def window_partition(x: jnp.ndarray, window: int) -> jnp.ndarray:
  """(B, H, W, C) -> (B, H/w * W/w, w*w, C): windows in row-major order, tokens row-major."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, window * window, c)


def window_merge(windows: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """The inverse of :func:`window_partition`: (B, nW, w*w, C) -> (B, H, W, C)."""
  b, _, n, c = windows.shape
  window = int(round(n ** 0.5))
  x = windows.reshape(b, height // window, width // window, window, window, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, height, width, c)


def window_attention_mask(height: int, width: int, window_size: int,
                          shift_size: int) -> np.ndarray:
  """Which query may attend to which key in each window of the map rolled by
  (-shift_size, -shift_size): bool (num_windows, w^2, w^2), windows in row-major order.

  The rolled map falls into up to 3 x 3 regions: the body, and the strips of width
  ``shift_size`` (and w - shift_size) that the roll brought from the other border. Two tokens
  of one window may attend to each other when they lie in the same region. With
  ``shift_size = 0`` every pair may. Built in numpy, a constant of the traced program.
  """
  regions = np.zeros((height, width), np.int32)
  if shift_size:
    cuts = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    for i, rows in enumerate(cuts):
      for j, cols in enumerate(cuts):
        regions[rows, cols] = 3 * i + j
  windows = window_partition(regions[None, :, :, None], window_size)[0, :, :, 0]
  return windows[:, :, None] == windows[:, None, :]


def relative_position_index(window: int) -> np.ndarray:
  """(w^2, w^2) int: for query i and key j of a window, the row of the bias table for their
  offset (dy, dx), each in [-(w-1), w-1]: (dy + w - 1) * (2w - 1) + dx + w - 1."""
  coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
  offsets = coords[:, :, None] - coords[:, None, :] + window - 1
  return offsets[0] * (2 * window - 1) + offsets[1]


class WindowAttention(nn.Module):
  """Multi-head self-attention inside each window, with a relative position bias.

  x (B, nW, w*w, C) -> (B, nW, w*w, C); ``mask`` (nW, w*w, w*w) bool, True where allowed.
  """

  heads: int
  window: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: np.ndarray | None) -> jnp.ndarray:
    c = x.shape[-1]
    d = c // self.heads
    qkv = nn.Dense(3 * c, dtype=self.dtype, name="qkv")(x)
    q, k, v = jnp.split(qkv.reshape(*x.shape[:-1], 3, self.heads, d), 3, axis=-3)
    q, k, v = (t.squeeze(-3) for t in (q, k, v))                    # (B, nW, N, h, d)
    logits = jnp.einsum("bwnhd,bwmhd->bwhnm", q, k) / np.sqrt(d)
    table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                       ((2 * self.window - 1) ** 2, self.heads))
    bias = table[relative_position_index(self.window)]              # (N, N, h)
    logits = logits + bias.transpose(2, 0, 1).astype(logits.dtype)
    if mask is not None:
      logits = jnp.where(mask[None, :, None], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    out = jnp.einsum("bwhnm,bwmhd->bwnhd", weights, v).reshape(x.shape)
    return nn.Dense(c, dtype=self.dtype, name="proj")(out)


class SwinBlock(nn.Module):
  """One block on a token map x (B, H, W, C): (shifted) window attention and an MLP, pre-norm.

      x <- x + DropPath(unshift(W-MSA(shift(LN(x)), mask)))
      x <- x + DropPath(MLP(LN(x)))
  """

  heads: int
  window: int
  shift: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  use_mask: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    _, h, w, c = x.shape
    rate = self.drop_path if train else 0.0

    def residual(branch):
      return drop_path(branch, rate, self.make_rng("dropout") if rate else None)

    y = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm1")(x)
    if self.shift:
      y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
    mask = (window_attention_mask(h, w, self.window, self.shift)
            if self.shift and self.use_mask else None)
    y = WindowAttention(self.heads, self.window, self.dtype, name="attention")(
        window_partition(y, self.window), mask)
    y = window_merge(y, h, w)
    if self.shift:
      y = jnp.roll(y, (self.shift, self.shift), axis=(1, 2))
    x = x + residual(y)
    y = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm2")(x)
    return x + residual(MlpBlock(int(c * self.mlp_ratio), dtype=self.dtype, name="mlp")(y))


class PatchMerging(nn.Module):
  """(B, H, W, C) -> (B, H/2, W/2, 2C): each 2 x 2 group concatenated (4C), LN, linear 4C -> 2C
  without bias."""

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = x.shape[-1]
    x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                        axis=-1)
    x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)
    return nn.Dense(2 * c, use_bias=False, dtype=self.dtype, name="reduction")(x)


class SwinTransformer(nn.Module):
  """A Swin Transformer classifier: images (B, H, W, C) -> logits (B, num_classes).

  Attributes:
    num_classes: number of logits.
    variant: 'T', 'S' or 'B' (torchvision's Swin-T, -S, -B; window 7), over the fields below;
      None: the fields.
    patch_size: pixels per token side; H and W must be multiples of it.
    embed_dim: C, the first stage's width; each later stage doubles it.
    depths: blocks per stage; blocks alternate unshifted and shifted windows.
    num_heads: heads per stage (the stage's width must divide by them).
    window_size: w, tokens per window side. Where a stage's map is not larger than w, the
      window becomes the whole map and nothing shifts, as in the original.
    mlp_ratio: MLP width over C.
    drop_path_rate: stochastic depth, ramped linearly over all blocks from 0 to this.
    use_mask: mask wrapped-around tokens in shifted windows; False reproduces the seed's bug.
    dtype: compute dtype; parameters stay float32.
  """

  num_classes: int = 10
  variant: str | None = None
  patch_size: int = 4
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window_size: int = 7
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.1
  use_mask: bool = True
  dtype: jnp.dtype = jnp.float32

  def settings(self) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """(embed_dim, depths, num_heads) after ``variant``, checked."""
    if self.variant:
      choose("Swin variant", self.variant, VARIANTS)
      return VARIANTS[self.variant]
    depths, heads = tuple(self.depths), tuple(self.num_heads)
    if len(depths) != len(heads):
      raise ConfigError(f"Swin has one depth and one head count per stage; got depths {depths} "
                        f"and num_heads {heads}.")
    for stage, h in enumerate(heads):
      if (self.embed_dim * 2 ** stage) % h:
        raise ConfigError(f"Swin stage {stage + 1} has width {self.embed_dim * 2 ** stage}, "
                          f"which does not split into {h} heads.")
    return self.embed_dim, depths, heads

  def windows(self, height: int, width: int) -> list[tuple[int, int]]:
    """Each stage's (window, shift) for a token map of height x width at stage 1, refusing a
    map that a stage's window does not divide or that cannot be halved for the next stage."""
    _, depths, _ = self.settings()
    out = []
    for stage in range(len(depths)):
      if stage and (height % 2 or width % 2):
        raise ConfigError(f"Swin stage {stage + 1} merges 2x2 patches, but stage {stage} has an "
                          f"odd {height}x{width} token map.")
      if stage:
        height, width = height // 2, width // 2
      window = self.window_size
      if min(height, width) <= window:
        out.append((min(height, width), 0))
        window = min(height, width)
      else:
        out.append((window, window // 2))
      if height % window or width % window:
        raise ConfigError(f"Swin stage {stage + 1} has a {height}x{width} token map, which "
                          f"windows of {window}x{window} do not tile; choose an image size or "
                          f"window_size that does.")
    return out

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    dim, depths, heads = self.settings()
    check_images(x, None, self.patch_size, "SwinTransformer")
    b, h, w = x.shape[0], x.shape[1] // self.patch_size, x.shape[2] // self.patch_size
    windows = self.windows(h, w)
    x = PatchEmbedding(self.patch_size, dim, self.dtype, name="embedding")(x.astype(self.dtype))
    x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="embedding_norm")(x.reshape(b, h, w, dim))
    rates = np.linspace(0.0, self.drop_path_rate, sum(depths))
    block = 0
    for stage, (depth, stage_heads, (window, shift)) in enumerate(zip(depths, heads, windows)):
      if stage:
        x = PatchMerging(self.dtype, name=f"merge{stage}")(x)
      for j in range(depth):
        x = SwinBlock(stage_heads, window, shift if j % 2 else 0, self.mlp_ratio,
                      float(rates[block]), self.use_mask, self.dtype,
                      name=f"stage{stage + 1}_block{j}")(x, train)
        block += 1
    x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)
    pooled = x.mean(axis=(1, 2))
    self.sow("intermediates", "features", pooled)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(pooled)
