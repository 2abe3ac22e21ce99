"""DCGAN: the seed's generator and discriminator, alternating updates, non-saturating loss.

Presets (held-out numbers; "MNIST FD" / "digits FD" is the Fréchet distance of 1,000 (digits:
359) samples to the training split in the features of the project's CNN trained on the same
data, m2m_jax/algorithms/sample_quality.py, beside ``fd_real``, the test split's; the judge's
confidence on the samples and the classes it finds among them. Measured 2026-12-02, jax 0.10.2,
on the idle 2 CPU cores, the judge cached):
  default  mnist5k (real 28x28 MNIST, offline; 4,000 / 1,000), layout 7x7 -> 14 -> 28, w = 16
           (G 347,073 + D 36,577 = 383,650 parameters), batch 64, 2,000 steps (32 epochs):
           MNIST FD 75.41 (fd_real 2.78), confidence 0.862, 10 of 10 classes (the judge: 97.7%
           on real test digits). 107 s, plus about 40 s the first time, to train the judge.
           A GAN's FD moves a lot with the smallest change: initial weights 1 ulp apart (the
           init compiled as one program instead of op by op) gave 59.96 before; seeds 1 and 2
           give 55.86 and 63.34. The DCGAN tutorial's learning rate 2e-4 reached FD 96.1 in the
           same 2,000 steps.
  digits   scikit-learn digits upsampled to 16x16 (offline; 1,438 / 359), layout 4x4 -> 8 -> 16,
           w = 16 (135,873 + 34,465 = 170,338 parameters), 1,500 steps: digits FD 21.48
           (fd_real 5.77), confidence 0.902, 10 of 10 classes; 45 s.
  mnist    tfds MNIST (60,000 / 10,000), w = 64 (2,321,026 parameters), learning rate 2e-4,
           batch 128, 10 epochs (not measured here).
  seed     the original on tfds CIFAR-10, 32x32x3, the layout 4x4 -> 8 -> 16 -> 32 with w = 64
           (G 3,448,579 + D 2,637,441 parameters), Adam 2e-4, beta1 0.5, batch 128, 25 epochs
           (not measured here; its FD is judged by the CNN trained on CIFAR-10: "CIFAR-10 FD").
The original printed no number (its notebook is lost; its README shows an 8x8 grid of CIFAR-10
samples), and its optimizer and budget are unknown: the presets use the PyTorch DCGAN tutorial's
Adam with beta1 = 0.5 for both players (2e-4 for mnist and seed, 5e-4 for the short offline
runs). What the library adds: the non-saturating generator loss stated and tested, samples
over training kept in the checkpointed state, and a number for the samples (the FD).

  python -m m2m_jax.main --config=configs/gan.py --workdir=runs/gan
  python -m m2m_jax.main --config=configs/gan.py:seed --workdir=runs/gan_seed \
      --config.data.download=True   # the first time: needs internet and TensorFlow
"""

from m2m_jax import configlib, evaluators
from m2m_jax.algorithms import sample_quality


def default():
  c = configlib.base()
  c.algorithm = "gan"
  c.dataset = "mnist5k"
  # Model: w = width; the layout follows the image size (m2m_jax/models/gan.py).
  c.model_name = "dcgan"
  c.model.conv_impl = "auto"  # "cpu" (m2m_jax.ops.conv), "xla" or "auto" (cpu on a CPU)
  c.model.width = 16
  c.model.latent_dim = 100
  c.generator_loss = "non_saturating"
  # Optimizer of each player: Adam with beta1 0.5 (the DCGAN recipe), at 5e-4 rather than 2e-4.
  c.optimizer = "adam"
  c.learning_rate = 5e-4
  c.beta1 = 0.5
  c.schedule = "constant"
  c.batch_size = 64
  c.num_steps = 2000
  # Samples over training: G(fixed z) for `snapshot_samples` z at `snapshots` steps.
  c.snapshots = 8
  c.snapshot_samples = 12
  # Sample quality: as many samples as test images.
  c.fd = sample_quality.default_config()
  c.evals.samples = evaluators.spec("samples", every=-1)  # after training
  # Cadence.
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  return c


def digits():
  c = default()
  c.dataset = "digits"
  c.data.upsample = 2
  c.model.width = 16
  c.num_steps = 1500
  return c


def mnist():
  c = default()
  configlib.use_tfds(c, "mnist")
  c.model.width = 64
  c.learning_rate = 2e-4
  c.batch_size = 128
  c.num_steps = 0
  c.num_epochs = 10.0
  c.eval_every = 2000
  c.checkpoint_every = 2000
  return c


def seed():
  c = mnist()
  configlib.use_tfds(c, "cifar10")
  c.num_epochs = 25.0
  return c


PRESETS = {"default": default, "digits": digits, "mnist": mnist, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
