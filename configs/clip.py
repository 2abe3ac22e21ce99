"""CLIP (models/clip.py, algorithms/clip.py): an image ViT and a causal text transformer trained
contrastively on captioned images; retrieval recalls and zero-shot accuracy on the test split.

Presets (held-out split; measured on 2 CPU cores, jax 0.10.2):
  default   captioned shapes 32x32 (4,000 / 1,000; six captions an image saying its shape,
            colour, size and place, or some of them; four (shape, colour) pairs never in
            training, half the test images of those): ViT patch 8, width 64, 3 blocks; text
            width 64, 2 blocks, a word vocabulary of the captions; embeddings 64; CLIP's
            symmetric InfoNCE over batches of 128, AdamW with warmup and cosine, 60 epochs:
            text -> image recall@5 100%, image -> text 97.8%, zero-shot 81.4% (held-out pairs
            66.3%, seen 96.4%) in 133 s (offline).
  siglip    the same with SigLIP's sigmoid loss and its learned bias (offline).
  digits    mnist5k digits captioned by their labels ("a photo of the digit seven") (offline).

  python -m m2m_jax.main --config=clip --workdir=runs/clip
"""

from m2m_jax import configlib, evaluators


def default():
  c = configlib.base()
  c.algorithm = "clip"
  c.dataset = "captioned_shapes"
  c.model_name = "clip"
  c.model.embed_dim = 64
  c.model.patch_size = 8
  c.model.image_width = 64
  c.model.image_depth = 3
  c.model.image_heads = 4
  c.model.text_width = 64
  c.model.text_depth = 2
  c.model.text_heads = 4
  c.model.activation = "gelu"
  c.loss = "clip"
  c.siglip_bias = None        # SigLIP's initial bias (None: -log(batch_size - 1))
  c.prompts = ("a {}", "there is a {}")  # zero-shot templates of the class names
  c.optimizer = "adamw"
  c.learning_rate = 1e-3
  c.weight_decay = 0.1
  c.schedule = "cosine"
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.batch_size = 128
  c.num_epochs = 60.0
  c.log_every = 50
  c.eval_every = 400
  c.checkpoint_every = 400
  c.evals.zeroshot = evaluators.spec("zeroshot")
  return c


def siglip():
  c = default()
  c.loss = "siglip"
  return c


def digits():
  c = default()
  c.dataset = "captioned_digits"
  c.model.image_depth = 2
  c.model.patch_size = 7
  c.prompts = ("a photo of the digit {}", "a handwritten {}")
  c.num_epochs = 10.0
  return c


PRESETS = {"default": default, "siglip": siglip, "digits": digits}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
