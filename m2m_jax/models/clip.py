"""CLIP (Radford et al., 2021): an image tower and a text tower mapped into one space.

Each tower ends in a bias-free linear projection to ``embed_dim``, and both embeddings are
L2-normalised, so that the similarity of image i and text j is a cosine, scaled by a learned
temperature:

    u_i = P_img f(image_i) / ||.||,   v_j = P_txt g(text_j) / ||.||,   logits_ij = e^s u_i . v_j

with s = ``logit_scale``, initialised at log(1 / 0.07) and clamped at log(100) where it is used.

- f is the project's ViT (``models/vit.py``) in OpenAI's layout: a class token with its own
  position embedding, a LayerNorm before the blocks, QuickGELU x * sigmoid(1.702 x), a
  bias-free patch projection, the final LayerNorm on the class token; or the project's ResNet
  backbone followed by global average pooling (``image_tower='resnet'``).
- g is a causal pre-norm transformer over token embeddings plus learned position embeddings,
  read at the end-of-text token: with the causal mask, the EOT position has seen the whole
  text and nothing after it.

``from_openai(state_dict)`` reads the architecture from OpenAI's PyTorch weights (as their
``build_model`` does) and returns this model with the converted variables;
``load_openai(name)`` fetches those weights by name with OpenAI's ``clip.load``.
"""

import importlib
import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.errors import ConfigError, DataError, choose
from m2m_jax.models.layers import ACTIVATIONS, EncoderBlock
from m2m_jax.models.resnet import ResNetBackbone
from m2m_jax.models.vit import ViT, decode_variant
from m2m_jax.ops.contrastive import l2_normalize

IMAGE_TOWERS = ("vit", "resnet")
# OpenAI's sizes beside the ViT's (vit.VARIANTS): name -> (embed_dim, text width, depth, heads).
TEXT_VARIANTS = {"B": (512, 512, 12, 8), "L": (768, 768, 12, 12)}
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)


class TextTransformer(nn.Module):
  """CLIP's text tower: tokens (B, T) int -> the final LayerNorm's output at each text's
  end-of-text token (B, width).

      z_0 = E_tok[tokens] + E_pos[:T];  z_l = EncoderBlock(z_{l-1}, causal mask);  LN(z_L)[eot]

  The EOT position of a row is that of its first ``eot_id`` token (the last position where it
  has none); with ids below ``eot_id``, OpenAI's ``text.argmax(-1)``.

  Attributes:
    vocab_size, context_length: the token embedding's rows and the longest text T.
    width, depth, num_heads: the transformer's width, blocks and heads (width % heads == 0).
    eot_id: the end-of-text token id.
    activation, norm_epsilon: the MLP's nonlinearity and the LayerNorms' epsilon.
  """

  vocab_size: int = 49408
  context_length: int = 77
  width: int = 512
  depth: int = 12
  num_heads: int = 8
  eot_id: int = 49407
  activation: str = "quick_gelu"
  norm_epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    t = tokens.shape[1]
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 dtype=self.dtype, name="token_embedding")(tokens)
    pos = self.param("pos_embedding", nn.initializers.normal(0.01),
                     (1, self.context_length, self.width))
    x = (x + pos[:, :t]).astype(self.dtype)
    causal = jnp.tril(jnp.ones((1, 1, t, t), bool))  # query i sees keys j <= i
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, 4 * self.width, dtype=self.dtype,
                       activation=self.activation, norm_epsilon=self.norm_epsilon,
                       name=f"block{i}")(x, causal, train)
    x = nn.LayerNorm(epsilon=self.norm_epsilon, dtype=self.dtype, name="encoder_norm")(x)
    is_eot = tokens == self.eot_id
    eot = jnp.where(is_eot.any(axis=1), jnp.argmax(is_eot, axis=1), t - 1)
    return x[jnp.arange(x.shape[0]), eot]


class CLIP(nn.Module):
  """CLIP: images (B, H, W, C) and tokens (B, T) -> L2-normalised embeddings (B, embed_dim)
  of each, and the clamped log temperature.

  ``model.apply(variables, images, method=CLIP.encode_image)`` and
  ``model.apply(variables, tokens, method=CLIP.encode_text)`` run one tower alone.

  Attributes:
    embed_dim: the shared embedding's width.
    variant: OpenAI's name, ``'B/32'``, ``'B/16'``, ``'L/14'`` (None: the fields below); it
      sets embed_dim, the ViT's width, depth, heads and patch size, and the text tower's
      width, depth and heads, over the fields' values.
    image_tower: 'vit' (the project's ViT, OpenAI's layout) or 'resnet' (the project's
      ResNet backbone, global average pooling).
    patch_size, image_width, image_depth, image_heads: the ViT's patch size P, width, blocks
      and heads (MLP 4 x width); images are H x W with H, W multiples of P, and the position
      embedding, fixed at ``init``, fixes H x W.
    resnet_stages, resnet_block, resnet_width, resnet_stem: the ResNet backbone's
      ``stage_sizes``, ``block``, ``width`` and ``stem`` (default: ResNet-50).
    text_width, text_depth, text_heads: the text transformer's width, blocks and heads.
    vocab_size: token ids are 0 .. vocab_size - 1 (OpenAI's BPE: 49408).
    context_length: the longest text T (OpenAI's: 77); shorter ones use the first T position
      embeddings.
    eot_id: the end-of-text id, whose first position is read (None: vocab_size - 1, OpenAI's).
    activation: both transformers' MLP nonlinearity, 'quick_gelu' (OpenAI's) or 'gelu'.
    norm_epsilon: the transformers' LayerNorm epsilon (1e-5, OpenAI's).
    logit_bias: the initial value of a learned scalar ``logit_bias`` for SigLIP's loss (None:
      no such parameter, CLIP's loss).
    dtype: compute dtype; parameters stay float32 and the embeddings are normalised in float32.
  """

  embed_dim: int = 512
  variant: str | None = None
  image_tower: str = "vit"
  patch_size: int = 32
  image_width: int = 768
  image_depth: int = 12
  image_heads: int = 12
  resnet_stages: Sequence[int] = (3, 4, 6, 3)
  resnet_block: str = "bottleneck"
  resnet_width: int = 64
  resnet_stem: str = "imagenet"
  text_width: int = 512
  text_depth: int = 12
  text_heads: int = 8
  vocab_size: int = 49408
  context_length: int = 77
  eot_id: int | None = None
  activation: str = "quick_gelu"
  norm_epsilon: float = 1e-5
  logit_bias: float | None = None
  dtype: jnp.dtype = jnp.float32

  def settings(self) -> dict:
    """The architecture after ``variant`` is applied, with each setting checked."""
    s = {"embed_dim": self.embed_dim, "patch_size": self.patch_size,
         "image_width": self.image_width, "image_depth": self.image_depth,
         "image_heads": self.image_heads, "text_width": self.text_width,
         "text_depth": self.text_depth, "text_heads": self.text_heads}
    if self.variant:
      name = self.variant.partition("/")[0]
      choose("CLIP variant", name, TEXT_VARIANTS)
      image = decode_variant(self.variant)
      s.update(image_width=image["width"], image_depth=image["depth"],
               image_heads=image["num_heads"], patch_size=image.get("patch_size", s["patch_size"]))
      s["embed_dim"], s["text_width"], s["text_depth"], s["text_heads"] = TEXT_VARIANTS[name]
    choose("CLIP image_tower", self.image_tower, IMAGE_TOWERS)
    choose("CLIP activation", self.activation, ACTIVATIONS)
    if s["text_width"] % s["text_heads"]:
      raise ConfigError(f"CLIP text_width {s['text_width']} does not split into "
                        f"{s['text_heads']} heads; use a width divisible by text_heads.")
    s["eot_id"] = self.vocab_size - 1 if self.eot_id is None else self.eot_id
    if not 0 <= s["eot_id"] < self.vocab_size:
      raise ConfigError(f"CLIP eot_id {s['eot_id']} is not a token id of the vocabulary of "
                        f"{self.vocab_size}; use one in 0..{self.vocab_size - 1}.")
    return s

  def setup(self):
    s = self.settings()
    if self.image_tower == "vit":
      self.image = ViT(num_classes=0, patch_size=s["patch_size"], width=s["image_width"],
                       depth=s["image_depth"], num_heads=s["image_heads"], pool_type="tok",
                       posemb="learn", cls_posemb=True, pre_norm=True,
                       activation=self.activation, patch_bias=False,
                       norm_epsilon=self.norm_epsilon, dtype=self.dtype)
    else:
      self.image = ResNetBackbone(tuple(self.resnet_stages), self.resnet_block,
                                  self.resnet_width, self.resnet_stem, dtype=self.dtype)
    self.text = TextTransformer(self.vocab_size, self.context_length, s["text_width"],
                                s["text_depth"], s["text_heads"], s["eot_id"], self.activation,
                                self.norm_epsilon, self.dtype)
    self.image_projection = nn.Dense(s["embed_dim"], use_bias=False, dtype=self.dtype)
    self.text_projection = nn.Dense(s["embed_dim"], use_bias=False, dtype=self.dtype)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(LOGIT_SCALE_INIT), ())
    if self.logit_bias is not None:
      self.param("logit_bias", nn.initializers.constant(self.logit_bias), ())

  def encode_image(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """images (B, H, W, C) -> L2-normalised embeddings (B, embed_dim), float32. The ResNet
    tower's BatchNorm uses the batch's statistics when ``train`` (then ``batch_stats`` must be
    mutable)."""
    if self.image_tower == "vit":
      features = self.image(images, train=train)                    # (B, width)
    else:
      features = self.image(images, train=train)[-1].mean(axis=(1, 2))  # (B, channels)
    return l2_normalize(self.image_projection(features).astype(jnp.float32))

  def encode_text(self, tokens: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """tokens (B, T) int, T <= context_length, each text ending with ``eot_id`` (padding after
    it is ignored) -> L2-normalised embeddings (B, embed_dim), float32."""
    self._check_tokens(tokens)
    return l2_normalize(self.text_projection(self.text(tokens, train=train)).astype(jnp.float32))

  def __call__(self, images: jnp.ndarray, tokens: jnp.ndarray,
               train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """images (B, H, W, C), tokens (B', T) -> (image embeddings (B, embed_dim), text
    embeddings (B', embed_dim), log temperature s, a scalar at most log(100)); the logits are
    ``exp(s) * image_emb @ text_emb.T``."""
    return (self.encode_image(images, train), self.encode_text(tokens, train),
            jnp.minimum(self.logit_scale, LOGIT_SCALE_MAX))

  def _check_tokens(self, tokens: jnp.ndarray) -> None:
    """Shapes and dtype always; the ids' range where their values are known (outside jit)."""
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise DataError(f"CLIP takes token ids of shape (B, T) and an integer dtype; got shape "
                      f"{tuple(tokens.shape)} of {tokens.dtype}.")
    if tokens.shape[1] > self.context_length:
      raise DataError(f"CLIP texts are at most context_length={self.context_length} tokens; "
                      f"got {tokens.shape[1]}: tokenize with that length.")
    if not isinstance(tokens, jax.core.Tracer) and tokens.size:
      low, high = int(np.min(tokens)), int(np.max(tokens))
      if low < 0 or high >= self.vocab_size:
        raise DataError(f"CLIP token ids must lie in 0..{self.vocab_size - 1} "
                        f"(vocab_size={self.vocab_size}); got ids from {low} to {high}.")


def _numpy(value) -> np.ndarray:
  """A torch tensor (any device or dtype) or an array as a float32 numpy array."""
  if hasattr(value, "detach"):
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, np.float32)


def _count_blocks(state_dict: Mapping, prefix: str) -> int:
  return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


def _heads(given: int | None, width: int, tower: str) -> int:
  """OpenAI's rule, width // 64 heads (every released checkpoint), unless given."""
  heads = given or width // 64
  if not heads or width % heads:
    raise ConfigError(f"the {tower} tower of width {width} does not split into width // 64 "
                      f"heads (OpenAI's rule); pass {tower}_heads= with a divisor of {width}.")
  return heads


def from_openai(state_dict: Mapping, *, image_heads: int | None = None,
                text_heads: int | None = None,
                dtype: jnp.dtype = jnp.float32) -> tuple[CLIP, dict]:
  """OpenAI's CLIP weights (``clip.load(...)[0].state_dict()`` or a ``torch.load``-ed
  checkpoint: name -> torch tensor or array) as ``(model, variables)`` of :class:`CLIP`.

  The architecture is read from the shapes, as OpenAI's ``build_model`` does: the ViT's width,
  blocks and patch size, the image size (patch size x the grid of the position embedding),
  embed_dim, context_length, vocab_size, the text width and blocks. Heads are not stored;
  OpenAI's rule, width // 64, is used unless ``image_heads`` / ``text_heads`` say otherwise.
  The variables are float32 numpy arrays; the model computes in ``dtype``. Images go in as
  (B, H, W, 3) with H = W = the checkpoint's resolution, normalised as OpenAI's preprocess
  does. Only ViT image towers convert; OpenAI's ModifiedResNet (RN50, ...) is refused.

  PyTorch -> flax: a Linear weight (out, in) is transposed; ``attn.in_proj_weight`` (3D, D)
  splits into the query, key and value kernels (D, heads, D / heads) and ``out_proj`` into
  (heads, D / heads, D); the patch convolution (O, I, kh, kw) becomes (kh, kw, I, O); the
  projections (width, embed_dim) are kernels as they are (OpenAI computes x @ proj).
  """
  if "visual.proj" not in state_dict:
    if any(k.startswith("visual.layer1.") for k in state_dict):
      raise ConfigError("from_openai converts OpenAI's ViT image towers only; this state dict "
                        "holds a ModifiedResNet (visual.layer1...), which it does not convert.")
    raise DataError("from_openai takes the state dict of an OpenAI CLIP model; this one has no "
                    "'visual.proj' (found keys such as "
                    f"{', '.join(repr(k) for k in list(state_dict)[:3])}).")
  sd = {k: v for k, v in state_dict.items()
        if k not in ("input_resolution", "context_length", "vocab_size")}  # JIT archives' extras
  used = set()

  def get(key: str) -> np.ndarray:
    if key not in sd:
      raise DataError(f"from_openai: the state dict lacks {key!r}; is it a complete OpenAI "
                      f"CLIP checkpoint?")
    used.add(key)
    return _numpy(sd[key])

  conv = get("visual.conv1.weight")                       # (width, 3, P, P)
  image_width, patch = conv.shape[0], conv.shape[-1]
  grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
  text_width = sd["ln_final.weight"].shape[0]
  model = CLIP(
      embed_dim=sd["text_projection"].shape[1], image_tower="vit", patch_size=patch,
      image_width=image_width, image_depth=_count_blocks(sd, "visual.transformer.resblocks."),
      image_heads=_heads(image_heads, image_width, "image"), text_width=text_width,
      text_depth=_count_blocks(sd, "transformer.resblocks."),
      text_heads=_heads(text_heads, text_width, "text"),
      vocab_size=sd["token_embedding.weight"].shape[0],
      context_length=sd["positional_embedding"].shape[0], activation="quick_gelu",
      norm_epsilon=1e-5, dtype=dtype)

  def norm(prefix: str) -> dict:
    return {"scale": get(f"{prefix}.weight"), "bias": get(f"{prefix}.bias")}

  def dense(prefix: str) -> dict:
    return {"kernel": get(f"{prefix}.weight").T, "bias": get(f"{prefix}.bias")}

  def block(prefix: str, heads: int) -> dict:
    w, b = get(f"{prefix}.attn.in_proj_weight"), get(f"{prefix}.attn.in_proj_bias")
    d = w.shape[1]
    attention = {name: {"kernel": w[i * d:(i + 1) * d].T.reshape(d, heads, d // heads),
                        "bias": b[i * d:(i + 1) * d].reshape(heads, d // heads)}
                 for i, name in enumerate(("query", "key", "value"))}
    attention["out"] = {"kernel": get(f"{prefix}.attn.out_proj.weight").T.reshape(
        heads, d // heads, d), "bias": get(f"{prefix}.attn.out_proj.bias")}
    return {"norm1": norm(f"{prefix}.ln_1"), "attention": attention,
            "norm2": norm(f"{prefix}.ln_2"),
            "mlp": {"fc1": dense(f"{prefix}.mlp.c_fc"), "fc2": dense(f"{prefix}.mlp.c_proj")}}

  image = {"embedding": {"projection": {"kernel": conv.transpose(2, 3, 1, 0)}},
           "cls": get("visual.class_embedding").reshape(1, 1, image_width),
           "pos_embedding": get("visual.positional_embedding")[None],
           "pre_norm": norm("visual.ln_pre"), "encoder_norm": norm("visual.ln_post"),
           **{f"block{i}": block(f"visual.transformer.resblocks.{i}", model.image_heads)
              for i in range(model.image_depth)}}
  text = {"token_embedding": {"embedding": get("token_embedding.weight")},
          "pos_embedding": get("positional_embedding")[None],
          "encoder_norm": norm("ln_final"),
          **{f"block{i}": block(f"transformer.resblocks.{i}", model.text_heads)
             for i in range(model.text_depth)}}
  params = {"image": image, "text": text,
            "image_projection": {"kernel": get("visual.proj")},
            "text_projection": {"kernel": get("text_projection")},
            "logit_scale": get("logit_scale").reshape(())}
  unused = sorted(set(sd) - used)
  if unused:
    raise DataError(f"from_openai found entries it does not know in this state dict "
                    f"({', '.join(map(repr, unused[:3]))}); it converts OpenAI's ViT CLIP "
                    f"checkpoints only.")
  # The converted tree must be the one the model builds, leaf for leaf.
  size = patch * grid
  expected = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)),
      jnp.zeros((1, model.context_length), jnp.int32)))["params"]
  shapes = jax.tree.map(lambda a: tuple(a.shape), params)
  if shapes != jax.tree.map(lambda a: tuple(a.shape), expected):
    raise DataError("from_openai: the converted weights do not match the architecture read "
                    "from the state dict; is it an OpenAI CLIP checkpoint?")
  return model, {"params": params}


def load_openai(name: str) -> Mapping:
  """The PyTorch state dict of OpenAI's pretrained CLIP ``name`` (``'ViT-B/32'``, ...), from
  ``clip.load``, which downloads it the first time (needs internet and ``pip install
  "m2m_jax[clip]"``); convert it with :func:`from_openai`."""
  try:
    clip = importlib.import_module("clip")
  except ImportError as e:
    raise ConfigError(f"loading OpenAI's CLIP {name!r} needs OpenAI's clip package and "
                      f"PyTorch, which do not import here ({e}); install them with pip install "
                      "\"m2m_jax[clip]\".") from e
  if name not in clip.available_models():
    raise ConfigError(f"OpenAI has no CLIP named {name!r}; choose from "
                      f"{', '.join(clip.available_models())}.")
  return clip.load(name, device="cpu", jit=False)[0].state_dict()
