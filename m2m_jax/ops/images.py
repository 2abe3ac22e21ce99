"""Images in [0, 1] and the [-1, 1] range that tanh generators and diffusion models work in."""

import jax
import jax.numpy as jnp


def to_model(x: jax.Array) -> jax.Array:
  """Images in [0, 1] -> the model's range [-1, 1]; same shape."""
  return 2.0 * x - 1.0


def to_image(x: jax.Array) -> jax.Array:
  """The model's range [-1, 1] -> images in [0, 1], clipped; same shape."""
  return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)
