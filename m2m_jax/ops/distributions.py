"""Densities and divergences of the latent-variable models (VAE, latent ODE), per example, in
nats."""

import jax
import jax.numpy as jnp


def reparameterise(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """z = mean + exp(logvar / 2) * eps with eps ~ N(0, I) from ``key``: a sample of
  N(mean, diag(exp(logvar))) that is a differentiable function of mean and logvar.
  mean, logvar (..., L) -> z (..., L)."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, diag(exp(logvar))) || N(0, I)) in nats, per example:
  (1/2) sum_j (exp(logvar_j) + mean_j^2 - 1 - logvar_j). (B, L) -> (B,)."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean ** 2 - 1.0 - logvar, axis=-1)


def _per_image(v: jax.Array) -> jax.Array:
  return jnp.sum(v.reshape(v.shape[0], -1), axis=1)


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
  """sum_p x_p log sigmoid(l_p) + (1 - x_p) log(1 - sigmoid(l_p)) = sum_p x_p l_p - softplus(l_p),
  per image, in nats. logits, x (B, H, W, C), x in [0, 1] -> (B,)."""
  return _per_image(x * logits - jax.nn.softplus(logits))


def bernoulli_entropy(x: jax.Array) -> jax.Array:
  """sum_p H(x_p) = -sum_p x_p log x_p + (1 - x_p) log(1 - x_p) per image, nats: the least
  binary cross-entropy any logits reach on continuous x (0 for binary x). (B, H, W, C) -> (B,)."""
  return -_per_image(jax.scipy.special.xlogy(x, x) + jax.scipy.special.xlogy(1 - x, 1 - x))


def gaussian_log_likelihood(mean: jax.Array, log_scale: jax.Array, x: jax.Array) -> jax.Array:
  """sum_p log N(x_p; mean_p, sigma^2) with log sigma = ``log_scale`` (a scalar or (C,)), per
  image, in nats of a density. mean, x (B, H, W, C) -> (B,)."""
  u = (x - mean) * jnp.exp(-log_scale)
  return _per_image(-0.5 * u ** 2 - log_scale - 0.5 * jnp.log(2 * jnp.pi))
