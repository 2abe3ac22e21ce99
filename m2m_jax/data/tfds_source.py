"""tensorflow-datasets by name, through the TensorFlow-free random-access ``tfds.data_source``.

Reading needs the dataset prepared in ``data_dir`` (array_record format). Preparing it the first
time downloads it and needs TensorFlow (``pip install -e ".[tf]"``; Colab has it).
"""

from importlib.util import find_spec

import numpy as np

from m2m_jax.data.core import Dataset
from m2m_jax.errors import DataError


class TfdsSplit:
  """One tfds split with random access, as ``{'x': float32, 'y': int32 or float32}``.

  ``x`` is the record's ``x_key`` feature: an image (uint8) is scaled to [0, 1]; a dict of
  scalar features (e.g. wine_quality's) becomes a vector in the dict's sorted key order. ``y``
  is the ``y_key`` feature: int32 for class labels, float32 for a real target.
  """

  def __init__(self, source, x_key: str = "image", y_key: str = "label"):
    self.source, self.x_key, self.y_key = source, x_key, y_key

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    records = self.source.__getitems__([int(i) for i in np.asarray(idx)])
    x = np.stack([_features(r[self.x_key]) for r in records])
    y = np.asarray([r[self.y_key] for r in records])
    return {"x": x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0),
            "y": y.astype(np.int32 if np.issubdtype(y.dtype, np.integer) else np.float32)}


def _features(value) -> np.ndarray:
  """A feature as an array; a dict of scalar features as a vector in sorted key order."""
  if isinstance(value, dict):
    return np.asarray([value[k] for k in sorted(value)], np.float32)
  return np.asarray(value)


def load(name: str, data_dir: str | None = None, train_split: str = "train",
         test_split: str = "test", x_key: str = "image", y_key: str = "label",
         download: bool = False) -> Dataset:
  """Opens tfds dataset ``name`` (e.g. ``mnist``, ``cifar10``) for random access.

  Args:
    name: tfds name.
    data_dir: where the prepared dataset lives (tfds' default if None).
    train_split, test_split: tfds split names, slicing allowed (``'train[:90%]'``).
    x_key, y_key: the features read as input and target (``'features'`` and ``'label'`` for
      iris; ``'features'`` and ``'quality'`` for wine_quality).
    download: prepare the dataset first if it is missing (needs internet and TensorFlow).
  """
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.DatasetNotFoundError:
    hint = ("; some builders (e.g. the tabular iris and wine_quality) load only with "
            "TensorFlow installed: pip install -e \".[tf]\"") if find_spec("tensorflow") is None else ""
    raise DataError(f"tensorflow-datasets has no dataset {name!r}{hint}; see "
                    "https://www.tensorflow.org/datasets/catalog for the names.") from None
  if download:
    builder.download_and_prepare(file_format="array_record")
  try:  # reads local files only; tfds raises NotImplementedError when none are array_record
    train, test = (builder.as_data_source(split=s) for s in (train_split, test_split))
  except NotImplementedError:
    raise DataError(
        f"tfds dataset {name!r} is not prepared as array_record in {builder.data_dir}; prepare "
        "it once with --config.data.download=True (needs internet and TensorFlow).") from None
  features = builder.info.features
  for key in (x_key, y_key):
    if key not in features:
      raise DataError(f"tfds dataset {name!r} has no feature {key!r}; its features are: "
                      f"{', '.join(sorted(features))}.")
  return Dataset(f"tfds:{name}", TfdsSplit(train, x_key, y_key), TfdsSplit(test, x_key, y_key),
                 getattr(features[y_key], "num_classes", None), f"tensorflow-datasets {name}")
