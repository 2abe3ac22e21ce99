"""Vision Transformer (Dosovitskiy et al., 2021), in big_vision's layout.

An image (B, H, W, C) is cut into N = HW / P^2 patches of P x P pixels; each is flattened and
mapped linearly to a D-dimensional token, and a position embedding E_pos (N, D) is added, so
that attention, which treats its inputs as a set, knows where each patch was:

    z_0 = [x_1 W; ...; x_N W] + E_pos                        (B, N, D)
    z_l = z_l' + MLP(LN(z_l')),  z_l' = z_{l-1} + MSA(LN(z_{l-1}))   (pre-norm blocks)
    y = head(pool(LN(z_L)))

with multi-head self-attention over h heads of width D / h,

    head_i = softmax(Q_i K_i^T / sqrt(D / h)) V_i,   Q_i = z W_i^Q, K_i = z W_i^K, V_i = z W_i^V.

``pool`` is a class token prepended to the sequence ('tok', the original ViT), the mean over
tokens ('gap', big_vision's default) or attention from a learned probe ('map'). The seed's
block (post-norm, every head of the full width D, ReLU MLP, no final LayerNorm) is
``block='seed'``, for comparison. OpenAI CLIP's image tower is this ViT with a class token that
has its own position embedding, a LayerNorm on z_0 (``pre_norm``), QuickGELU, a bias-free patch
projection, LayerNorm epsilon 1e-5 and no head (``num_classes=0``): see ``models/clip.py``.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from m2m_jax.errors import ConfigError, choose
from m2m_jax.models.layers import (ACTIVATIONS, EncoderBlock, MlpBlock, PatchEmbedding,
                                   check_images)

# big_vision's widths: name -> (width D, depth, MLP width, heads).
VARIANTS = {"Ti": (192, 12, 768, 3), "S": (384, 12, 1536, 6), "M": (512, 12, 2048, 8),
            "B": (768, 12, 3072, 12), "L": (1024, 24, 4096, 16), "H": (1280, 32, 5120, 16)}
POOLS = ("gap", "tok", "map")
POSEMBS = ("learn", "sincos2d")
BLOCKS = ("prenorm", "seed")


def decode_variant(variant: str) -> dict:
  """``'B/16'`` -> ``{'width': 768, 'depth': 12, 'mlp_dim': 3072, 'num_heads': 12,
  'patch_size': 16}``; a name alone (``'S'``) leaves the patch size out."""
  name, _, patch = variant.partition("/")
  choose("ViT variant", name, VARIANTS)
  width, depth, mlp_dim, heads = VARIANTS[name]
  out = {"width": width, "depth": depth, "mlp_dim": mlp_dim, "num_heads": heads}
  if patch:
    if not patch.isdigit():
      raise ConfigError(f"ViT variant {variant!r}: the patch size after '/' must be a number, "
                        f"e.g. 'B/16'.")
    out["patch_size"] = int(patch)
  return out


def posemb_sincos_2d(height: int, width: int, dim: int,
                     temperature: float = 10_000.0) -> np.ndarray:
  """Fixed 2-D sine-cosine position embeddings (1, height * width, dim), row-major: a quarter
  of the channels each for sin and cos of the column and of the row, at frequencies
  temperature^(-k / (dim/4 - 1)), k = 0 .. dim/4 - 1 (big_vision's ``posemb_sincos_2d``)."""
  if dim % 4:
    raise ConfigError(f"posemb 'sincos2d' splits the width into sin and cos of rows and "
                      f"columns, so it must be divisible by 4; got width {dim}.")
  rows, cols = np.mgrid[:height, :width]
  omega = 1.0 / temperature ** (np.arange(dim // 4) / max(dim // 4 - 1, 1))
  x = np.einsum("m,d->md", cols.ravel(), omega)
  y = np.einsum("m,d->md", rows.ravel(), omega)
  return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)[None]


class SeedBlock(nn.Module):
  """The original notebook's block on tokens (B, N, D): post-norm, ``heads`` heads each of the
  full width D (queries, keys and values of width heads * D), a ReLU MLP D -> mlp_dim -> D.

      x <- LN(x + MSA(x));  x <- LN(x + MLP(x))
  """

  heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    width = x.shape[-1]
    y = nn.MultiHeadDotProductAttention(self.heads, qkv_features=self.heads * width,
                                        dtype=self.dtype, name="attention")(x)
    x = nn.LayerNorm(dtype=self.dtype, name="norm1")(
        x + nn.Dropout(self.dropout, deterministic=not train)(y))
    y = nn.relu(nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(x))
    y = nn.Dense(width, dtype=self.dtype, name="fc2")(y)
    return nn.LayerNorm(dtype=self.dtype, name="norm2")(
        x + nn.Dropout(self.dropout, deterministic=not train)(y))


class MAPHead(nn.Module):
  """Multihead attention pooling: a learned probe (1, 1, D) attends to the tokens (B, N, D),
  followed by a residual MLP; returns (B, D)."""

  heads: int
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, x.shape[-1]))
    probe = jnp.tile(probe, (x.shape[0], 1, 1)).astype(self.dtype)
    x = nn.MultiHeadDotProductAttention(self.heads, dtype=self.dtype, name="attention")(probe, x)
    y = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    return (x + MlpBlock(self.mlp_dim, dtype=self.dtype, name="mlp")(y))[:, 0]


class ViT(nn.Module):
  """A Vision Transformer classifier: images (B, H, W, C) -> logits (B, num_classes), or the
  pooled representation (B, D) without a head.

  Attributes:
    num_classes: number of logits; 0: no head, the pooled representation (B, D) is returned
      (after the final LayerNorm with 'prenorm'), as in big_vision.
    variant: big_vision's name, ``'Ti/16'``, ``'S/16'``, ``'B/16'``, ``'L/16'`` (any ``'/P'``
      patch size; ``None``: the fields below). It sets width, depth, mlp_dim, num_heads and
      the patch size, over the fields' values.
    patch_size: P; H and W must be multiples of it.
    width: token width D.
    depth: number of blocks.
    mlp_dim: the MLP's hidden width (None: 4 D).
    num_heads: h; D must be a multiple of h for the pre-norm block.
    pool_type: 'gap' (mean of the tokens), 'tok' (a class token) or 'map' (attention pooling).
    posemb: 'learn' (a parameter, initialised N(0, 1/D)) or 'sincos2d' (fixed; D divisible by 4).
    cls_posemb: with 'tok' and 'learn', the class token gets a position embedding too (the
      original ViT's and torchvision's order; big_vision adds the embedding to the patches
      only, before the class token is prepended).
    block: 'prenorm' (the standard block, then a final LayerNorm) or 'seed' (the original
      notebook's post-norm block with full-width heads and a ReLU MLP, no final LayerNorm).
    dropout: after the embedding and inside each block.
    drop_path_rate: stochastic depth, ramped linearly from 0 at the first block to this at the
      last.
    head_zeroinit: the classifier head starts at zero (big_vision), so the first logits are 0.
    dtype: compute dtype; parameters stay float32.
    pre_norm: a LayerNorm on the embedded tokens z_0, before the first block ('prenorm' block
      only; OpenAI CLIP's ``ln_pre``, timm's ``pre_norm``).
    activation: the MLP's nonlinearity, 'gelu' (exact) or 'quick_gelu' (x * sigmoid(1.702 x),
      OpenAI CLIP's); 'prenorm' block only.
    patch_bias: the patch projection has a bias (OpenAI CLIP's has none).
    norm_epsilon: epsilon of the 'prenorm' layout's LayerNorms (big_vision's 1e-6; PyTorch's
      and OpenAI CLIP's 1e-5).
  """

  num_classes: int = 10
  variant: str | None = None
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  mlp_dim: int | None = None
  num_heads: int = 12
  pool_type: str = "gap"
  posemb: str = "learn"
  cls_posemb: bool = False
  block: str = "prenorm"
  dropout: float = 0.0
  drop_path_rate: float = 0.0
  head_zeroinit: bool = True
  dtype: jnp.dtype = jnp.float32
  pre_norm: bool = False
  activation: str = "gelu"
  patch_bias: bool = True
  norm_epsilon: float = 1e-6

  def settings(self) -> dict:
    """The architecture after ``variant`` is applied, with each setting checked."""
    s = {"patch_size": self.patch_size, "width": self.width, "depth": self.depth,
         "mlp_dim": self.mlp_dim, "num_heads": self.num_heads}
    if self.variant:
      s.update(decode_variant(self.variant))
    s["mlp_dim"] = s["mlp_dim"] or 4 * s["width"]
    choose("ViT pool_type", self.pool_type, POOLS)
    choose("ViT posemb", self.posemb, POSEMBS)
    choose("ViT block", self.block, BLOCKS)
    choose("ViT activation", self.activation, ACTIVATIONS)
    if self.block == "seed" and (self.pre_norm or self.activation != "gelu"):
      raise ConfigError("pre_norm and activation belong to the 'prenorm' block; the 'seed' block "
                        "is the notebook's, with a ReLU MLP and no LayerNorm before its blocks.")
    if self.block == "prenorm" and s["width"] % s["num_heads"]:
      raise ConfigError(f"ViT width {s['width']} does not split into {s['num_heads']} heads; "
                        f"use a width divisible by num_heads.")
    if self.cls_posemb and (self.pool_type, self.posemb) != ("tok", "learn"):
      raise ConfigError("cls_posemb gives the class token a learned position embedding, so it "
                        "needs pool_type 'tok' and posemb 'learn'.")
    return s

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    s = self.settings()
    p, d = s["patch_size"], s["width"]
    check_images(x, None, 1, "ViT")
    if x.shape[1] % p or x.shape[2] % p:
      raise ConfigError(f"ViT patch size {p} does not divide the {x.shape[1]}x{x.shape[2]} "
                        f"images; use a patch size that divides both sides.")
    grid = (x.shape[1] // p, x.shape[2] // p)
    tokens = PatchEmbedding(p, d, self.dtype, self.patch_bias,
                            name="embedding")(x.astype(self.dtype))
    n = tokens.shape[1] + int(self.cls_posemb)
    if self.posemb == "learn":
      pos = self.param("pos_embedding", nn.initializers.normal(stddev=d ** -0.5), (1, n, d))
    else:
      pos = posemb_sincos_2d(*grid, d)
    if self.pool_type == "tok":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
      cls = jnp.tile(cls, (tokens.shape[0], 1, 1)).astype(self.dtype)
      if self.cls_posemb:
        tokens = jnp.concatenate([cls, tokens], axis=1) + pos
      else:
        tokens = jnp.concatenate([cls, tokens + pos], axis=1)
    else:
      tokens = tokens + pos
    if self.pre_norm:
      tokens = nn.LayerNorm(epsilon=self.norm_epsilon, dtype=self.dtype, name="pre_norm")(tokens)
    tokens = nn.Dropout(self.dropout, deterministic=not train)(tokens.astype(self.dtype))
    for i in range(s["depth"]):
      if self.block == "seed":
        tokens = SeedBlock(s["num_heads"], s["mlp_dim"], self.dropout, self.dtype,
                           name=f"block{i}")(tokens, train)
      else:
        rate = self.drop_path_rate * i / max(s["depth"] - 1, 1)
        tokens = EncoderBlock(s["num_heads"], s["mlp_dim"], self.dropout, drop_path=rate,
                              dtype=self.dtype, activation=self.activation,
                              norm_epsilon=self.norm_epsilon, name=f"block{i}")(tokens, train=train)
    if self.block == "prenorm":
      tokens = nn.LayerNorm(epsilon=self.norm_epsilon, dtype=self.dtype,
                            name="encoder_norm")(tokens)
    if self.pool_type == "tok":
      pooled = tokens[:, 0]
    elif self.pool_type == "gap":
      pooled = tokens.mean(axis=1)
    else:
      pooled = MAPHead(s["num_heads"], s["mlp_dim"], self.dtype, name="map_head")(tokens)
    self.sow("intermediates", "features", pooled)
    if not self.num_classes:
      return pooled
    init = nn.initializers.zeros if self.head_zeroinit else nn.initializers.lecun_normal()
    return nn.Dense(self.num_classes, kernel_init=init, dtype=self.dtype, name="head")(pooled)
