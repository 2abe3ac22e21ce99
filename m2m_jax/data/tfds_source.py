"""tensorflow-datasets by name, through the TensorFlow-free random-access ``tfds.data_source``.

Reading needs the dataset prepared in ``data_dir`` (array_record format). Preparing it the first
time downloads it and needs TensorFlow (``pip install -e ".[tf]"``; Colab has it).
"""

import numpy as np

from m2m_jax.data.core import Dataset
from m2m_jax.errors import DataError


class TfdsSplit:
  """One tfds split with random access; images become float32 in [0, 1], labels int32."""

  def __init__(self, source, image_key: str = "image", label_key: str = "label"):
    self.source, self.image_key, self.label_key = source, image_key, label_key

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    records = self.source.__getitems__([int(i) for i in np.asarray(idx)])
    x = np.stack([r[self.image_key] for r in records]).astype(np.float32) / 255.0
    y = np.asarray([r[self.label_key] for r in records], dtype=np.int32)
    return {"x": x, "y": y}


def load(name: str, data_dir: str | None = None, train_split: str = "train",
         test_split: str = "test", download: bool = False) -> Dataset:
  """Opens tfds dataset ``name`` (e.g. ``mnist``, ``cifar10``) for random access.

  Args:
    name: tfds name.
    data_dir: where the prepared dataset lives (tfds' default if None).
    train_split, test_split: tfds split names, slicing allowed (``'train[:90%]'``).
    download: prepare the dataset first if it is missing (needs internet and TensorFlow).
  """
  import tensorflow_datasets as tfds
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.DatasetNotFoundError:
    raise DataError(f"tensorflow-datasets has no dataset {name!r}; see "
                    "https://www.tensorflow.org/datasets/catalog for the names.") from None
  if download:
    builder.download_and_prepare(file_format="array_record")
  try:  # reads local files only; tfds raises NotImplementedError when none are array_record
    train, test = (builder.as_data_source(split=s) for s in (train_split, test_split))
  except NotImplementedError:
    raise DataError(
        f"tfds dataset {name!r} is not prepared as array_record in {builder.data_dir}; prepare "
        "it once with --config.data.download=True (needs internet and TensorFlow).") from None
  label = builder.info.features["label"]
  return Dataset(f"tfds:{name}", TfdsSplit(train), TfdsSplit(test),
                 getattr(label, "num_classes", None), f"tensorflow-datasets {name}")
