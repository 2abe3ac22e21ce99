"""Data augmentation as pure functions of (key, batch)."""

import jax
import jax.numpy as jnp


def random_shift(key: jax.Array, images: jnp.ndarray, max_shift: int) -> jnp.ndarray:
  """Translates each image by its own random (dy, dx) in [-max_shift, max_shift], zero fill.

  images: (B, H, W, C) -> (B, H, W, C).
  """
  if max_shift == 0:
    return images
  b, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  offsets = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)
  crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
  return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: jnp.ndarray, *aligned: jnp.ndarray):
  """Mirrors each image left-right with probability 1/2, and each ``aligned`` array (e.g. the
  masks) with its image: (B, H, W, C) -> (B, H, W, C); returns a tuple when given several."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
  out = tuple(jnp.where(flip, a[:, :, ::-1], a) for a in (images, *aligned))
  return out if aligned else out[0]
