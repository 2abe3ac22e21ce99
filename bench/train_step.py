"""One training step (forward, backward, Adam update) of m2m_jax models against PyTorch (CPU).

Both frameworks run the same architecture on the same random batch in the same process. JAX runs
the algorithm's ``train_step`` (``classifier``, ``segmentation`` for the U-Net, ``vae`` for the
VAE, ``clip`` for CLIP) jitted with the state donated, as the shared loop does; PyTorch runs an
``nn.Module`` with ``torch.optim.Adam`` (zero_grad, the same loss: cross-entropy, BCE + soft
Dice, the negative ELBO with a fresh reparameterisation noise, or CLIP's symmetric InfoNCE on one
of each image's captions drawn at random; backward, step). ``--threads N`` holds both
frameworks to N threads: the process is pinned to N cores before JAX and PyTorch start (XLA
sizes its thread pool by the cores it may run on; with N = 1 its Eigen threading is also off),
and ``torch.set_num_threads(N)``; without it both use every core. Compile (the first JAX call,
as ``compile_time_s`` in the loop's summary) is timed apart. Steady state: ``--repeats`` runs of
``--steps`` steps, JAX and PyTorch interleaved so that load from other processes hits both
alike; the ratio is the median of the repeats' ratios, the speeds each framework's median, and
the load average before and after is recorded beside them.

Models: ``mlp``, ``cnn28``, ``cnn16``, ``simple_cnn``, ``resnet20``, ``unet``, ``vae``, ``vit``
(the ``mnist5k`` preset of configs/vit.py on 28x28x1), ``swin`` (the seed notebook's Swin on
32x32x1) and ``clip`` (the default preset of configs/clip.py: a ViT image tower on 32x32x3 and a
causal text transformer on 2 captions an image of 16 tokens from a 30-word vocabulary, the
captioned shapes' sizes). ``--conv-impl`` sets the convolutional models' ``conv_impl``
('auto' by default, which on a CPU is m2m_jax.ops.conv's; 'xla' for lax's own).

  python bench/train_step.py [--batch-size 128] [--models mlp cnn28] [--json results.json]
"""

import argparse
import functools
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from threads import limit_threads  # bench/, the script's directory

if __name__ == "__main__":
  limit_threads(sys.argv[1:])

import jax  # noqa: E402  (after limit_threads)
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from m2m_jax import configlib, registry, report  # noqa: E402
from m2m_jax.models.swin import relative_position_index, window_attention_mask  # noqa: E402
from m2m_jax.models.vit import posemb_sincos_2d  # noqa: E402

NUM_CLASSES = 10
LEARNING_RATE = 1e-3
# CLIP's captions as the captioned shapes' word tokenizer lays them out: <pad> 0, <sot> 1, <eot>
# 2, then the words (30 tokens in all); K captions an image of T tokens.
CLIP_VOCAB, CLIP_SOT, CLIP_EOT, CLIP_CAPTIONS, CLIP_CONTEXT = 30, 1, 2, 2, 16


@dataclass(frozen=True)
class Spec:
  """One benchmarked model: its m2m_jax name and arguments, input shape and PyTorch twin."""

  model_name: str
  model: dict
  shape: tuple[int, ...]  # one example, channels last (H, W, C) or (features,)
  torch_model: Callable[[], nn.Module]
  algorithm: str = "classifier"  # "segmentation": the target is a mask of the input's size;
                                 # "vae": the target is the input, pixels in [0, 1];
                                 # "clip": the target is K captions' token ids (K, T)


def torch_mlp(features: int, hidden: Sequence[int]) -> nn.Module:
  """m2m_jax.models.mlp.MLP: [dense -> ReLU]* -> dense."""
  layers: list[nn.Module] = [nn.Flatten()]
  for width in hidden:
    layers += [nn.Linear(features, width), nn.ReLU()]
    features = width
  return nn.Sequential(*layers, nn.Linear(features, NUM_CLASSES))


def torch_cnn(side: int, features: Sequence[int] = (32, 64), dense: int = 256) -> nn.Module:
  """m2m_jax.models.cnn.CNN: [conv3x3 SAME -> ReLU -> avgpool2]* -> dense -> ReLU -> dense."""
  layers: list[nn.Module] = []
  channels = 1
  for f in features:
    layers += [nn.Conv2d(channels, f, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)]
    channels = f
  side //= 2 ** len(features)
  return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * side * side, dense), nn.ReLU(),
                       nn.Linear(dense, NUM_CLASSES))


def torch_simple_cnn(channels: int = 4) -> nn.Module:
  """m2m_jax.models.cnn.SimpleCNN on 28x28x1 (622 parameters)."""
  return nn.Sequential(
      nn.Conv2d(1, channels, 5, stride=2), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(channels * 3 * 3, NUM_CLASSES))


class TorchBasicBlock(nn.Module):
  """m2m_jax.models.resnet.BasicBlock: conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    nn.init.zeros_(self.bn2.weight)
    self.projection = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                     nn.BatchNorm2d(cout))
                       if stride != 1 or cin != cout else nn.Identity())

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(y)) + self.projection(x))


def torch_resnet_cifar(channels: int, stage_sizes: Sequence[int], width: int) -> nn.Module:
  """m2m_jax.models.resnet.ResNet with the CIFAR stem: conv3x3-BN-ReLU, basic-block stages,
  global average pool, dense."""
  layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                             nn.BatchNorm2d(width), nn.ReLU()]
  cin = width
  for i, size in enumerate(stage_sizes):
    for j in range(size):
      layers.append(TorchBasicBlock(cin, width * 2**i, 2 if i > 0 and j == 0 else 1))
      cin = width * 2**i
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(cin, NUM_CLASSES))


class TorchUNet(nn.Module):
  """m2m_jax.models.unet.UNet: [conv3x3-BN-ReLU x2, maxpool]* -> bottleneck ->
  [convT2x2 s2, concatenate the skip, conv3x3-BN-ReLU x2]* -> conv1x1."""

  def __init__(self, channels: int, widths: Sequence[int]):
    super().__init__()
    *levels, bottleneck = widths
    double = lambda cin, cout: nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
    ins = [channels, *levels[:-1]]
    self.down = nn.ModuleList(double(cin, w) for cin, w in zip(ins, levels))
    self.bottleneck = double(levels[-1], bottleneck)
    outs = [*levels[1:], bottleneck]
    self.up = nn.ModuleList(nn.ConvTranspose2d(cin, w, 2, 2) for cin, w in zip(outs, levels))
    self.dec = nn.ModuleList(double(2 * w, w) for w in levels)
    self.head = nn.Conv2d(levels[0], 1, 1)

  def forward(self, x):
    skips = []
    for down in self.down:
      x = down(x)
      skips.append(x)
      x = F.max_pool2d(x, 2)
    x = self.bottleneck(x)
    for i in reversed(range(len(skips))):
      x = self.dec[i](torch.cat([skips[i], self.up[i](x)], 1))
    return self.head(x)


class TorchVAE(nn.Module):
  """m2m_jax.models.vae.VAE: [conv4x4 s2 -> ReLU]* -> linear heads (mean, logvar); z = mean +
  exp(logvar / 2) eps; linear -> ReLU -> [convT4x4 s2 -> ReLU]* -> convT4x4 s2 (logits). Its
  forward returns the batch's mean negative ELBO under a Bernoulli likelihood, as
  ``algorithms.vae`` with ``binarize=False`` (the original's loss)."""

  def __init__(self, channels: int, widths: Sequence[int], latent: int, side: int):
    super().__init__()
    conv = dict(kernel_size=4, stride=2, padding=1)
    ins = [channels, *widths[:-1]]
    self.down = nn.Sequential(*(m for cin, w in zip(ins, widths)
                                for m in (nn.Conv2d(cin, w, **conv), nn.ReLU())))
    self.base = (widths[-1], side >> len(widths), side >> len(widths))
    flat = math.prod(self.base)
    self.mean, self.logvar = nn.Linear(flat, latent), nn.Linear(flat, latent)
    self.expand = nn.Linear(latent, flat)
    outs = [*reversed(widths[:-1]), channels]
    ups = [nn.ConvTranspose2d(cin, cout, **conv) for cin, cout in zip(reversed(widths), outs)]
    self.up = nn.Sequential(*(m for u in ups[:-1] for m in (u, nn.ReLU())), ups[-1])

  def forward(self, x):
    h = self.down(x).flatten(1)
    mean, logvar = self.mean(h), self.logvar(h)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    logits = self.up(F.relu(self.expand(z)).view(-1, *self.base))
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(1)
    return (recon + kl).mean()


class TorchAttention(nn.Module):
  """Multi-head self-attention on tokens (..., N, D), heads of width D / h: one qkv projection
  with biases (laid out q, k, v, then heads, as m2m_jax's WindowAttention), scaled dot-product
  attention plus an optional additive bias (..., h, N, N) or under a boolean mask (True: attend),
  an output projection with bias."""

  def __init__(self, width: int, heads: int):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(width, 3 * width)
    self.proj = nn.Linear(width, width)

  def forward(self, x, bias=None):
    *lead, n, d = x.shape
    q, k, v = (t.transpose(-2, -3) for t in  # each (..., h, N, D / h)
               self.qkv(x).view(*lead, n, 3, self.heads, d // self.heads).unbind(-3))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return self.proj(y.transpose(-2, -3).reshape(*lead, n, d))


class QuickGELU(nn.Module):
  """x * sigmoid(1.702 x), OpenAI CLIP's GELU (m2m_jax.models.layers.quick_gelu)."""

  def forward(self, x):
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": nn.GELU, "quick_gelu": QuickGELU}  # m2m_jax.models.layers.ACTIVATIONS


def torch_mlp_block(width: int, hidden: int, activation: str = "gelu") -> nn.Module:
  """m2m_jax.models.layers.MlpBlock: dense -> GELU (exact, or OpenAI's quick GELU) -> dense."""
  return nn.Sequential(nn.Linear(width, hidden), ACTIVATIONS[activation](),
                       nn.Linear(hidden, width))


class TorchEncoderBlock(nn.Module):
  """m2m_jax.models.layers.EncoderBlock (pre-norm): x + MHA(LN(x), mask), then x + MLP(LN(x));
  the LayerNorms' epsilon is flax's default 1e-6 unless given."""

  def __init__(self, width: int, heads: int, mlp_dim: int, eps: float = 1e-6,
               activation: str = "gelu"):
    super().__init__()
    self.norm1, self.norm2 = nn.LayerNorm(width, eps=eps), nn.LayerNorm(width, eps=eps)
    self.attention = TorchAttention(width, heads)
    self.mlp = torch_mlp_block(width, mlp_dim, activation)

  def forward(self, x, mask=None):
    x = x + self.attention(self.norm1(x), mask)
    return x + self.mlp(self.norm2(x))


class TorchViT(nn.Module):
  """m2m_jax.models.vit.ViT with pool_type 'gap' and posemb 'sincos2d': p x p patch conv ->
  tokens row-major + the fixed sin-cos embedding (a buffer) -> pre-norm blocks -> LN -> mean
  over tokens -> dense (zero-initialised, head_zeroinit)."""

  def __init__(self, channels: int, side: int, patch: int, width: int, depth: int, heads: int,
               mlp_dim: int):
    super().__init__()
    self.embedding = nn.Conv2d(channels, width, patch, patch)
    pos = posemb_sincos_2d(side // patch, side // patch, width)
    self.register_buffer("pos", torch.from_numpy(pos).float())
    self.blocks = nn.Sequential(*(TorchEncoderBlock(width, heads, mlp_dim) for _ in range(depth)))
    self.norm = nn.LayerNorm(width, eps=1e-6)
    self.head = nn.Linear(width, NUM_CLASSES)
    nn.init.zeros_(self.head.weight)
    nn.init.zeros_(self.head.bias)

  def forward(self, x):
    x = self.embedding(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, D), row-major
    return self.head(self.norm(self.blocks(x)).mean(1))


class TorchSwinBlock(nn.Module):
  """m2m_jax.models.swin.SwinBlock on a token map (B, H, W, C): x + unshift(W-MSA(shift(LN(x))))
  with the relative position bias (and the shifted windows' mask), then x + MLP(LN(x))."""

  def __init__(self, side: int, width: int, heads: int, window: int, shift: int,
               mlp_ratio: float):
    super().__init__()
    self.window, self.shift = window, shift
    self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
    self.attention = TorchAttention(width, heads)
    self.table = nn.Parameter(nn.init.trunc_normal_(torch.empty((2 * window - 1) ** 2, heads),
                                                    std=0.02))
    self.register_buffer("index", torch.from_numpy(relative_position_index(window)).long())
    mask = window_attention_mask(side, side, window, shift)  # (nW, w^2, w^2), True: allowed
    self.register_buffer("mask", torch.zeros(mask.shape).masked_fill(
        torch.from_numpy(~mask), -math.inf)[:, None] if shift else None)
    self.mlp = torch_mlp_block(width, int(width * mlp_ratio))

  def forward(self, x):
    b, h, w, c = x.shape
    s, n = self.shift, self.window
    y = torch.roll(self.norm1(x), (-s, -s), (1, 2))
    y = y.view(b, h // n, n, w // n, n, c).transpose(2, 3).reshape(b, -1, n * n, c)
    bias = self.table[self.index].permute(2, 0, 1)  # (heads, w^2, w^2)
    y = self.attention(y, bias if self.mask is None else bias + self.mask)
    y = y.view(b, h // n, w // n, n, n, c).transpose(2, 3).reshape(b, h, w, c)
    x = x + torch.roll(y, (s, s), (1, 2))
    return x + self.mlp(self.norm2(x))


class TorchPatchMerging(nn.Module):
  """m2m_jax.models.swin.PatchMerging: 2 x 2 neighbours concatenated (4C) in JAX's order, LN,
  linear 4C -> 2C without bias."""

  def __init__(self, width: int):
    super().__init__()
    self.norm = nn.LayerNorm(4 * width)
    self.reduction = nn.Linear(4 * width, 2 * width, bias=False)

  def forward(self, x):
    x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    return self.reduction(self.norm(x))


class TorchSwin(nn.Module):
  """m2m_jax.models.swin.SwinTransformer on square images: p x p patch conv -> LN -> stages of
  blocks alternating plain and shifted windows, patch merging between stages -> LN -> mean
  pool -> dense. Where a stage's map is not larger than the window, the window is the whole
  map and nothing shifts (SwinTransformer.windows); LayerNorm epsilons are 1e-5."""

  def __init__(self, channels: int, side: int, patch: int, dim: int, depths: Sequence[int],
               heads: Sequence[int], window: int, mlp_ratio: float = 4.0):
    super().__init__()
    self.embedding = nn.Conv2d(channels, dim, patch, patch)
    self.embedding_norm = nn.LayerNorm(dim)
    layers: list[nn.Module] = []
    side //= patch
    for stage, (depth, stage_heads) in enumerate(zip(depths, heads)):
      if stage:
        layers.append(TorchPatchMerging(dim))
        side, dim = side // 2, dim * 2
      n, shift = (side, 0) if side <= window else (window, window // 2)
      layers += [TorchSwinBlock(side, dim, stage_heads, n, shift if j % 2 else 0, mlp_ratio)
                 for j in range(depth)]
    self.stages = nn.Sequential(*layers)
    self.norm = nn.LayerNorm(dim)
    self.head = nn.Linear(dim, NUM_CLASSES)

  def forward(self, x):
    x = self.embedding_norm(self.embedding(x).permute(0, 2, 3, 1))  # (B, H, W, C)
    return self.head(self.norm(self.stages(x)).mean((1, 2)))


class TorchCLIP(nn.Module):
  """m2m_jax.models.clip.CLIP with its ViT image tower, OpenAI's layout: a bias-free p x p patch
  conv, a class token, learned positions for it and the patches, LN (ln_pre), pre-norm blocks,
  LN of the class token (ln_post); the text tower: token + learned position embeddings,
  pre-norm blocks under a causal mask, LN (ln_final), read at each row's first ``eot_id``
  (OpenAI's ``tokens.argmax(-1)`` where eot is the largest id; the last position in a row
  without one); both projected without bias to ``embed_dim`` and L2-normalised. MLPs 4 x width,
  LayerNorm epsilons ``norm_epsilon``. Its forward returns (image embeddings, text embeddings,
  the learned log temperature clamped at log 100), as CLIP's ``__call__``."""

  def __init__(self, channels: int, side: int, vocab_size: int, context: int, eot_id: int,
               embed_dim: int, patch_size: int, image_width: int, image_depth: int,
               image_heads: int, text_width: int, text_depth: int, text_heads: int,
               activation: str = "quick_gelu", norm_epsilon: float = 1e-5):
    super().__init__()
    block = lambda w, h: TorchEncoderBlock(w, h, 4 * w, norm_epsilon, activation)
    norm = lambda w: nn.LayerNorm(w, eps=norm_epsilon)
    self.patches = nn.Conv2d(channels, image_width, patch_size, patch_size, bias=False)
    self.cls = nn.Parameter(torch.zeros(image_width))
    self.image_pos = nn.Parameter(torch.randn((side // patch_size) ** 2 + 1, image_width)
                                  * image_width ** -0.5)
    self.ln_pre, self.ln_post = norm(image_width), norm(image_width)
    self.image_blocks = nn.Sequential(*(block(image_width, image_heads)
                                        for _ in range(image_depth)))
    self.image_projection = nn.Linear(image_width, embed_dim, bias=False)
    self.token_embedding = nn.Embedding(vocab_size, text_width)
    nn.init.normal_(self.token_embedding.weight, std=0.02)
    self.text_pos = nn.Parameter(torch.randn(context, text_width) * 0.01)
    self.text_blocks = nn.ModuleList(block(text_width, text_heads) for _ in range(text_depth))
    self.ln_final = norm(text_width)
    self.text_projection = nn.Linear(text_width, embed_dim, bias=False)
    self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    self.register_buffer("causal", torch.ones(context, context, dtype=torch.bool).tril())
    self.eot_id = eot_id

  def encode_image(self, x):
    x = self.patches(x).flatten(2).transpose(1, 2)  # (B, N, D), row-major
    x = torch.cat([self.cls.expand(len(x), 1, -1), x], 1) + self.image_pos
    x = self.ln_post(self.image_blocks(self.ln_pre(x))[:, 0])
    return F.normalize(self.image_projection(x), dim=-1)

  def encode_text(self, tokens):
    t = tokens.shape[1]
    x = self.token_embedding(tokens) + self.text_pos[:t]
    for block in self.text_blocks:
      x = block(x, self.causal[:t, :t])
    is_eot = tokens == self.eot_id
    eot = torch.where(is_eot.any(1), is_eot.int().argmax(1), t - 1)
    x = self.ln_final(x)[torch.arange(len(x)), eot]
    return F.normalize(self.text_projection(x), dim=-1)

  def forward(self, x, tokens):
    return (self.encode_image(x), self.encode_text(tokens),
            self.logit_scale.clamp(max=math.log(100.0)))


def specs(mlp_in: int, mlp_hidden: tuple[int, ...]) -> dict[str, Spec]:
  """Every benchmarked model by its name on the command line."""
  clip = configlib.load("clip").model.to_dict()  # the default preset's CLIP
  return {
      "mlp": Spec("mlp", {"hidden": mlp_hidden}, (mlp_in,), lambda: torch_mlp(mlp_in, mlp_hidden)),
      "cnn28": Spec("cnn", {}, (28, 28, 1), lambda: torch_cnn(28)),
      "cnn16": Spec("cnn", {}, (16, 16, 1), lambda: torch_cnn(16)),
      "simple_cnn": Spec("simple_cnn", {}, (28, 28, 1), torch_simple_cnn),
      "resnet20": Spec("resnet20", {}, (32, 32, 3), lambda: torch_resnet_cifar(3, (3, 3, 3), 16)),
      "unet": Spec("unet", {"widths": (16, 32, 64)}, (32, 32, 1),
                   lambda: TorchUNet(1, (16, 32, 64)), "segmentation"),
      "vae": Spec("vae", {"widths": (32, 64, 128), "latent": 20}, (32, 32, 3),
                  lambda: TorchVAE(3, (32, 64, 128), 20, 32), "vae"),
      "vit": Spec("vit", {"patch_size": 4, "width": 64, "depth": 4, "num_heads": 4, "mlp_dim": 128,
                          "pool_type": "gap", "posemb": "sincos2d", "dropout": 0.0,
                          "drop_path_rate": 0.0}, (28, 28, 1),
                  lambda: TorchViT(1, 28, 4, 64, 4, 4, 128)),
      "swin": Spec("swin", {"patch_size": 4, "embed_dim": 32, "depths": (2, 2),
                            "num_heads": (2, 2), "window_size": 2, "drop_path_rate": 0.0,
                            "use_mask": True}, (32, 32, 1),
                   lambda: TorchSwin(1, 32, 4, 32, (2, 2), (2, 2), 2)),
      "clip": Spec("clip", clip, (32, 32, 3),
                   lambda: TorchCLIP(3, 32, CLIP_VOCAB, CLIP_CONTEXT, CLIP_EOT, **clip), "clip"),
  }


def random_tokens(rng: np.random.Generator, batch_size: int) -> np.ndarray:
  """(B, K, T) int32 captions in the word tokenizer's layout: <sot>, 1 to T - 2 random words,
  <eot>, then <pad> (0) to the end."""
  shape = (batch_size, CLIP_CAPTIONS, CLIP_CONTEXT)
  words = rng.integers(CLIP_EOT + 1, CLIP_VOCAB, shape, dtype=np.int32)
  eot = rng.integers(2, CLIP_CONTEXT, shape[:2])[..., None]  # each caption's <eot> position
  position = np.arange(CLIP_CONTEXT)
  tokens = np.where(position < eot, words, np.where(position == eot, CLIP_EOT, 0))
  tokens[..., 0] = CLIP_SOT
  return tokens.astype(np.int32)


def random_batch(spec: Spec, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Standard normal inputs (B, *shape) float32 and uniform labels (B,) int32, or for
  segmentation binary masks (B, H, W, 1) float32; for the VAE uniform pixels in [0, 1]; for
  CLIP K captions an image (:func:`random_tokens`)."""
  rng = np.random.default_rng(0)
  if spec.algorithm == "vae":
    return rng.random((batch_size, *spec.shape), dtype=np.float32), np.zeros(batch_size, np.int32)
  x = rng.standard_normal((batch_size, *spec.shape), dtype=np.float32)
  if spec.algorithm == "segmentation":
    return x, (rng.random((*x.shape[:3], 1)) < 0.3).astype(np.float32)
  if spec.algorithm == "clip":
    return x, random_tokens(rng, batch_size)
  return x, rng.integers(0, NUM_CLASSES, batch_size, dtype=np.int32)


CONVOLUTIONAL = ("cnn", "simple_cnn", "resnet20", "unet", "vae")  # models taking conv_impl


def jax_config(spec: Spec, batch_size: int, conv_impl: str = "auto") -> ml_collections.ConfigDict:
  """A config with Adam at a constant learning rate, like torch.optim.Adam; for CLIP, its loss
  and the tokenizer's fields (which ``train.resolve`` takes from a dataset)."""
  c = configlib.base()
  c.algorithm = spec.algorithm
  c.model_name = spec.model_name
  c.model = spec.model
  if spec.model_name in CONVOLUTIONAL:
    c.model.conv_impl = conv_impl
  c.num_classes = NUM_CLASSES
  c.batch_size = batch_size
  c.optimizer = "adam"
  c.learning_rate = LEARNING_RATE
  c.schedule = "constant"
  if spec.algorithm == "clip":
    c.loss, c.vocab_size, c.eot_id = "clip", CLIP_VOCAB, CLIP_EOT
    c.shared_positives = False  # InfoNCE on the diagonal, as the twin computes it
  return c


class JaxStep:
  """The algorithm's ``train_step`` jitted with the state donated; calling it runs n steps."""

  def __init__(self, spec: Spec, x: np.ndarray, y: np.ndarray, conv_impl: str = "auto"):
    algorithm = registry.get(spec.algorithm)
    target = "tokens" if spec.algorithm == "clip" else "y"  # CLIP's: captions (B, K, T)
    self.batch = {"x": jnp.asarray(x), target: jnp.asarray(y)}
    config = jax_config(spec, len(x), conv_impl)
    self.state = algorithm.init(config, jax.random.key(0), self.batch)
    self.num_params = sum(p.size for p in jax.tree.leaves(self.state.params))
    self.rng = jax.random.key(1)
    self.step = jax.jit(functools.partial(algorithm.train_step, config), donate_argnums=0)

  def __call__(self, n: int) -> None:
    for _ in range(n):
      self.state, self.metrics = self.step(self.state, self.batch, self.rng)
    jax.block_until_ready((self.state, self.metrics))


class TorchStep:
  """The same step in PyTorch (eager, channels first); calling it runs n steps."""

  def __init__(self, spec: Spec, x: np.ndarray, y: np.ndarray):
    torch.manual_seed(0)
    self.model = spec.torch_model()
    self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
    self.num_params = sum(p.numel() for p in self.model.parameters())
    channels_first = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2) if a.ndim == 4 else a)
    self.x = torch.from_numpy(channels_first(x))
    self.algorithm = spec.algorithm
    self.segmentation = spec.algorithm == "segmentation"
    self.y = torch.from_numpy(channels_first(y)) if self.segmentation else torch.from_numpy(y).long()

  def loss(self, logits):
    """Cross-entropy, or mean BCE + soft Dice loss per image (segmentation's loss)."""
    if not self.segmentation:
      return F.cross_entropy(logits, self.y)
    p, g = torch.sigmoid(logits), self.y
    dice = 1 - (2 * (p * g).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + g.sum((1, 2, 3)) + 1)
    return F.binary_cross_entropy_with_logits(logits, g) + dice.mean()

  def forward(self) -> tuple[torch.Tensor, dict]:
    """The loss of one forward pass and the metrics ``train_step`` reports with it."""
    if self.algorithm == "vae":  # the model returns its loss
      loss = self.model(self.x)
      return loss, {"loss": loss.detach()}
    if self.algorithm == "clip":  # y: (B, K, T) captions, one of each drawn as train_step does
      rows = torch.arange(len(self.y))
      image, text, log_scale = self.model(self.x, self.y[rows, torch.randint(self.y.shape[1],
                                                                               rows.shape)])
      logits = log_scale.exp() * image @ text.T
      loss = (F.cross_entropy(logits, rows) + F.cross_entropy(logits.T, rows)) / 2
      return loss, {"loss": loss.detach(), "scale": log_scale.detach().exp(),
                    "accuracy": (logits.argmax(1) == rows).float().mean()}
    logits = self.model(self.x)
    loss = self.loss(logits)
    hit = ((logits > 0).float() == self.y) if self.segmentation else logits.argmax(-1) == self.y
    return loss, {"loss": loss.detach(), "accuracy": hit.float().mean()}

  def __call__(self, n: int) -> None:
    for _ in range(n):
      self.optimizer.zero_grad()
      loss, self.metrics = self.forward()
      loss.backward()
      self.optimizer.step()


def seconds(run: Callable[[int], None], n: int) -> float:
  """Wall time of ``run(n)``."""
  start = time.perf_counter()
  run(n)
  return time.perf_counter() - start


def repeat_seconds(runs: Sequence[Callable[[int], None]], steps: int,
                   repeats: int) -> list[list[float]]:
  """Wall times of ``steps`` steps of each run (one list a run), ``repeats`` times, the runs
  interleaved."""
  times: list[list[float]] = [[] for _ in runs]
  for _ in range(repeats):
    for t, run in zip(times, runs):
      t.append(seconds(run, steps))
  return times


def best_seconds(runs: Sequence[Callable[[int], None]], steps: int, repeats: int) -> list[float]:
  """The best wall time of ``steps`` steps of each run over ``repeats``, the runs interleaved."""
  return [min(t) for t in repeat_seconds(runs, steps, repeats)]


def bench_model(name: str, spec: Spec, batch_size: int, steps: int, repeats: int,
                conv_impl: str = "auto") -> dict:
  """Compile / warm-up seconds, median steady-state examples per second of both frameworks and
  the median (min, max) of the repeats' speed ratios."""
  x, y = random_batch(spec, batch_size)
  start = time.perf_counter()
  jax_step = JaxStep(spec, x, y, conv_impl)
  jax_init = time.perf_counter() - start
  torch_step = TorchStep(spec, x, y)
  assert jax_step.num_params == torch_step.num_params, (
      f"{name}: {jax_step.num_params} JAX parameters but {torch_step.num_params} in PyTorch")
  jax_compile, torch_warmup = seconds(jax_step, 1), seconds(torch_step, 1)
  load = os.getloadavg()[0]
  jax_s, torch_s = repeat_seconds((jax_step, torch_step), steps, repeats)
  jax_rate, torch_rate = (steps * batch_size / statistics.median(t) for t in (jax_s, torch_s))
  return {"model": name, "batch_size": batch_size, "params": jax_step.num_params,
          "input_shape": list(spec.shape), "steps": steps, "repeats": repeats,
          "threads": torch.get_num_threads(),
          "conv_impl": conv_impl if spec.model_name in CONVOLUTIONAL else None,
          "jax_examples_per_s": jax_rate, "torch_examples_per_s": torch_rate,
          "ratio_jax_over_torch": statistics.median(t / j for j, t in zip(jax_s, torch_s)),
          "ratio_min_max": [min(t / j for j, t in zip(jax_s, torch_s)),
                            max(t / j for j, t in zip(jax_s, torch_s))],
          "load_average_before": load, "load_average_after": os.getloadavg()[0],
          "jax_init_s": jax_init, "jax_compile_s": jax_compile, "torch_first_step_s": torch_warmup}


def environment() -> dict:
  """Versions, devices, threads and load: what the numbers depend on."""
  return {"jax": jax.__version__, "torch": torch.__version__,
          "jax_devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
          "torch_threads": torch.get_num_threads(), "cores": len(os.sched_getaffinity(0)),
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "processor": platform.processor(),
          "load_average_1min": os.getloadavg()[0]}


def table(rows: list[dict]) -> str:
  """The results as a fixed-width text table."""
  head = (f"{'model':<11}{'batch':>6}{'params':>10}{'JAX ex/s':>12}{'torch ex/s':>12}"
          f"{'JAX/torch':>10}{'JAX compile s':>15}")
  lines = [head, "-" * len(head)]
  for r in rows:
    lines.append(f"{r['model']:<11}{r['batch_size']:>6}{r['params']:>10,}"
                 f"{r['jax_examples_per_s']:>12,.0f}{r['torch_examples_per_s']:>12,.0f}"
                 f"{r['ratio_jax_over_torch']:>10.2f}{r['jax_compile_s']:>15.2f}")
  return "\n".join(lines)


def int_tuple(text: str) -> tuple[int, ...]:
  return tuple(int(v) for v in text.split(","))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  names = list(specs(784, (256, 128)))
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--steps", type=int, default=None, help="steps per repeat (default 50, quick 5)")
  p.add_argument("--repeats", type=int, default=None,
                 help="runs of --steps steps, the median taken (default 5, quick 2)")
  p.add_argument("--models", nargs="+", choices=names, default=names)
  p.add_argument("--mlp-in", type=int, default=784, help="MLP input features (64 for 8x8 digits)")
  p.add_argument("--mlp-hidden", type=int_tuple, default=(256, 128), help="e.g. 128,64")
  p.add_argument("--threads", type=int, default=None,
                 help="both frameworks on this many threads (default: every core)")
  p.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                 help="torch.set_num_threads alone, JAX left on every core (default: every "
                      "core); --threads sets both")
  p.add_argument("--conv-impl", choices=("auto", "cpu", "xla"), default="auto",
                 help="the convolutional models' conv_impl (default auto: m2m_jax.ops.conv's "
                      "on a CPU)")
  p.add_argument("--quick", action="store_true", help="a few-second smoke run")
  p.add_argument("--json", metavar="PATH", help="also write the results here")
  args = p.parse_args(argv)
  args.steps = args.steps or (5 if args.quick else 50)
  args.repeats = args.repeats or (2 if args.quick else 5)
  return args


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the benchmark, prints the table and returns (and optionally writes) the results."""
  args = parse_args(argv)
  if args.threads and len(os.sched_getaffinity(0)) != args.threads:
    raise SystemExit(f"--threads {args.threads} holds JAX only when given on the command line "
                     f"(the process runs on {len(os.sched_getaffinity(0))} cores)")
  torch.set_num_threads(args.threads or args.torch_threads)
  env = environment()
  print(f"jax {env['jax']} on {env['jax_devices']}, torch {env['torch']} on {env['torch_threads']} "
        f"threads, the process on {env['cores']} of {env['cpu_count']} cores, load average "
        f"{env['load_average_1min']:.2f}")
  models = specs(args.mlp_in, args.mlp_hidden)
  rows = [bench_model(name, models[name], args.batch_size, args.steps, args.repeats,
                      args.conv_impl) for name in args.models]
  print(table(rows))
  results = {"environment": env, "results": rows}
  if args.json:
    report.write_json(args.json, results)
  return results


if __name__ == "__main__":
  main()
