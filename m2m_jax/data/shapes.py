"""Synthetic scenes with exact masks, for segmentation: ellipses, rectangles and triangles on a
textured background, generated offline in numpy from a seed.

Each image has a background of a random level, a linear gradient and two faint sinusoidal
textures; 0 objects (with probability ``empty_fraction``) or 1 to ``max_objects`` objects of a
random kind, size, aspect, rotation and position, each filled flat, brighter or darker than
the background beneath its centre; then Gaussian noise. A pixel belongs to the mask when its
centre lies inside an object, and the image is painted by that same test, so the mask is exact.
"""

import numpy as np

from m2m_jax.data.core import ArraySplit, Dataset, pad
from m2m_jax.errors import ConfigError

KINDS = ("ellipse", "rectangle", "triangle")


def _inside(kind: str, u: np.ndarray, v: np.ndarray, a: float, b: float,
            rng: np.random.Generator) -> np.ndarray:
  """Which points (u, v), in the object's own rotated frame, lie inside it; a and b are the
  half extents along u and v."""
  if kind == "ellipse":
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0
  if kind == "rectangle":
    return (np.abs(u) <= a) & (np.abs(v) <= b)
  angles = np.pi / 2 + 2 * np.pi * np.arange(3) / 3 + rng.uniform(-0.4, 0.4, 3)
  corners = np.stack([a * np.cos(angles), b * np.sin(angles)], 1)  # counter-clockwise
  inside = np.ones(u.shape, bool)
  for (x0, y0), (x1, y1) in zip(corners, np.roll(corners, -1, axis=0)):
    inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
  return inside


def _rotated(dx: np.ndarray, dy: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
  """Offsets (dx, dy) from an object's centre in its own frame, turned by ``t``: (u, v)."""
  return dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)


def _background(rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
                channels: int) -> np.ndarray:
  """(size, size, channels): a random level, a linear gradient and two faint stripes."""
  level = rng.uniform(0.25, 0.75, channels)
  tilt = rng.uniform(-0.1, 0.1, (2, channels))
  background = level + (x[..., None] - 0.5) * tilt[0] + (y[..., None] - 0.5) * tilt[1]
  for _ in range(2):  # faint stripes
    freq, phase = rng.uniform(1.0, 4.0, 2) * rng.choice([-1, 1], 2), rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * (freq[0] * x + freq[1] * y) + phase)
    background += rng.uniform(0.0, 0.05) * stripes[..., None]
  return background


def _scene(rng: np.random.Generator, size: int, channels: int, noise: float,
           empty_fraction: float, max_objects: int) -> tuple[np.ndarray, np.ndarray]:
  """One image (size, size, channels) in [0, 1] and its mask (size, size, 1) in {0, 1}."""
  y, x = (np.mgrid[:size, :size] + 0.5) / size  # pixel centres in (0, 1)
  background = _background(rng, x, y, channels)
  image, mask = background, np.zeros((size, size), bool)
  count = 0 if rng.uniform() < empty_fraction else rng.integers(1, max_objects + 1)
  for _ in range(count):
    kind = KINDS[rng.integers(len(KINDS))]
    cy, cx = rng.uniform(0.15, 0.85, 2)
    a = rng.uniform(0.1, 0.28)
    b = a * rng.uniform(0.5, 1.0)
    t = rng.uniform(0, np.pi)
    u, v = _rotated(x - cx, y - cy, t)
    inside = _inside(kind, u, v, a, b, rng)
    beneath = background[min(int(cy * size), size - 1), min(int(cx * size), size - 1)]
    contrast = rng.uniform(0.15, 0.4) * np.where(beneath > 0.5, -1.0, 1.0)
    image = np.where(inside[..., None], beneath + contrast, image)
    mask |= inside
  image = image + noise * rng.standard_normal(image.shape)
  return np.clip(image, 0.0, 1.0).astype(np.float32), mask[..., None].astype(np.float32)


def _split(seed: int, part: int, n: int, **scene) -> ArraySplit:
  images, masks = zip(*(_scene(np.random.default_rng([seed, part, i]), **scene) for i in range(n)))
  return ArraySplit({"x": np.stack(images), "y": np.stack(masks)})


def shapes(seed: int = 0, n_train: int = 2000, n_test: int = 500, size: int = 32,
           channels: int = 1, noise: float = 0.08, empty_fraction: float = 0.1,
           max_objects: int = 2) -> Dataset:
  """Scenes of ellipses, rectangles and triangles with their exact foreground masks.

  Returns a Dataset (``num_classes=None``) whose splits hold
    ``'x'``: (N, size, size, channels) float32 images in [0, 1],
    ``'y'``: (N, size, size, 1) float32 masks, exactly 0 or 1 (all 0 in an empty scene).
  Image i of the training split is a function of (seed, i) alone, and of the test split of
  (seed, i) from another stream, so the partition is fixed and growing one split leaves the
  other unchanged.

  Args:
    seed: seeds the scenes (independent of the training seed).
    n_train, n_test: number of scenes in each split.
    size: height and width in pixels.
    channels: 1 (grey) or 3 (RGB: background and objects of independent colours).
    noise: standard deviation of the additive Gaussian noise.
    empty_fraction: probability that a scene holds no object.
    max_objects: most objects in a scene (each drawn uniformly from 1 to this).
  """
  if channels not in (1, 3):
    raise ConfigError(f"shapes channels must be 1 or 3, got {channels!r}.")
  if size < 8 or n_train < 1 or n_test < 1 or max_objects < 1:
    raise ConfigError(f"shapes needs size >= 8 and n_train, n_test, max_objects >= 1; got size "
                      f"{size}, n_train {n_train}, n_test {n_test}, max_objects {max_objects}.")
  if noise < 0 or not 0 <= empty_fraction <= 1:
    raise ConfigError(f"shapes needs noise >= 0 and empty_fraction in [0, 1]; got noise {noise}, "
                      f"empty_fraction {empty_fraction}.")
  scene = dict(size=int(size), channels=int(channels), noise=float(noise),
               empty_fraction=float(empty_fraction), max_objects=int(max_objects))
  return Dataset("shapes", _split(seed, 0, n_train, **scene), _split(seed, 1, n_test, **scene),
                 None, f"synthetic shapes with masks, {size}x{size}x{channels}")


def _detection_scene(rng: np.random.Generator, size: int, noise: float, empty_fraction: float,
                     max_objects: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One RGB image (size, size, 3) in [0, 1], the boxes (n, 4) of its objects, (y0, x0, y1, x1)
  relative to the image, and their kinds (n,)."""
  y, x = (np.mgrid[:size, :size] + 0.5) / size
  image = _background(rng, x, y, 3)
  for _ in range(rng.integers(0, 4)):  # clutter: faint strokes that are no object
    cy, cx, t = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0, np.pi)
    u, v = _rotated(x - cx, y - cy, t)
    stroke = (np.abs(u) < rng.uniform(0.05, 0.2)) & (np.abs(v) < 0.6 / size)
    image = np.where(stroke[..., None], image + rng.uniform(-0.15, 0.15), image)
  boxes, kinds = [], []
  count = 0 if rng.uniform() < empty_fraction else rng.integers(1, max_objects + 1)
  for _ in range(count):
    kind = rng.integers(len(KINDS))
    cy, cx = rng.uniform(0.1, 0.9, 2)
    a = rng.uniform(0.06, 0.3)
    b = a * rng.uniform(0.4, 1.0)
    t = rng.uniform(0, np.pi)
    u, v = _rotated(x - cx, y - cy, t)
    inside = _inside(KINDS[kind], u, v, a, b, rng)
    rows, cols = np.nonzero(inside)
    if len(rows) < 4:
      continue
    box = np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]) / size
    if boxes and _overlap(box, np.stack(boxes)).max() > 0.5:  # each stays mostly visible
      continue
    beneath = image[min(int(cy * size), size - 1), min(int(cx * size), size - 1)]
    colour = beneath + rng.uniform(0.2, 0.45) * np.where(beneath.mean() > 0.5, -1.0, 1.0) \
        + rng.uniform(-0.15, 0.15, 3)
    image = np.where(inside[..., None], colour, image)
    boxes.append(box)
    kinds.append(kind)
  image = image + noise * rng.standard_normal(image.shape)
  return (np.clip(image, 0.0, 1.0).astype(np.float32),
          np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(kinds, np.int32))


def _overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """The intersection of one (y0, x0, y1, x1) box with each of ``boxes`` (n, 4), over the
  smaller of the two boxes' areas: 1 when one box holds the other."""
  low, high = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
  inter = np.prod(np.clip(high - low, 0, None), axis=1)
  areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
  return inter / np.minimum(np.prod(box[2:] - box[:2]), areas)


def _detection_split(seed: int, part: int, n: int, max_objects: int, **scene) -> ArraySplit:
  images, boxes, kinds = zip(*(_detection_scene(np.random.default_rng([seed, part, i]),
                                                max_objects=max_objects, **scene)
                               for i in range(n)))
  boxes, mask = pad(boxes, max_objects)
  labels, _ = pad(kinds, max_objects)
  return ArraySplit({"x": np.stack(images), "boxes": boxes, "boxes_mask": mask,
                     "labels": labels, "labels_mask": mask.copy()})


def detection_shapes(seed: int = 0, n_train: int = 2000, n_test: int = 500, size: int = 64,
                     noise: float = 0.05, empty_fraction: float = 0.05,
                     max_objects: int = 6) -> Dataset:
  """RGB scenes of ellipses, rectangles and triangles with their exact boxes, for detection.

  Each scene: the segmentation scenes' background, 0 to 3 faint strokes of clutter, and no
  object (with probability ``empty_fraction``) or 1 to ``max_objects`` objects of a random kind,
  size (half extents 6% to 30% of the side), aspect (1 to 2.5), rotation, colour and place; an
  object whose box shares more than half of its own or of an earlier object's box with that
  earlier one is left out, so each stays mostly visible, while smaller overlaps and occlusions
  remain. An object's box is the extent of the
  pixels it was painted on, exactly.

  Returns a Dataset over the 3 kinds (``class_names`` ``KINDS``) whose splits hold
    ``'x'``: (N, size, size, 3) float32 images in [0, 1],
    ``'boxes'``: (N, max_objects, 4) float32, (y0, x0, y1, x1) relative to the image (the
      layout of tfds' bounding boxes, which the transforms move), zero-padded,
    ``'labels'``: (N, max_objects) int32 kinds, 0 .. 2, zero-padded,
    ``'boxes_mask'``, ``'labels_mask'``: (N, max_objects) bool, the real objects.
  Scene i of a split is a function of (seed, split, i) alone.
  """
  if size < 16 or n_train < 1 or n_test < 1 or max_objects < 1:
    raise ConfigError(f"detection_shapes needs size >= 16 and n_train, n_test, max_objects >= 1; "
                      f"got size {size}, n_train {n_train}, n_test {n_test}, max_objects "
                      f"{max_objects}.")
  if noise < 0 or not 0 <= empty_fraction <= 1:
    raise ConfigError(f"detection_shapes needs noise >= 0 and empty_fraction in [0, 1]; got noise "
                      f"{noise}, empty_fraction {empty_fraction}.")
  scene = dict(size=int(size), noise=float(noise), empty_fraction=float(empty_fraction),
               max_objects=int(max_objects))
  return Dataset("detection_shapes", _detection_split(seed, 0, n_train, **scene),
                 _detection_split(seed, 1, n_test, **scene), len(KINDS),
                 f"synthetic shapes with boxes, {size}x{size}x3", class_names=KINDS,
                 max_lengths={"boxes": max_objects, "labels": max_objects})
