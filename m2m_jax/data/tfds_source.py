"""tensorflow-datasets by name, through the TensorFlow-free random-access ``tfds.data_source``.

Reading needs the dataset prepared in ``data_dir`` (array_record format). Preparing it the first
time downloads it and needs TensorFlow (``pip install -e ".[tf]"``; Colab has it).
"""

from importlib.util import find_spec
from typing import Mapping

import numpy as np

from m2m_jax.data.core import Dataset, pad
from m2m_jax.data.text import BPETokenizer
from m2m_jax.errors import ConfigError, DataError

DEFAULT_KEYS = {"x": "image", "y": "label"}


class TfdsSplit:
  """One tfds split with random access, as a dict of arrays named by ``keys``.

  ``keys`` maps each example key to the tfds feature it reads, a path with ``/`` into nested
  features (``{'x': 'image', 'y': 'label', 'boxes': 'objects/bbox'}``). ``x`` is scaled to
  float32 in [0, 1] when it is an image (uint8); a dict of scalar features (e.g.
  wine_quality's) becomes a vector in the dict's sorted key order. ``y`` is int32 for class
  labels, float32 for a real target. A key in ``max_lengths`` has a variable leading length
  (the objects of an image): it is padded with zeros (or cut) to that length, and
  ``<key>_mask`` marks its real entries (:func:`m2m_jax.data.pad`). Other keys keep their
  stored dtype.

  A key in ``texts`` reads text (a caption, or a sequence of them such as coco_captions'
  ``captions/text``): its ``texts_per_example`` texts (a sequence cycled or cut to that many)
  become token ids (texts_per_example, context_length) int32 of ``tokenizer``
  (:mod:`m2m_jax.data.text`), a text too long for the context cut with its end token kept.

  For segmentation, ``image_size = s > 0`` resizes every image to (s, s) (bilinear, with
  antialiasing) and an image-shaped ``y`` such as a label mask (H, W, 1) to (s, s, 1) (nearest
  neighbour, so labels stay labels); ``mask_values`` turns ``y`` into a float32 binary mask,
  1.0 where it equals one of the values.
  """

  def __init__(self, source, keys: Mapping[str, str] = DEFAULT_KEYS, image_size: int = 0,
               mask_values: tuple = (), max_lengths: Mapping[str, int] | None = None,
               texts: tuple[str, ...] = (), tokenizer=None, texts_per_example: int = 5,
               context_length: int = 77):
    self.source, self.keys = source, dict(keys)
    self.image_size, self.mask_values = image_size, tuple(mask_values)
    self.max_lengths = dict(max_lengths or {})
    self.texts, self.tokenizer = tuple(texts), tokenizer
    self.texts_per_example, self.context_length = texts_per_example, context_length

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    records = self.source.__getitems__([int(i) for i in np.asarray(idx)])
    out, scale = {}, 1.0
    for key, path in self.keys.items():
      if key in self.texts:
        out[key] = np.stack([self._tokens(_get(r, path), path) for r in records])
        continue
      values = [_features(_get(r, path)) for r in records]
      if key == "x" and values[0].dtype == np.uint8:
        scale = 255.0
      if self.image_size and (key == "x" or (key == "y" and values[0].ndim == 3)):
        values = [_resize(a, self.image_size, "bilinear" if key == "x" else "nearest")
                  for a in values]
      if key in self.max_lengths:
        out[key], out[f"{key}_mask"] = pad(values, self.max_lengths[key])
      else:
        out[key] = _stack(values, path)
    if "x" in out:
      out["x"] = out["x"].astype(np.float32) / scale
    if "y" in out:
      y = out["y"]
      out["y"] = (np.isin(y, self.mask_values).astype(np.float32) if self.mask_values else
                  y.astype(np.int32 if np.issubdtype(y.dtype, np.integer) else np.float32))
    return out


  def _tokens(self, value, path: str) -> np.ndarray:
    """One example's text feature -> (texts_per_example, context_length) token ids."""
    texts = [value] if isinstance(value, (str, bytes)) else list(np.asarray(value).reshape(-1))
    texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]
    if not texts:
      raise DataError(f"an example has no text in feature {path!r}; every example needs one.")
    texts = [texts[i % len(texts)] for i in range(self.texts_per_example)]
    return self.tokenizer.encode(texts, self.context_length, truncate=True)


def _get(record: dict, path: str):
  """The feature at ``path`` ('objects/bbox') of a record of nested dicts."""
  for part in path.split("/"):
    record = record[part]
  return record


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
         download: bool = False, image_size: int = 0, mask_values: tuple = (),
         keys: Mapping[str, str] | None = None,
         max_lengths: Mapping[str, int] | None = None, texts_per_example: int = 5,
         context_length: int = 77) -> Dataset:
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
    keys: every example key and the feature it reads, ``/`` into nested features (e.g.
      ``{'x': 'image', 'boxes': 'objects/bbox', 'labels': 'objects/label'}`` for voc);
      replaces ``x_key`` and ``y_key`` (None: ``{'x': x_key, 'y': y_key}``).
    max_lengths: the keys of variable length and the length each is padded (or cut) to; each
      comes with a boolean ``<key>_mask``.
    texts_per_example, context_length: a key that reads a text feature (``{'tokens':
      'captions/text'}`` for coco_captions) gives each example's first ``texts_per_example``
      texts (cycled where it has fewer) as OpenAI CLIP's BPE token ids (texts_per_example,
      context_length); the dataset's ``tokenizer`` is that :class:`~m2m_jax.data.text.BPETokenizer`
      (``pip install "m2m_jax[clip]"``).

  The dataset's ``class_names`` are those of the class-label feature read as ``y`` (or, for
  ``keys`` without ``y``, as ``labels``), if it has names.
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
  keys = dict(keys or {"x": x_key, "y": y_key})
  unknown = sorted(set(max_lengths or {}) - set(keys))
  if unknown:
    raise ConfigError(f"max_lengths names {unknown[0]!r}, which is not one of the keys read: "
                      f"{', '.join(keys)}.")
  paths = _feature_paths(builder.info.features)
  for path in keys.values():
    if path not in paths:
      raise DataError(f"tfds dataset {name!r} has no feature {path!r}; its features are: "
                      f"{', '.join(sorted(paths))}.")
  texts = tuple(k for k, path in keys.items() if _is_text(paths[path]))
  tokenizer = None
  if texts:
    if texts_per_example < 1:
      raise ConfigError(f"texts_per_example must be >= 1, got {texts_per_example}.")
    tokenizer = BPETokenizer()
  train, test = (TfdsSplit(s, keys, image_size, mask_values, max_lengths, texts, tokenizer,
                           texts_per_example, context_length) for s in (train, test))
  label = paths.get(keys.get("y", keys.get("labels", "")))
  num_classes = None if mask_values else getattr(label, "num_classes", None)
  return Dataset(f"tfds:{name}", train, test, num_classes, f"tensorflow-datasets {name}",
                 tuple(getattr(label, "names", None) or ()) if num_classes else (),
                 dict(max_lengths or {}), tokenizer)


def _is_text(feature) -> bool:
  """A text feature: ``Text``, or a string ``Tensor`` (coco_captions' captions); tfds reads
  strings, and only strings, as numpy objects."""
  return getattr(feature, "np_dtype", None) == np.object_


def _feature_paths(features, prefix: str = "") -> dict:
  """Every feature of a tfds FeaturesDict by its path: ``{'image': Image, 'objects/bbox':
  BBoxFeature, ...}`` (the features inside a Sequence of a dict included)."""
  import tensorflow_datasets as tfds
  out = {}
  for key, feature in features.items():
    inner = feature.feature if isinstance(feature, tfds.features.Sequence) else feature
    if isinstance(inner, tfds.features.FeaturesDict):
      out.update(_feature_paths(inner, f"{prefix}{key}/"))
    else:
      out[f"{prefix}{key}"] = inner
  return out
