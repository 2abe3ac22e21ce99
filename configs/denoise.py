"""Denoising autoencoder (the original's conv encoder / transposed-conv decoder).

Presets (held-out mean per-image MSE and PSNR of the reconstruction, against the corrupted
input's; measured on 2 CPU cores, jax 0.10.2, 2026-12-01; the metrics measured again on
2026-12-07, the test corruption drawn from the shared EVAL_KEY, the times are the first's):
  default     widths 32/64/128 (185,217 parameters) on scikit-learn digits upsampled to 16x16
              (offline; 1,438 / 359), salt-and-pepper noise on 20% of the pixels, 1,320 steps:
              PSNR 21.91 dB (noisy input 10.78 dB), MSE 0.0071 (noisy 0.0851), 42 s.
  bottleneck  the same with an undercomplete code, a 1x1 convolution to 8 channels at 2x2: 32
              numbers for a 256-pixel image (117,129 parameters): PSNR 20.92 dB, MSE 0.0088, 36 s.
  seed        the original on tfds CIFAR-10 (needs the dataset prepared; not measured here):
              widths 64/128/256 (741,379 parameters), pepper noise on 10% of the values, batch
              256, 60 epochs, Adam. The original printed a test MSE of about 1.05e-3 (29.8 dB)
              and no noisy baseline (about 0.029, 15.4 dB, by the formula 0.1 E[x^2]). What
              differs: each image gets its own mask (the original used one for the whole batch),
              the noisy input's PSNR is reported, and the learning rate is 1e-3 with a cosine
              decay instead of a constant 1e-2.

  python -m m2m_jax.main --config=configs/denoise.py --workdir=runs/denoise
  python -m m2m_jax.main --config=configs/denoise.py:seed --workdir=runs/denoise_seed \
      --config.data.download=True   # the first time: needs internet and TensorFlow
"""

from m2m_jax import configlib


def default():
  c = configlib.base()
  c.algorithm = "denoise"
  # Data: 8x8 digits upsampled 2x, so three stride-2 convolutions leave 2x2.
  c.dataset = "digits"
  c.data.upsample = 2
  c.noise = "salt_pepper"
  c.noise_level = 0.2
  # Model.
  c.model_name = "denoising_ae"
  c.model.conv_impl = "auto"  # "cpu" (m2m_jax.ops.conv), "xla" or "auto" (cpu on a CPU)
  c.model.widths = (32, 64, 128)
  c.model.bottleneck = None
  # Optimizer.
  c.optimizer = "adam"
  c.learning_rate = 2e-3
  c.schedule = "cosine"
  c.batch_size = 64
  c.num_epochs = 60.0
  # Cadence.
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 500
  return c


def bottleneck():
  c = default()
  c.model.bottleneck = 8
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "cifar10")
  c.noise, c.noise_level = "pepper", 0.1
  c.model.widths = (64, 128, 256)
  c.learning_rate = 1e-3
  c.batch_size = 256
  c.num_epochs = 60.0
  c.eval_every = 1000
  c.checkpoint_every = 1000
  return c


PRESETS = {"default": default, "bottleneck": bottleneck, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
