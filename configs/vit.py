"""Vision Transformer classifier (models/vit.py), big_vision's small-data recipe.

Presets (held-out accuracy; measured on 2 CPU cores, jax 0.10.2):
  default   ViT on scikit-learn digits upsampled to 16x16, patch 4 (16 tokens), width 64,
            4 pre-norm blocks of 4 heads, mean pooling, sincos2d positions; AdamW with
            weight decay off biases, norms and position embeddings, warmup then cosine,
            gradient clipping, label smoothing, random shifts, 60 epochs: 96.1% in 35 s
            (offline).
  mnist5k   the same shape at patch 4 on mnist5k's 28x28 digits (49 tokens), 20 epochs: 95.2%
            in 123 s (offline).
  cifar10   tfds CIFAR-10 from scratch: patch 4, width 192, depth 9, random crops, flips and
            mixup, 200 epochs (published from-scratch ViTs reach about 90%; not measured here).
  seed      the original notebook on tfds CIFAR-10: patch 4, width 100, 3 post-norm blocks of
            4 full-width heads, ReLU MLP 200, a class token, no final LayerNorm; Adam 1e-3,
            batch 256, 20 epochs, no augmentation (it never measured an accuracy).
  s16, b16  ViT-S/16 and ViT-B/16 on tfds imagenet2012 at 224x224, for users who have it.

  python -m m2m_jax.main --config=vit --workdir=runs/vit
"""

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "classifier"
  c.dataset = "digits"
  c.data.upsample = 2
  c.transforms = "crop(pad=2)"
  c.model_name = "vit"
  c.model.patch_size = 4
  c.model.width = 64
  c.model.depth = 4
  c.model.num_heads = 4
  c.model.mlp_dim = 128
  c.model.pool_type = "gap"
  c.model.posemb = "sincos2d"
  c.model.dropout = 0.0
  c.model.drop_path_rate = 0.0
  c.optimizer = "adamw"
  c.learning_rate = 2e-3
  c.weight_decay = 0.05
  c.schedule = "cosine"
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.label_smoothing = 0.1
  c.batch_size = 64
  c.num_epochs = 60.0
  c.log_every = 50
  c.eval_every = 400
  c.checkpoint_every = 400
  return c


def mnist5k():
  c = default()
  c.dataset = "mnist5k"
  c.data = {}
  c.num_epochs = 20.0
  return c


def cifar10():
  c = default()
  configlib.use_tfds(c, "cifar10")
  c.transforms = "crop(pad=4)|flip_lr|mixup(0.2)"
  c.model.width, c.model.depth, c.model.num_heads, c.model.mlp_dim = 192, 9, 3, 384
  c.model.drop_path_rate = 0.1
  c.learning_rate = 1e-3
  c.batch_size = 128
  c.num_epochs = 200.0
  c.warmup_steps = 2000
  c.eval_every = 2000
  c.checkpoint_every = 2000
  return c


def seed():
  c = configlib.base()
  c.algorithm = "classifier"
  configlib.use_tfds(c, "cifar10")
  c.model_name = "vit"
  c.model = {"patch_size": 4, "width": 100, "depth": 3, "num_heads": 4, "mlp_dim": 200,
             "block": "seed", "pool_type": "tok", "posemb": "learn", "cls_posemb": True,
             "head_zeroinit": False}
  c.optimizer = "adam"
  c.learning_rate = 1e-3
  c.label_smoothing = 0.0
  c.batch_size = 256
  c.num_epochs = 20.0
  c.eval_every = 1000
  c.checkpoint_every = 1000
  return c


def _imagenet(variant: str):
  c = default()
  configlib.use_tfds(c, "imagenet2012", image_size=224)
  c.transforms = "flip_lr"
  c.model = {"variant": variant, "pool_type": "gap", "posemb": "learn", "dropout": 0.0}
  c.learning_rate = 1e-3
  c.weight_decay = 1e-4
  c.batch_size = 1024
  c.num_epochs = 90.0
  c.warmup_steps = 10_000
  c.eval_every = 5000
  c.checkpoint_every = 5000
  return c


PRESETS = {"default": default, "mnist5k": mnist5k, "cifar10": cifar10, "seed": seed,
           "s16": lambda: _imagenet("S/16"), "b16": lambda: _imagenet("B/16")}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
