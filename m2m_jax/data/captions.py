"""Captioned images for CLIP, offline: synthetic scenes of one coloured shape, and mnist5k
digits captioned by their labels.

``captioned_shapes``: each scene holds one shape (circle, square, triangle, diamond) of one
colour (red, green, blue, yellow, purple, cyan), small or large, in one of five places (the
four corners and the centre), with a dark outline, on a light textured grey background. Its
captions describe those four attributes through several templates ("a large red circle in the
top left", "there is a red circle , large , at the top left", ...), and some of them only: "a
circle in the top left", "something red", "a red circle", "a circle". The partial captions ask
the image embedding to lie near each attribute's words apart, which is what lets a (shape,
colour) pair never seen together be named (zero-shot on the held-out pairs). Some (shape,
colour) pairs never appear in training: the test split holds scenes of those held-out pairs
and of seen ones, so a zero-shot classifier over the (shape, colour) classes can be scored on
combinations it never saw, apart.

Naming an unseen pair needs the image tower to see a shape whatever its colour, and two
choices here make that possible. Every colour is darker than the background, and the outline
darker still, so a shape shows in brightness alone, as objects' edges do in photographs; on a
mid-grey background a red shape has the background's brightness and shows only through its
colour, and the default CLIP (then with batches of 128) named about 45% of the held-out pairs,
telling their shapes apart no better than chance (27%). And a large shape is only half as
large again as a small one (half extents 0.21 and 0.14 of the side): the inside of a shape is
patches of plain colour, and in training red is never a circle, so the more of a red circle
is plain red, the more its image embedding says "not a circle". With large shapes of 0.26 the
default named 58 to 71% of the held-out pairs over seeds 0 to 2 (the shapes of large held-out
scenes recognised 32% of the time, of small ones 61%); with 0.21, 79 to 91%.

``captioned_digits``: mnist5k's digits with captions made from their labels ("a photo of the
digit seven", ...).

Every example is ``{'x': image (H, W, 3 or 1) in [0, 1], 'tokens': (K, T) int32, the K captions
of the image tokenized, 'y': class, 'heldout': bool}``; two images may share captions.
The captions are tokenized by a word-level vocabulary built from the training captions
(``Dataset.tokenizer``).
"""

import itertools

import numpy as np

from m2m_jax.data import offline
from m2m_jax.data.core import ArraySplit, Dataset
from m2m_jax.data.text import WordTokenizer
from m2m_jax.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (0.85, 0.1, 0.1), "green": (0.1, 0.7, 0.15), "blue": (0.15, 0.3, 0.95),
           "yellow": (0.95, 0.85, 0.1), "purple": (0.6, 0.15, 0.75),
           "cyan": (0.1, 0.8, 0.85)}
SIZES = {"small": 0.14, "large": 0.21}  # half extent, a fraction of the image side
PLACES = {"top left": (0.27, 0.27), "top right": (0.27, 0.73), "bottom left": (0.73, 0.27),
          "bottom right": (0.73, 0.73), "centre": (0.5, 0.5)}  # (row, column) of the centre
# One held-out pair a shape, each of another colour: every shape and every colour is seen in
# training, four of their 24 pairings are not.
HELD_OUT = (("circle", "red"), ("square", "green"), ("triangle", "blue"), ("diamond", "yellow"))
TEMPLATES = ("a {size} {colour} {shape} in the {place}",
             "there is a {colour} {shape} , {size} , at the {place}",
             "the {place} holds a {size} {colour} {shape}",
             "a {shape} in the {place}",
             "something {colour}",
             "a {colour} {shape}",
             "a {shape}")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = ("a photo of the digit {digit}", "a handwritten {digit}",
                   "the number {digit} written by hand")


def _inside(shape: str, rows: np.ndarray, cols: np.ndarray, extent: float) -> np.ndarray:
  """Which pixel centres (rows, cols, relative to the shape's centre, in image fractions) lie
  inside the shape of half extent ``extent``."""
  r, c = np.abs(rows), np.abs(cols)
  if shape == "circle":
    return r ** 2 + c ** 2 <= extent ** 2
  if shape == "square":
    return np.maximum(r, c) <= extent * 0.85
  if shape == "diamond":
    return r + c <= extent * 1.15
  # an upright triangle: its base at +extent, its apex at -extent
  return (rows <= extent) & (c <= (rows + extent) / 2)


def _scene(rng: np.random.Generator, size: int, shape: str, colour: str, extent: str,
           place: str) -> np.ndarray:
  """One image (size, size, 3) in [0, 1]: the outlined shape over a light textured grey
  background, with a little jitter in position, extent, colour and brightness, and pixel
  noise."""
  y, x = (np.mgrid[:size, :size] + 0.5) / size
  background = rng.uniform(0.75, 0.9) + 0.05 * np.sin(2 * np.pi * rng.uniform(1, 3) * (x + y)
                                                     + rng.uniform(0, 2 * np.pi))
  image = np.repeat(background[..., None], 3, axis=-1)
  cy, cx = np.asarray(PLACES[place]) + rng.uniform(-0.05, 0.05, 2)
  half = SIZES[extent] * rng.uniform(0.9, 1.1)
  inside = _inside(shape, y - cy, x - cx, half)
  outline = _inside(shape, y - cy, x - cx, half + 1.5 / size) & ~inside
  rgb = np.clip(np.asarray(COLOURS[colour]) + rng.uniform(-0.08, 0.08, 3), 0, 1)
  image = np.where(inside[..., None], rgb, np.where(outline[..., None], 0.05, image))
  return np.clip(image + 0.03 * rng.standard_normal(image.shape), 0, 1).astype(np.float32)


def _combinations(held_out: bool) -> list[tuple[str, str, str, str]]:
  """(shape, colour, size, place) of the held-out (shape, colour) pairs, or of the others."""
  return [(s, c, z, p) for s, c, z, p in itertools.product(SHAPES, COLOURS, SIZES, PLACES)
          if ((s, c) in HELD_OUT) == held_out]


def _captions(shape, colour, size, place) -> list[str]:
  return [t.format(shape=shape, colour=colour, size=size, place=place) for t in TEMPLATES]


def _shapes_split(seed: int, part: int, n: int, size: int, heldout_fraction: float):
  """Images, captions, (shape, colour) classes and held-out flags of ``n`` scenes; scene i is a
  function of (seed, part, i) alone."""
  seen, unseen = _combinations(False), _combinations(True)
  classes = list(itertools.product(SHAPES, COLOURS))
  images, captions, ys, held = [], [], [], []
  for i in range(n):
    rng = np.random.default_rng([seed, part, i])
    pool = unseen if rng.uniform() < heldout_fraction else seen
    combo = pool[rng.integers(len(pool))]
    images.append(_scene(rng, size, *combo))
    captions.append(_captions(*combo))
    ys.append(classes.index(combo[:2]))
    held.append(pool is unseen)
  return np.stack(images), captions, np.asarray(ys, np.int32), np.asarray(held)


def _captioned(name: str, train: tuple, test: tuple, class_names: tuple[str, ...],
               context_length: int, description: str) -> Dataset:
  """The Dataset of (images, captions, classes, held-out flags) per split, the captions
  tokenized by a vocabulary of the training captions."""
  tokenizer = WordTokenizer.build([c for caps in train[1] for c in caps])

  def split(images, captions, ys, held):
    tokens = np.stack([tokenizer.encode(caps, context_length) for caps in captions])
    return ArraySplit({"x": images, "tokens": tokens, "y": ys, "heldout": held})

  return Dataset(name, split(*train), split(*test), len(class_names), description,
                 class_names=class_names, tokenizer=tokenizer)


def captioned_shapes(seed: int = 0, n_train: int = 4000, n_test: int = 1000, size: int = 32,
                     context_length: int = 16, heldout_fraction: float = 0.5) -> Dataset:
  """Scenes of one coloured shape with seven captions each, for CLIP (see the module).

  Returns a Dataset over the 24 (shape, colour) classes ("red circle", ...) whose splits hold
    ``'x'``: (N, size, size, 3) float32 images in [0, 1],
    ``'tokens'``: (N, 7, context_length) int32, the seven captions of each image
      (``TEMPLATES``),
    ``'y'``: (N,) int32 (shape, colour) class, ``'heldout'``: (N,) bool, the pair never
    appears in training.
  The training split holds only the pairs not in ``HELD_OUT``; the test split draws a held-out
  pair with probability ``heldout_fraction``.
  """
  if size < 16 or n_train < 1 or n_test < 1:
    raise ConfigError(f"captioned_shapes needs size >= 16 and n_train, n_test >= 1; got size "
                      f"{size}, n_train {n_train}, n_test {n_test}.")
  if not 0 <= heldout_fraction <= 1:
    raise ConfigError(f"heldout_fraction must lie in [0, 1], got {heldout_fraction}.")
  train = _shapes_split(seed, 0, n_train, size, 0.0)
  test = _shapes_split(seed, 1, n_test, size, heldout_fraction)
  class_names = tuple(f"{c} {s}" for s, c in itertools.product(SHAPES, COLOURS))
  return _captioned("captioned_shapes", train, test, class_names, context_length,
                    f"captioned synthetic shapes, {size}x{size}x3, {len(HELD_OUT)} held-out "
                    "(shape, colour) pairs")


def captioned_digits(seed: int = 0, test_size: int = 1000, context_length: int = 16) -> Dataset:
  """mnist5k's digits, each with three captions made from its label (see the module).

  Returns a Dataset over the 10 digit classes ("zero" ... "nine") whose splits hold ``'x'``
  (N, 28, 28, 1) in [0, 1], ``'tokens'`` (N, 3, context_length), ``'y'`` and ``'heldout'``
  (all False).
  """
  digits = offline.mnist5k(seed=seed, test_size=test_size)

  def parts(split):
    arrays = split[np.arange(len(split))]
    y = arrays["y"].astype(np.int32)
    captions = [[t.format(digit=DIGITS[label]) for t in DIGIT_TEMPLATES] for label in y]
    return arrays["x"], captions, y, np.zeros(len(y), bool)

  return _captioned("captioned_digits", parts(digits.train), parts(digits.test), DIGITS,
                    context_length, "mnist5k digits captioned by their labels")
