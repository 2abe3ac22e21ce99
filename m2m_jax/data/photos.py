"""Crops of the two photographs that ship with scikit-learn, for colorization (offline).

``sklearn.datasets.load_sample_images()`` holds ``china.jpg`` (a pagoda, trees, sky and a lake)
and ``flower.jpg`` (an orange dahlia on dark green leaves), both 427x640 RGB; reading them
needs Pillow. The held-out crops tile a vertical band through the middle of each photo, columns
256-351 (the pagoda's roofs and the lake; the dahlia's right half), so they hold every kind of
content the training crops hold. Training crops slide with a stride over the rest of each
photo and lie wholly left of column 256 or right of column 351: no training crop overlaps a
held-out one.
"""

import numpy as np

from m2m_jax.data.core import ArraySplit, Dataset
from m2m_jax.errors import ConfigError

BAND = (256, 352)  # held-out columns [256, 352) of each photo


def _positions(start: int, stop: int, size: int, stride: int) -> list[int]:
  """Offsets of the crops of ``size`` with ``stride`` that fit wholly inside [start, stop)."""
  return list(range(start, stop - size + 1, stride))


def _crops(image: np.ndarray, rows: list[int], cols: list[int], size: int) -> np.ndarray:
  return np.stack([image[r:r + size, c:c + size] for r in rows for c in cols])


def photos(size: int = 32, stride: int = 16, flip: bool = True) -> Dataset:
  """Deterministic ``size`` x ``size`` RGB crops in [0, 1] of scikit-learn's two photos.

  Args:
    size: crop side; the held-out band of 96 columns is tiled by ``96 // size`` crops a row.
    stride: offset between neighbouring training crops (they overlap when below ``size``).
    flip: add every training crop's left-right mirror (vertical flips never: skies stay up).

  Returns:
    A Dataset with ``{'x': (N, size, size, 3) float32, 'y': (N,) int32}``, ``y`` the photo a crop
    comes from (0 china, 1 flower), and ``num_classes=None``. With the defaults: 1,600 training
    crops (3,200 with mirrors) and 78 held-out crops (3 x 13 a photo).
  """
  from sklearn.datasets import load_sample_images
  band = BAND[1] - BAND[0]
  if not 8 <= size <= band or stride < 1:
    raise ConfigError(f"photos crops need 8 <= size <= {band} and stride >= 1; got size {size}, "
                      f"stride {stride}.")
  train, test = [], []
  for index, image in enumerate(load_sample_images().images):
    image = image.astype(np.float32) / 255.0
    height, width = image.shape[:2]
    rows = _positions(0, height, size, stride)
    cols = _positions(0, BAND[0], size, stride) + _positions(BAND[1], width, size, stride)
    crops = _crops(image, rows, cols, size)
    if flip:
      crops = np.concatenate([crops, crops[:, :, ::-1]])
    train.append((crops, index))
    test.append((_crops(image, _positions(0, height, size, size),
                        _positions(BAND[0], BAND[1], size, size), size), index))

  def split(parts):
    x = np.concatenate([crops for crops, _ in parts])
    y = np.concatenate([np.full(len(crops), i, np.int32) for crops, i in parts])
    return ArraySplit({"x": np.ascontiguousarray(x), "y": y})

  return Dataset("photos", split(train), split(test), None,
                 f"{size}x{size} crops of scikit-learn's two sample photos")
