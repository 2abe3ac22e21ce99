"""How good are generated images? A Fréchet distance in the features of the project's own CNN.

FID (Heusel et al., 2017) fits a Gaussian to the Inception-v3 features of real images and one to
those of generated images and reports their Fréchet distance
``|mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` (:func:`m2m_jax.ops.metrics.frechet_distance`).
Inception needs downloaded ImageNet weights and sees 299x299 RGB photos; here the feature
extractor is the **judge**: the CNN of ``configs/cnn.py`` (its 256 penultimate activations)
trained through the shared loop on the generative model's own dataset, once, and cached on disk.
The numbers are therefore "digits FD" or "MNIST FD": comparable between models judged by the same
judge on the same dataset, not with published FIDs.

The reference is the training split. Beside each model's FD the summary gives the real-vs-real
baseline ``fd_real``, the test split against the training split: an FD near it means samples
as close to the training set as unseen real digits are. FD shrinks with the number of samples
(the covariance estimate's bias), so samples are compared at the test split's size by default.
The judge also reports how sure it is of each sample (``confidence``, its mean maximum softmax
probability; real test digits score about 0.99) and which classes the samples fall in
(``classes``: how many of the dataset's classes the judge assigns to at least 1% of them; a
collapsed generator covers few).

A model of sequences is judged on the images its frames come from: ``config.fd.dataset`` names
that dataset (the latent ODE's rotating mnist5k digits are judged against mnist5k), and the
judge, the reference and ``fd_real`` are then that dataset's.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import configlib, data, report, train
from m2m_jax.errors import DataError
from m2m_jax.ops import metrics

FEATURE_BATCH = 500


def default_config() -> ml_collections.ConfigDict:
  """``config.fd`` of a generative model: ``num_samples`` generated images to judge (0: no
  judging; -1: as many as the test split holds), ``judge_epochs`` of the judge's training (0:
  the cnn config's own), ``cache_dir`` for trained judges (``''``: ``$M2M_CACHE_DIR`` or
  ``~/.cache/m2m_jax``) and the ``dataset`` to judge against (``''``: the model's own)."""
  return ml_collections.ConfigDict({"num_samples": -1, "judge_epochs": 0.0, "cache_dir": "",
                                    "dataset": ""})


def num_samples(config: ml_collections.ConfigDict, dataset: data.Dataset) -> int:
  """How many samples ``config.fd`` asks for (-1: the test split's size; 0 without
  ``config.fd``)."""
  if "fd" not in config:
    return 0
  n = config.fd.num_samples
  return len(dataset.test) if n < 0 else n


def draw(sample: Callable[[jax.Array, int], jax.Array], n: int, key: jax.Array,
         batch: int = 500, desc: str = "sampling") -> np.ndarray:
  """``n`` samples (n, ...) from ``sample(key_i, b)``, which draws b = min(batch, n) of them
  from the key ``fold_in(key, i)`` for i = 0, 1, ..., with a progress bar."""
  b = min(batch, n)
  parts = [np.asarray(sample(jax.random.fold_in(key, i), b))
           for i in report.progress(-(-n // b), 0, desc, unit="batch")]
  return np.concatenate(parts)[:n]


def judge_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The judge: ``configs/cnn.py`` (its ``mnist5k`` preset for mnist5k, else its default),
  seed 0, on ``config.fd.dataset`` with that preset's loader options when it is set, else on
  the dataset of ``config`` with its loader options."""
  name = config.fd.get("dataset") or config.dataset
  judge = configlib.load("cnn", "mnist5k" if name == "mnist5k" else None)
  judge.dataset = name
  if name == config.dataset:
    judge.data = ml_collections.ConfigDict(config.data.to_dict())
  judge.seed = 0
  if config.fd.judge_epochs:
    judge.num_epochs = float(config.fd.judge_epochs)
  return judge


def _cache_root(config: ml_collections.ConfigDict) -> str:
  return (config.fd.cache_dir or os.environ.get("M2M_CACHE_DIR")
          or os.path.join(os.path.expanduser("~"), ".cache", "m2m_jax"))


def judge_workdir(config: ml_collections.ConfigDict) -> str:
  """Where the judge of ``config`` is trained and kept: named by its dataset and a hash of its
  config, so a changed judge is trained anew."""
  judge = judge_config(config)
  digest = hashlib.sha1(judge.to_json(sort_keys=True).encode()).hexdigest()[:12]
  name = judge.dataset.replace(":", "_").replace("/", "_")
  return os.path.join(_cache_root(config), "judges", f"{name}-{digest}")


def prepare(config: ml_collections.ConfigDict, dataset: data.Dataset) -> None:
  """Trains the judge of ``config`` into the cache unless it is there, when ``config.fd``
  asks for samples. The loop calls it before the first training step, so that judging
  samples after training trains nothing.

  A judge is trained in a temporary directory and renamed into the cache when done, so a run
  killed while training one, or two runs training the same one, never leave a half-trained
  judge behind.
  """
  if not num_samples(config, dataset):
    return
  workdir = judge_workdir(config)
  if os.path.exists(os.path.join(workdir, "summary.json")):
    return
  os.makedirs(os.path.dirname(workdir), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(workdir) + ".", dir=os.path.dirname(workdir))
  train.train_and_evaluate(judge_config(config), tmp)
  try:
    os.rename(tmp, workdir)
  except OSError:  # another run finished the same judge first
    shutil.rmtree(tmp, ignore_errors=True)


def load_judge(config: ml_collections.ConfigDict, dataset: data.Dataset):
  """The trained judge's state and its held-out accuracy (trained first if not cached)."""
  prepare(config, dataset)
  judge, workdir = judge_config(config), judge_workdir(config)
  with open(os.path.join(workdir, "summary.json")) as f:
    accuracy = json.load(f)["test"]["accuracy"]
  return train.load_state(judge, workdir), accuracy


@jax.jit
def _judge(state, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Images (B, H, W, C) -> the judge's features (B, 256) and class probabilities (B, K)."""
  logits, inter = state.apply_fn({"params": state.params}, x, mutable=["intermediates"])
  return inter["intermediates"]["features"][0], jax.nn.softmax(logits.astype(jnp.float32))


def judge_images(state, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Features (N, 256) and class probabilities (N, K) of images (N, H, W, C) in [0, 1]."""
  parts = [_judge(state, jnp.asarray(images[i:i + FEATURE_BATCH], jnp.float32))
           for i in range(0, len(images), FEATURE_BATCH)]
  return tuple(np.concatenate([np.asarray(p[j]) for p in parts]) for j in range(2))


def _all(split: data.Split) -> np.ndarray:
  return split[np.arange(len(split))]["x"]


def evaluate(config: ml_collections.ConfigDict, dataset: data.Dataset,
             samples: dict[str, np.ndarray]) -> dict[str, float]:
  """Judges generated images against the training split.

  Args:
    config: the generative model's config (``config.fd``, ``config.dataset``, ``config.data``).
    dataset: its dataset (unused when ``config.fd.dataset`` names another).
    samples: a name -> generated images (N, H, W, C) in [0, 1], shaped like the judged
      dataset's.

  Returns:
    For each name n, with the prefix ``n_`` unless n is ``''``: ``fd`` (against the training
    split), ``confidence`` and ``classes``; and ``fd_real`` (test split against training split)
    and ``judge_accuracy``. Empty when ``config.fd.num_samples`` is 0.
  """
  if not num_samples(config, dataset):
    return {}
  state, accuracy = load_judge(config, dataset)
  if config.fd.get("dataset"):
    judge = judge_config(config)
    dataset = data.load(judge.dataset, **judge.data)
  test_images = _all(dataset.test)
  reference = metrics.gaussian_fit(judge_images(state, _all(dataset.train))[0])
  real = metrics.gaussian_fit(judge_images(state, test_images)[0])
  out = {"fd_real": metrics.frechet_distance(*real, *reference), "judge_accuracy": accuracy}
  shape = test_images.shape[1:]
  for name, images in samples.items():
    images = np.asarray(images, np.float32)
    if images.shape[1:] != shape or not np.all(np.isfinite(images)):
      raise DataError(f"samples {name!r} must be finite images of shape (N, {', '.join(map(str, shape))}) "
                      f"like the dataset's; got shape {images.shape}.")
    features, probs = judge_images(state, np.clip(images, 0, 1))
    share = np.bincount(probs.argmax(1), minlength=probs.shape[1]) / len(probs)
    prefix = f"{name}_" if name else ""
    out[prefix + "fd"] = metrics.frechet_distance(*metrics.gaussian_fit(features), *reference)
    out[prefix + "confidence"] = float(probs.max(1).mean())
    out[prefix + "classes"] = int(np.sum(share >= 0.01))
  return out
