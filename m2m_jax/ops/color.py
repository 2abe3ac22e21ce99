"""Colour spaces as pure ``jax.numpy`` functions: sRGB <-> CIE L*a*b* (D65), and grey.

sRGB values c in [0, 1] are gamma-encoded; the linear light is
``c_lin = c / 12.92`` for c <= 0.04045, else ``((c + 0.055) / 1.055) ** 2.4``.
Linear RGB -> XYZ is the sRGB matrix M (D65 white), and with the white point
``(Xn, Yn, Zn) = M (1, 1, 1) = (0.95047, 1.0, 1.08883)``:

  L = 116 f(Y / Yn) - 16,  a = 500 (f(X / Xn) - f(Y / Yn)),  b = 200 (f(Y / Yn) - f(Z / Zn)),
  f(t) = t ** (1/3) for t > (6/29)**3, else t / (3 (6/29)**2) + 4/29.

L is the lightness in [0, 100]; a (green -> red) and b (blue -> yellow) are the chroma, 0 for
every grey. Every function takes arrays of shape (..., 3) (grey: (..., 1)) and is safe to
differentiate: no branch of a ``where`` evaluates a power at a point where it has no gradient.
"""

import jax.numpy as jnp
import numpy as np

RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]], np.float32)
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
WHITE = RGB_TO_XYZ.sum(axis=1)  # D65: (0.95047, 1.0, 1.08883)
AB_SCALE = 110.0  # |a|, |b| < 110 over the whole sRGB gamut (max |b| is 107.9, for blue)
_DELTA = 6.0 / 29.0


def srgb_to_linear(c: jnp.ndarray) -> jnp.ndarray:
  """Gamma-encoded sRGB in [0, 1] -> linear light in [0, 1], elementwise."""
  power = ((jnp.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4
  return jnp.where(c <= 0.04045, c / 12.92, power)


def linear_to_srgb(c: jnp.ndarray) -> jnp.ndarray:
  """Linear light -> gamma-encoded sRGB, elementwise; clipped to [0, 1] (out-of-gamut colours
  go to the nearest face of the RGB cube)."""
  c = jnp.clip(c, 0.0, 1.0)
  power = 1.055 * jnp.maximum(c, 0.0031308) ** (1 / 2.4) - 0.055
  return jnp.where(c <= 0.0031308, 12.92 * c, power)


def _f(t: jnp.ndarray) -> jnp.ndarray:
  return jnp.where(t > _DELTA**3, jnp.cbrt(jnp.maximum(t, _DELTA**3)),
                   t / (3 * _DELTA**2) + 4 / 29)


def _f_inv(t: jnp.ndarray) -> jnp.ndarray:
  return jnp.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4 / 29))


def rgb_to_lab(rgb: jnp.ndarray) -> jnp.ndarray:
  """sRGB (..., 3) in [0, 1] -> L*a*b* (..., 3): L in [0, 100], a and b in about [-110, 110].

  White -> (100, 0, 0), black -> (0, 0, 0), pure red (1, 0, 0) -> (53.24, 80.09, 67.20).
  """
  xyz = srgb_to_linear(rgb.astype(jnp.float32)) @ RGB_TO_XYZ.T
  fx, fy, fz = jnp.moveaxis(_f(xyz / WHITE), -1, 0)
  return jnp.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def lab_to_rgb(lab: jnp.ndarray) -> jnp.ndarray:
  """L*a*b* (..., 3) -> sRGB (..., 3) in [0, 1], the inverse of :func:`rgb_to_lab` inside the
  gamut (colours outside it are clipped)."""
  lab = lab.astype(jnp.float32)
  fy = (lab[..., 0] + 16) / 116
  f = jnp.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
  return linear_to_srgb((_f_inv(f) * WHITE) @ XYZ_TO_RGB.T)


def rgb_to_grey(rgb: jnp.ndarray) -> jnp.ndarray:
  """sRGB (..., 3) -> grey (..., 1) in [0, 1]: the CIE lightness L / 100 (not ITU-R 601 luma),
  so that a colorizer that predicts a and b from it rebuilds the colour exactly as (L, a, b)."""
  return rgb_to_lab(rgb)[..., :1] / 100


def grey_to_rgb(grey: jnp.ndarray) -> jnp.ndarray:
  """Grey (..., 1) as L / 100 -> the neutral sRGB colour (..., 3) of that lightness (a = b = 0)."""
  lab = jnp.concatenate([100 * grey, jnp.zeros_like(grey), jnp.zeros_like(grey)], axis=-1)
  return lab_to_rgb(lab)
