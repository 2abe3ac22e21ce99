"""Colorization with the original residual autoencoder, its bugs fixed (see the model's docstring).

Presets (held-out mean per-image MSE and PSNR of the colorized RGB image, against the grey
image's, and the share of the true colour (mean Lab chroma) it gives back; measured on 2 CPU
cores, jax 0.10.2, 2026-12-01):
  default  width 8 (235,706 parameters), Lab head: the chroma (a, b) from the lightness L, on
           32x32 crops of scikit-learn's two photos (offline; 3,200 training crops with their
           mirrors, 78 held-out crops from a band no training crop overlaps), 1,000 steps:
           PSNR 23.45 dB (grey 18.56 dB), MSE 0.0097 (grey 0.0283), 65% of the colour, 106 s.
  rgb      the same network with the original's RGB head (through a sigmoid): PSNR 20.30 dB,
           MSE 0.0186, 64% of the colour, 108 s. Both heads wash colours out about alike (the
           squared error averages the plausible colours); the Lab head keeps the exact
           lightness, which is worth 3.2 dB.
  seed     the original on tfds CIFAR-10 (needs the dataset prepared; not measured here): width
           64 (15,006,723 parameters), RGB head, batch 16, 3 epochs, Adam. The original printed
           a test "loss" of 4.957e-4, an MSE divided by 16: about 7.9e-3 per pixel (21.0 dB).
           What differs: the grey input is the CIE lightness L / 100, no dead grayscale branch,
           a ReLU between the two 1x1 maps, a sigmoid on the RGB output, no vertical flips (no
           augmentation at all: CIFAR-10 is read as it is), and the learning rate is 1e-3 with
           a cosine decay instead of a constant 1e-2 (on the photos, 150 steps of this network
           at batch 16 and a constant rate end at a training MSE of 0.0139 with 1e-3, 0.0188
           with 1e-2).

  python -m m2m_jax.main --config=configs/colorize.py --workdir=runs/colorize
  python -m m2m_jax.main --config=configs/colorize.py:seed --workdir=runs/colorize_seed \
      --config.data.download=True   # the first time: needs internet and TensorFlow
"""

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "colorize"
  # Data: 32x32 crops (and their mirrors) of the two sample photos.
  c.dataset = "photos"
  # Model.
  c.model_name = "colorization_net"
  c.model.conv_impl = "auto"  # "cpu" (m2m_jax.ops.conv), "xla" or "auto" (cpu on a CPU)
  c.model.width = 8
  c.model.output = "lab"
  # Optimizer.
  c.optimizer = "adam"
  c.learning_rate = 2e-3
  c.schedule = "cosine"
  c.batch_size = 32
  c.num_epochs = 10.0
  # Cadence.
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 500
  return c


def rgb():
  c = default()
  c.model.output = "rgb"
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "cifar10")
  c.model.width = 64
  c.model.output = "rgb"
  c.learning_rate = 1e-3
  c.batch_size = 16
  c.num_epochs = 3.0
  c.eval_every = 2000
  c.checkpoint_every = 2000
  return c


PRESETS = {"default": default, "rgb": rgb, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
