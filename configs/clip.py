"""CLIP (models/clip.py, algorithms/clip.py): an image ViT and a causal text transformer trained
contrastively on captioned images; retrieval recalls and zero-shot accuracy on the test split.

Presets (held-out split; measured on 2 CPU cores, jax 0.10.2):
  default   captioned shapes 32x32 (4,000 / 1,000; seven captions an image saying its shape,
            colour, size and place, or some of them; four (shape, colour) pairs never in
            training, half the test images of those): ViT patch 8, width 64, 3 blocks; text
            width 64, 2 blocks, a word vocabulary of the captions; embeddings 64; CLIP's
            symmetric InfoNCE over batches of 256, a caption two images share a positive for
            both; AdamW with warmup and cosine, 60 epochs: text -> image recall@5 100%, image
            -> text 100%, zero-shot 95.3% (held-out pairs 90.8%, seen 99.8%) in 127 s
            (offline); seeds 1 and 2: held-out pairs 88.0% and 79.2%.
  siglip    the same with SigLIP's sigmoid loss and its learned bias (offline).
  digits    mnist5k digits captioned by their labels ("a photo of the digit seven") (offline).
  coco      tfds coco_captions (Karpathy's splits: train + restval, 113k images, 5 captions
            each; test 5,000): CLIP ViT-B/32 from scratch at 224 (images squashed, not cropped),
            OpenAI's BPE, batch 512, bfloat16, 32 epochs (for an accelerator; not run here).
  seed      the original notebook's experiment: OpenAI's pretrained ViT-B/32 (clip.load,
            converted by from_openai), evaluated on coco_captions' test split without training
            (num_epochs 0): zero-shot retrieval recalls and p_right_caption, the probability it
            gives an image's own caption among five (the original: 0.9990 on one Flickr8k image
            and 5 captions). Needs internet and pip install "m2m_jax[clip]"; not run here.

  python -m m2m_jax.main --config=clip --workdir=runs/clip
"""

from m2m_jax import configlib, evaluators

# OpenAI's preprocessing: the RGB mean and standard deviation its CLIP models were trained with.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


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
  c.shared_positives = True   # a caption two images of the batch share is positive for both
  c.prompts = ("a {}", "there is a {}")  # zero-shot templates of the class names
  c.optimizer = "adamw"
  c.learning_rate = 2e-3
  c.weight_decay = 0.1
  c.schedule = "cosine"
  c.warmup_steps = 100
  c.grad_clip_norm = 1.0
  c.batch_size = 256
  c.num_epochs = 60.0
  c.log_every = 50
  c.eval_every = 400
  c.checkpoint_every = 400
  c.evals.zeroshot = evaluators.spec("zeroshot")
  c.pretrained = ""           # an OpenAI CLIP name ('ViT-B/32') starts from OpenAI's weights
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


def coco():
  c = default()
  configlib.use_tfds(c, "coco_captions", train_split="train+restval", test_split="test",
                     keys={"x": "image", "tokens": "captions/text"}, image_size=224,
                     texts_per_example=5, context_length=77)
  c.transforms = c.eval_transforms = f"normalize({OPENAI_MEAN}, {OPENAI_STD})"
  c.model = {"embed_dim": 512, "patch_size": 32, "image_width": 768, "image_depth": 12,
             "image_heads": 12, "text_width": 512, "text_depth": 12, "text_heads": 8,
             "activation": "quick_gelu"}  # OpenAI's ViT-B/32
  c.evals = evaluators.default_config()  # captions without classes: no zero-shot classifier
  c.learning_rate = 5e-4
  c.weight_decay = 0.2
  c.warmup_steps = 2000
  c.batch_size = 512
  c.num_epochs = 32.0
  c.log_every = 100
  c.eval_every = 2000
  c.checkpoint_every = 2000
  c.dtype = "bfloat16"
  return c


def seed():
  c = coco()
  c.pretrained = "ViT-B/32"
  c.num_epochs = 0.0          # evaluation only, as the original
  c.dtype = "float32"
  c.eval_batch_size = 250
  return c


PRESETS = {"default": default, "siglip": siglip, "digits": digits, "coco": coco, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
