"""tensorflow-datasets by name, through the TensorFlow-free random-access ``tfds.data_source``.

Reading needs the dataset prepared in ``data_dir`` (array_record format). Preparing it the first
time downloads it and needs TensorFlow (``pip install -e ".[tf]"``; Colab has it).
"""

from importlib.util import find_spec

import numpy as np

from m2m_jax.data.core import Dataset
from m2m_jax.errors import ConfigError, DataError


class TfdsSplit:
  """One tfds split with random access, as ``{'x': float32, 'y': int32 or float32}``.

  ``x`` is the record's ``x_key`` feature: an image (uint8) is scaled to [0, 1]; a dict of
  scalar features (e.g. wine_quality's) becomes a vector in the dict's sorted key order. ``y``
  is the ``y_key`` feature: int32 for class labels, float32 for a real target.

  For segmentation, ``image_size = s > 0`` resizes every image to (s, s) (bilinear, with
  antialiasing) and an image-shaped ``y`` such as a label mask (H, W, 1) to (s, s, 1) (nearest
  neighbour, so labels stay labels); ``mask_values`` turns ``y`` into a float32 binary mask,
  1.0 where it equals one of the values.
  """

  def __init__(self, source, x_key: str = "image", y_key: str = "label", image_size: int = 0,
               mask_values: tuple = ()):
    self.source, self.x_key, self.y_key = source, x_key, y_key
    self.image_size, self.mask_values = image_size, tuple(mask_values)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    records = self.source.__getitems__([int(i) for i in np.asarray(idx)])
    xs = [_features(r[self.x_key]) for r in records]
    ys = [np.asarray(r[self.y_key]) for r in records]
    scale = 255.0 if xs[0].dtype == np.uint8 else 1.0
    if self.image_size:
      xs = [_resize(a, self.image_size, "bilinear") for a in xs]
      ys = [_resize(a, self.image_size, "nearest") if a.ndim == 3 else a for a in ys]
    x, y = _stack(xs, self.x_key), _stack(ys, self.y_key)
    x = x.astype(np.float32) / scale
    if self.mask_values:
      return {"x": x, "y": np.isin(y, self.mask_values).astype(np.float32)}
    return {"x": x, "y": y.astype(np.int32 if np.issubdtype(y.dtype, np.integer) else np.float32)}


def _stack(arrays: list[np.ndarray], key: str) -> np.ndarray:
  shapes = {a.shape for a in arrays}
  if len(shapes) > 1:
    raise DataError(f"feature {key!r} comes in different shapes "
                    f"({', '.join(map(str, sorted(shapes)))}); set config.data.image_size to "
                    "resize images and masks to one square size.")
  return np.stack(arrays)


def _resize(image: np.ndarray, size: int, method: str) -> np.ndarray:
  """(H, W, C) -> (size, size, C) float32, channel by channel with Pillow."""
  from PIL import Image
  resample = Image.Resampling.BILINEAR if method == "bilinear" else Image.Resampling.NEAREST
  return np.stack([np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F")
                              .resize((size, size), resample)) for c in range(image.shape[-1])], -1)


def _features(value) -> np.ndarray:
  """A feature as an array; a dict of scalar features as a vector in sorted key order."""
  if isinstance(value, dict):
    return np.asarray([value[k] for k in sorted(value)], np.float32)
  return np.asarray(value)


def load(name: str, data_dir: str | None = None, train_split: str = "train",
         test_split: str = "test", x_key: str = "image", y_key: str = "label",
         download: bool = False, image_size: int = 0, mask_values: tuple = ()) -> Dataset:
  """Opens tfds dataset ``name`` (e.g. ``mnist``, ``cifar10``) for random access.

  Args:
    name: tfds name.
    data_dir: where the prepared dataset lives (tfds' default if None).
    train_split, test_split: tfds split names, slicing allowed (``'train[:90%]'``).
    x_key, y_key: the features read as input and target (``'features'`` and ``'label'`` for
      iris; ``'features'`` and ``'quality'`` for wine_quality).
    download: prepare the dataset first if it is missing (needs internet and TensorFlow).
    image_size: resize images (and image-shaped targets, by nearest neighbour) to this square
      size; 0 keeps them as stored (they must then share one shape).
    mask_values: make ``y`` a binary float mask, 1.0 where it equals one of these values
      (``(1,)`` with ``y_key='segmentation_mask'`` is the pet in oxford_iiit_pet's trimap).
  """
  import tensorflow_datasets as tfds
  if image_size < 0:
    raise ConfigError(f"image_size must be >= 0 (0 keeps the stored size), got {image_size}.")
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
  train, test = (TfdsSplit(s, x_key, y_key, image_size, mask_values) for s in (train, test))
  num_classes = None if mask_values else getattr(features[y_key], "num_classes", None)
  return Dataset(f"tfds:{name}", train, test, num_classes, f"tensorflow-datasets {name}")
