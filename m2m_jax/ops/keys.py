"""Random keys that belong to an example, not to its place in a batch.

A test metric that draws noise (a corruption, a diffusion time, a VAE's eps) draws it from a
key hashed from the example itself, so the metric is the same whatever the evaluation batch
size, the padding or the number of devices. Every algorithm seeds these keys with
``EVAL_KEY``, and the samples it judges and shows with ``SAMPLE_KEY``.
"""

import jax
import jax.numpy as jnp

EVAL_KEY = 20240602    # the test metrics' noise: a corruption, a diffusion time, a VAE's eps
SAMPLE_KEY = 20240603  # the samples judged and drawn after training
# A train step that takes config.transforms, whose op k draws from fold_in(rng, k), draws its
# own randomness (dropout) from fold_in(rng, STEP_KEY_OFFSET + j).
STEP_KEY_OFFSET = 1 << 16


def hash_keys(key: jax.Array, words: jax.Array) -> jax.Array:
  """One key per row of ``words`` (B, N) uint32, ``fold_in(key, hash(row))``: a polynomial hash
  in wrapping uint32 arithmetic (exact, so independent of how the rows are batched)."""
  powers = jnp.cumprod(jnp.full(words.shape[1], 2654435761, jnp.uint32))
  return jax.vmap(lambda h: jax.random.fold_in(key, h))(jnp.sum(words * powers, axis=1))


def image_keys(key: jax.Array, x: jax.Array) -> jax.Array:
  """One key per image (B,): :func:`hash_keys` of the image's 8-bit pixels."""
  return hash_keys(key, jnp.round(jnp.clip(x, 0, 1) * 255).astype(jnp.uint32).reshape(
      x.shape[0], -1))
