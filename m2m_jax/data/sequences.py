"""Sequences for the latent ODE: rotating digits and the latent-ODE paper's noisy spirals.

Every example is ``{'x': frames (T, ...), 't': times (T,) increasing in [0, 1], 'y': label}``.

- ``rotating_digits``: each real ``mnist5k`` digit rotated through ``num_frames`` angles
  0, step, 2 step, ... degrees (counter-clockwise as displayed), frames (T, S, S, 1) in [0, 1],
  times ``linspace(0, 1, T)``, ``y`` the digit. The original's RotatingMNIST is 5 frames at
  72 degrees. The rotation is :func:`rotate`, exact bilinear resampling
  (``jax.scipy.ndimage.map_coordinates``, order 1, zeros outside the image), so rotating a
  square image by a multiple of 90 degrees moves pixels exactly (``np.rot90``).
- ``spirals``: the 2-D spirals of the latent-ODE example of Chen et al. (2018) (torchdiffeq's
  ``examples/latent_ode.py``), also used by Rubanova et al. (2019): an outward clockwise spiral
  centred at (-5, 0) and an inward counter-clockwise one at (5, 0), each sequence a random
  window of ``num_points`` consecutive points on one of them plus Gaussian noise; frames (T, 2),
  times rescaled to [0, 1], ``y`` 0 for clockwise and 1 for counter-clockwise.

Both partitions are fixed and seeded. :func:`rotate` also turns any image dataset into rotating
sequences on the fly (the latent ODE's ``config.rotation``, used for tfds MNIST).
"""

import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.data import offline
from m2m_jax.data.core import ArraySplit, Dataset
from m2m_jax.errors import ConfigError


def rotate(images: jax.Array, angles: jax.Array) -> jax.Array:
  """Every image rotated by every angle, counter-clockwise as displayed, about its centre.

  Bilinear resampling with zeros outside the image: output pixel (r, c) reads the input at the
  point that the inverse rotation sends it to.

  Args:
    images: (N, H, W, C).
    angles: (T,) degrees.

  Returns:
    (N, T, H, W, C).
  """
  n, h, w, c = images.shape
  theta = jnp.deg2rad(jnp.asarray(angles, jnp.float32))
  cy, cx = (h - 1) / 2, (w - 1) / 2
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                            indexing="ij")
  x, y = cols - cx, cy - rows  # display coordinates: x right, y up

  def one(image, cos, sin):  # (H, W) by one angle
    x_in, y_in = cos * x + sin * y, -sin * x + cos * y
    return jax.scipy.ndimage.map_coordinates(image, [cy - y_in, cx + x_in], order=1, cval=0.0)

  per_angle = jax.vmap(one, in_axes=(None, 0, 0))                    # (H, W) -> (T, H, W)
  planes = jnp.moveaxis(jnp.asarray(images, jnp.float32), -1, 1).reshape(n * c, h, w)
  out = jax.vmap(per_angle, in_axes=(0, None, None))(planes, jnp.cos(theta), jnp.sin(theta))
  return jnp.moveaxis(out.reshape(n, c, len(theta), h, w), 1, -1)


_rotate = jax.jit(rotate)


def _rotate_all(images: np.ndarray, angles: np.ndarray, chunk: int = 500) -> np.ndarray:
  """``rotate`` in chunks of one shape (one compilation), as numpy clipped to [0, 1]."""
  n = len(images)
  padded = np.concatenate([images, np.zeros((-n % chunk, *images.shape[1:]), images.dtype)])
  out = [np.asarray(_rotate(padded[i:i + chunk], angles)) for i in range(0, len(padded), chunk)]
  return np.clip(np.concatenate(out)[:n], 0, 1)


def _pool(images: np.ndarray, size: int) -> np.ndarray:
  """(N, H, H, C) -> (N, size, size, C) by averaging (H / size)^2 blocks."""
  f = images.shape[1] // size
  return images.reshape(len(images), size, f, size, f, images.shape[-1]).mean(axis=(2, 4))


def rotating_digits(seed: int = 0, num_frames: int = 10, angle_step: float = 36.0,
                    size: int = 28, test_size: int = 1000) -> Dataset:
  """mnist5k digits, each rotated through ``num_frames`` angles ``k * angle_step`` degrees.

  Args:
    seed: the train/test partition of mnist5k (stratified, as ``mnist5k``'s).
    num_frames: T, frames a sequence.
    angle_step: degrees between consecutive frames (36 with T = 10 is one full turn).
    size: 28, 14 or 7: digits averaged over 1, 2x2 or 4x4 blocks first (for speed).
    test_size: held-out digits.

  Returns:
    A Dataset of ``{'x': (T, size, size, 1) float32, 't': (T,), 'y': int32}``; 4,000 / 1,000.
  """
  if size not in (28, 14, 7):
    raise ConfigError(f"rotating_digits size must be 28, 14 or 7 (28 / size blocks), got {size!r}.")
  if int(num_frames) != num_frames or num_frames < 2:
    raise ConfigError(f"rotating_digits num_frames must be an integer >= 2, got {num_frames!r}.")
  base = offline.mnist5k(seed=seed, test_size=test_size)
  angles = angle_step * np.arange(num_frames)
  times = np.linspace(0, 1, num_frames, dtype=np.float32)

  def split(s):
    arrays = s[np.arange(len(s))]
    x = _rotate_all(_pool(arrays["x"], size), angles)
    return ArraySplit({"x": x, "t": np.broadcast_to(times, (len(x), num_frames)).copy(),
                       "y": arrays["y"]})

  description = (f"mnist5k digits {size}x{size} rotated through {num_frames} angles "
                 f"{angle_step:g} degrees apart")
  return Dataset("rotating_digits", split(base.train), split(base.test), 10, description,
                 base.class_names)


def spiral_curves(num_total: int = 500, stop: float = 6 * np.pi, a: float = 0.0,
                  b: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The two noiseless spirals of torchdiffeq's latent-ODE example, ``num_total`` points each.

  Returns:
    (ts (num_total,), clockwise (num_total, 2), counter_clockwise (num_total, 2)): the
    clockwise spiral has radius ``a + 50 b / z`` at angle z = stop + 1 - t around (-5, 0), the
    counter-clockwise one radius ``a + b z`` at angle z = t around (5, 0).
  """
  ts = np.linspace(0, stop, num_total)
  z_cw = stop + 1 - ts
  r_cw = a + b * 50 / z_cw
  z_cc = ts
  r_cc = a + b * z_cc
  clockwise = np.stack([r_cw * np.cos(z_cw) - 5, r_cw * np.sin(z_cw)], axis=1)
  counter = np.stack([r_cc * np.cos(z_cc) + 5, r_cc * np.sin(z_cc)], axis=1)
  return ts, clockwise, counter


def spirals(seed: int = 0, num_spirals: int = 1000, num_points: int = 100, noise: float = 0.3,
            num_total: int = 500, test_size: int = 200) -> Dataset:
  """Noisy windows of the two spirals (Chen et al. 2018; Rubanova et al. 2019).

  Each sequence picks a direction with probability 1/2 and a start index uniformly among
  [num_points, num_total - num_points) (as the original: not too near either end), takes
  ``num_points`` consecutive points of that spiral and adds N(0, noise^2) to each coordinate.
  Times are the window's own, from 0, rescaled so the default window spans [0, 1]: the
  original's times (0, 6 pi / 499, ...) divided by the span of ``num_points`` points.

  Returns:
    A Dataset of ``{'x': (T, 2) float32, 't': (T,), 'y': 0 clockwise / 1 counter-clockwise}``.
  """
  if not (2 <= num_points and 2 * num_points < num_total):
    raise ConfigError(f"spirals need 2 <= num_points < num_total / 2, got num_points "
                      f"{num_points} and num_total {num_total}.")
  if not 0 < test_size < num_spirals:
    raise ConfigError(f"spirals test_size must lie in (0, num_spirals = {num_spirals}), got "
                      f"{test_size}.")
  rng = np.random.default_rng(seed)
  ts, clockwise, counter = spiral_curves(num_total)
  start = rng.integers(num_points, num_total - num_points, size=num_spirals)
  y = (rng.random(num_spirals) > 0.5).astype(np.int32)
  window = start[:, None] + np.arange(num_points)
  x = np.where(y[:, None, None] == 1, counter[window], clockwise[window])
  x = (x + noise * rng.normal(size=x.shape)).astype(np.float32)
  t = ((ts[:num_points] / ts[num_points - 1]).astype(np.float32))
  t = np.broadcast_to(t, (num_spirals, num_points)).copy()
  train, test = offline.stratified_split(y, test_size, seed)
  split = lambda idx: ArraySplit({"x": x[idx], "t": t[idx], "y": y[idx]})
  return Dataset("spirals", split(train), split(test), 2,
                 f"noisy 2-D spirals, {num_points} points, noise {noise:g}",
                 ("clockwise", "counter-clockwise"))
