"""Splits with random access, and the step-indexed batch order."""

import dataclasses
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from m2m_jax.errors import DataError


class Split(Protocol):
  """A split with random access: ``len(split)`` examples, ``split[idx]`` a dict of arrays."""

  def __len__(self) -> int: ...

  def __getitem__(self, idx: np.ndarray) -> dict[str, np.ndarray]: ...


class ArraySplit:
  """A split held in memory as a dict of equally long numpy arrays (checked finite)."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise DataError(f"split arrays differ in length: {lengths}.")
    for k, v in arrays.items():
      if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
        raise DataError(f"array {k!r} holds NaN or inf values.")
    self.arrays = dict(arrays)

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in self.arrays.items()}


class Subset:
  """``n`` examples spread evenly over a split (examples ``i * len(split) // n``; all of them
  when it holds fewer), so that a split sorted by class keeps every class."""

  def __init__(self, split: Split, n: int):
    self.split = split
    n = min(n, len(split))
    self.index = np.arange(n) * len(split) // n

  def __len__(self) -> int:
    return len(self.index)

  def __getitem__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    return self.split[self.index[np.asarray(idx)]]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A named dataset: train and test splits plus what models need to know of it.

  Attributes:
    name: registry name.
    train, test: the splits; each example is a dict of arrays, most often ``{'x': features or
      image (H, W, C) in [0, 1], 'y': int label or float target}``. A field of variable length
      (the boxes of an image) is padded to a fixed length and comes with a boolean
      ``<field>_mask`` (see :func:`pad`).
    num_classes: number of classes, or None for regression / unlabeled data.
    description: one line for READMEs and figures.
    class_names: the name of each class (``()`` when the dataset has none).
    max_lengths: the padded length of each variable-length field (e.g. ``{'boxes': 100}``).
    tokenizer: what turned the text fields (``'tokens'``) into ids, with its vocabulary
      (:mod:`m2m_jax.data.text`); None for a dataset without text.
  """

  name: str
  train: Split
  test: Split
  num_classes: int | None
  description: str = ""
  class_names: tuple[str, ...] = ()
  max_lengths: Mapping[str, int] = dataclasses.field(default_factory=dict)
  tokenizer: Any = None

  def sample(self, n: int = 2) -> dict[str, np.ndarray]:
    """The first ``n`` training examples (for shape inference in ``init``)."""
    return self.train[np.arange(min(n, len(self.train)))]

  @property
  def image_size(self) -> tuple[int, int] | None:
    """(H, W) of the images ``x`` of shape (H, W, C); None when ``x`` is not an image."""
    x = self.sample(1)["x"]
    return tuple(x.shape[1:3]) if x.ndim == 4 else None


def pad(arrays: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
  """Arrays of variable leading length, each (n_i, ...), as one zero-padded batch.

  Returns:
    (padded (B, length, ...), mask (B, length) bool, True on the first min(n_i, length) rows).
    Rows past ``length`` are dropped.
  """
  first = np.asarray(arrays[0])
  padded = np.zeros((len(arrays), length, *first.shape[1:]), first.dtype)
  mask = np.zeros((len(arrays), length), bool)
  for i, a in enumerate(arrays):
    n = min(len(a), length)
    padded[i, :n], mask[i, :n] = np.asarray(a)[:n], True
  return padded, mask


def batch_indices(step: int, *, num_examples: int, batch_size: int, seed: int) -> np.ndarray:
  """Indices of the training batch taken at ``step``: a pure function of (seed, step).

  Each epoch is a fresh permutation seeded by (seed, epoch); the last partial batch of an
  epoch is dropped, so every step sees exactly ``batch_size`` examples.

  Returns:
    int64 array of shape (batch_size,).
  """
  steps_per_epoch = num_examples // batch_size
  if steps_per_epoch == 0:
    raise DataError(
        f"batch_size {batch_size} is larger than the {num_examples} training examples.")
  epoch, within = divmod(step, steps_per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return order[within * batch_size:(within + 1) * batch_size]
