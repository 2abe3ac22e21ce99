"""Convolutional variational autoencoder (the original's conv4x4 stride-2 encoder / decoder).

Presets (held-out split, per image in nats: negative ELBO = reconstruction + KL, one
reparameterised sample per image; then the sample quality of as many prior samples as test
images: the Fréchet distance in the features of the project's own classifier trained on the
same data ("MNIST FD" / "digits FD", beside the test-vs-train baseline fd_real), the judge's mean
confidence and the classes it finds (of 10); measured on 2 CPU cores, jax 0.10.2, 2026-12-02,
on a machine shared with four other jobs, so the wall times are inflated several times: the
CPU time is given beside them):
  default  real MNIST digits (mnist5k: 4,000 / 1,000, offline), binarised, Bernoulli
           likelihood; widths 16/32 (28 -> 14 -> 7), latent 16, 93,825 parameters, batch 128,
           60 epochs (1,860 steps), Adam 2e-3 cosine: -ELBO 110.40 = recon 85.66 + KL 24.75
           nats, MSE of the mean reconstruction 0.0145, 16 of 16 units active; MNIST FD 136.6
           (real 2.78), confidence 0.758, 10 classes. 70 s on the idle 2 cores (570 s while
           shared), not counting the judge's one-time training (about 40 s, cached on disk).
  digits   scikit-learn digits upsampled to 16x16 (1,438 / 359), binarised; widths 16/32,
           latent 8, 29,777 parameters, batch 64, 40 epochs (880 steps): -ELBO 80.85 = recon
           70.80 + KL 10.05 nats, 8 of 8 active; digits FD 86.0 (real 5.77), confidence 0.845,
           10 classes. 26 s on the idle 2 cores with the judge cached (263 s shared).
  mnist    tfds MNIST (60,000 / 10,000), binarised, widths 32/64, latent 16, 20 epochs; not
           measured here (needs the dataset prepared).
  seed     the original on tfds CIFAR-10: widths 32/64/128 (32 -> 4), latent 20, 456,043
           parameters, Adam 1e-3 constant, batch 256, 15 epochs, cross-entropy on continuous
           pixels + KL, beta 1; not measured here (needs the dataset prepared). The original
           printed a per-image negative ELBO of 1833.78 nats at epoch 15 (1959.99 at epoch 1)
           on the TRAINING set. What differs: the held-out split is reported, with its
           reconstruction and KL parts and reconstructions; and beside them ``bce_floor``, the
           cross-entropy of a perfect reconstruction (sum of the pixels' binary entropies; at
           most 3,072 log 2 = 2,129 nats), because cross-entropy on continuous pixels is not a
           likelihood and never reaches 0: most of the 1833.78 is that floor. For numbers that
           are a bound on -log p(x), binarise (``binarize=True``, the other presets), or use
           ``likelihood='gaussian'`` (a density, learned scale).

  python -m m2m_jax.main --config=configs/vae.py --workdir=runs/vae
  python -m m2m_jax.main --config=configs/vae.py:digits --workdir=runs/vae_digits
  python -m m2m_jax.main --config=configs/vae.py:seed --workdir=runs/vae_seed \
      --config.data.download=True   # the first time: needs internet and TensorFlow
"""

from m2m_jax import configlib, evaluators
from m2m_jax.algorithms import sample_quality


def default():
  c = configlib.base()
  c.algorithm = "vae"
  # Data: real 28x28 MNIST digits (offline), binarised: a pixel is 1 with its grey level.
  c.dataset = "mnist5k"
  c.likelihood = "bernoulli"
  c.binarize = True
  c.gaussian_scale = 0.0  # 'gaussian' only: 0 learns sigma per channel, > 0 fixes it
  c.beta = 1.0
  # Model: 28 -> 14 -> 7, so two stride-2 convolutions.
  c.model_name = "vae"
  c.model.conv_impl = "auto"  # "cpu" (m2m_jax.ops.conv), "xla" or "auto" (cpu on a CPU)
  c.model.widths = (16, 32)
  c.model.latent = 16
  # Optimizer.
  c.optimizer = "adam"
  c.learning_rate = 2e-3
  c.schedule = "cosine"
  c.batch_size = 128
  c.num_epochs = 60.0
  # Sample quality of as many prior samples as test images (MNIST FD, see sample_quality).
  c.fd = sample_quality.default_config()
  c.evals.samples = evaluators.spec("samples", every=-1)  # after training
  # Cadence.
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 500
  return c


def digits():
  c = default()
  c.dataset = "digits"
  c.data.upsample = 2
  c.model.latent = 8
  c.batch_size = 64
  c.num_epochs = 40.0
  return c


def mnist():
  c = default()
  configlib.use_tfds(c, "mnist")
  c.model.widths = (32, 64)
  c.num_epochs = 20.0
  c.eval_every = 1000
  c.checkpoint_every = 1000
  return c


def seed():
  c = default()
  configlib.use_tfds(c, "cifar10")
  c.binarize = False  # the original's cross-entropy on continuous pixels
  c.model.widths = (32, 64, 128)
  c.model.latent = 20
  c.learning_rate = 1e-3
  c.schedule = "constant"
  c.batch_size = 256
  c.num_epochs = 15.0
  c.eval_every = 1000
  c.checkpoint_every = 1000
  return c


PRESETS = {"default": default, "digits": digits, "mnist": mnist, "seed": seed}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
