"""Principal component analysis through the singular value decomposition.

With the training mean mu (d,) and the centred data Xc = X - mu (n, d), the thin SVD
Xc = U S V^T (S sorted descending) gives, for the k leading components:

  components_               = V^T[:k]                 (k, d)  orthonormal principal axes
  explained_variance_       = S[:k]^2 / (n - 1)       (k,)    variance along each axis
  explained_variance_ratio_ = explained_variance_ / tr(Xc^T Xc / (n - 1))
  noise_variance_           = mean of the discarded variances (probabilistic PCA's sigma^2)
  transform(X)              = (X - mu) V_k                    (whiten: divided by sqrt(var))
  inverse_transform(Z)      = Z V_k^T + mu                    (whiten: Z times sqrt(var) first)

Signs follow scikit-learn's ``svd_flip(u_based_decision=False)``: the entry of largest absolute
value in each component is positive, so the same data always gives the same components.

Solvers: ``'full'`` is the exact SVD, taken of the small triangular factor of a QR
factorisation of Xc (n >= d) or of Xc^T (n < d). ``'covariance_eigh'`` diagonalises Xc^T Xc:
fastest for n >> d, but in float32 its variances carry an absolute error ~1e-7 of the largest
(so a variance 1e-4 of the largest keeps only ~3 digits). ``'randomized'`` is Halko, Martinsson
and Tropp's randomized subspace iteration (2011, Alg. 4.4) for k << min(n, d), e.g. wide data:
Q spans Xc Omega with Omega (d, k + n_oversamples) Gaussian, refined by ``iterated_power``
rounds Q <- qr(Xc qr(Xc^T Q)); then the SVD of the small Q^T Xc.
"""

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.classic import validation
from m2m_jax.errors import DataError, choose

SOLVERS = ("full", "covariance_eigh", "randomized")
_HI = jax.lax.Precision.HIGHEST  # full float32 products on GPU/TPU too (no TF32/bf16 passes)


@flax.struct.dataclass
class PCAParams:
  """A fitted PCA; k components of d features."""

  components_: jnp.ndarray                # (k, d)
  explained_variance_: jnp.ndarray        # (k,)
  explained_variance_ratio_: jnp.ndarray  # (k,)
  singular_values_: jnp.ndarray           # (k,)
  mean_: jnp.ndarray                      # (d,)
  noise_variance_: jnp.ndarray            # ()
  whiten: bool = flax.struct.field(pytree_node=False, default=False)


def _flip_signs(vt: jnp.ndarray) -> jnp.ndarray:
  """Rows of vt (k, d) each multiplied by the sign of its largest-|.| entry."""
  pivot = jnp.take_along_axis(vt, jnp.argmax(jnp.abs(vt), 1)[:, None], 1)
  return vt * jnp.sign(pivot)


def _centred_gram(X: jnp.ndarray, mean: jnp.ndarray, block: int = 8192) -> jnp.ndarray:
  """Xc^T Xc (d, d), summed over row blocks: no centred copy of X, and blockwise sums."""
  n, d = X.shape
  block = min(block, n)

  def add(i, gram):
    xc = jax.lax.dynamic_slice_in_dim(X, i * block, block) - mean
    return gram + jnp.matmul(xc.T, xc, precision=_HI)

  gram = jax.lax.fori_loop(0, n // block, add, jnp.zeros((d, d), X.dtype))
  rest = X[n - n % block:] - mean
  return gram + jnp.matmul(rest.T, rest, precision=_HI)


@functools.partial(jax.jit, static_argnames="solver")
def _exact(X: jnp.ndarray, solver: str) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """X (n, d) -> mean (d,), all r = min(n, d) singular values (r,) and right vectors (r, d)."""
  n, d = X.shape
  mean = jnp.mean(X, 0)
  if solver == "covariance_eigh":
    w, v = jnp.linalg.eigh(_centred_gram(X, mean))
    s, vt = jnp.sqrt(jnp.maximum(w[::-1], 0.0)), v[:, ::-1].T
    return mean, s[:min(n, d)], _flip_signs(vt[:min(n, d)])
  xc = X - mean
  if n >= d:  # Xc = Q R: the d x d R has Xc's S and V
    _, s, vt = jnp.linalg.svd(jnp.linalg.qr(xc, mode="r"))
    return mean, s, _flip_signs(vt)
  q, r = jnp.linalg.qr(xc.T)  # Xc = R^T Q^T and R^T = U S W^T (n x n): V^T = W^T Q^T
  _, s, wt = jnp.linalg.svd(r.T)
  return mean, s, _flip_signs(jnp.matmul(wt, q.T, precision=_HI))


@functools.partial(jax.jit, static_argnames=("k", "width", "iterated_power"))
def _randomized(X: jnp.ndarray, key: jax.Array, k: int, width: int, iterated_power: int
                ) -> tuple[jnp.ndarray, ...]:
  """X (n, d) -> mean (d,), approximate top-k singular values (k,) and right vectors (k, d),
  the total squared norm of the centred data and that of its residual off the k vectors'
  span (summed directly, not as a difference: no cancellation)."""
  mean = jnp.mean(X, 0)
  xc = X - mean
  omega = jax.random.normal(key, (xc.shape[1], width), xc.dtype)
  q, _ = jnp.linalg.qr(jnp.matmul(xc, omega, precision=_HI))

  def power(_, q):
    p, _ = jnp.linalg.qr(jnp.matmul(xc.T, q, precision=_HI))
    return jnp.linalg.qr(jnp.matmul(xc, p, precision=_HI))[0]

  q = jax.lax.fori_loop(0, iterated_power, power, q)
  _, s, vt = jnp.linalg.svd(jnp.matmul(q.T, xc, precision=_HI), full_matrices=False)
  vt = _flip_signs(vt[:k])
  residual = xc - jnp.matmul(jnp.matmul(xc, vt.T, precision=_HI), vt, precision=_HI)
  return mean, s[:k], vt, jnp.sum(jnp.square(xc)), jnp.sum(jnp.square(residual))


def _check_n_components(n_components, rank: int, svd_solver: str):
  """None -> rank; an int in 1..rank; a float in (0, 1) (variance to keep) for exact solvers."""
  if n_components is None:
    return rank
  if isinstance(n_components, float) and 0 < n_components < 1 and svd_solver != "randomized":
    return n_components
  if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)):
    raise DataError(f"n_components={n_components!r} must be an int in 1..{rank}, or a float in "
                    "(0, 1) (the fraction of variance to keep) with an exact svd_solver.")
  validation.check_at_most("n_components", int(n_components), rank,
                           "at most min(n_samples, n_features) components exist")
  return int(n_components)


def _keep(ratio: jnp.ndarray, fraction: float) -> int:
  """The fewest leading components whose variance ratios sum above ``fraction``."""
  cumulative = np.cumsum(np.asarray(ratio, np.float64))
  return min(int(np.searchsorted(cumulative, fraction, side="right")) + 1, len(cumulative))


def check(X, *, n_components=None, svd_solver: str = "full", n_oversamples: int = 10,
          iterated_power: int = 4) -> tuple[jnp.ndarray, int | float]:
  """:func:`fit`'s input checks: returns X (n, d) as float32 and k, an int or a variance fraction."""
  X = validation.check_X(X)
  choose("svd_solver", svd_solver, SOLVERS)
  n, d = X.shape
  if n < 2:
    raise DataError("PCA needs at least 2 samples to estimate variances (n - 1 divides them).")
  if svd_solver == "randomized" and min(n_oversamples, iterated_power) < 0:
    raise DataError(f"n_oversamples={n_oversamples} and iterated_power={iterated_power} "
                    "must both be >= 0.")
  return X, _check_n_components(n_components, min(n, d), svd_solver)


def fit(X, y=None, *, n_components=None, whiten: bool = False, svd_solver: str = "full",
        n_oversamples: int = 10, iterated_power: int = 4, key: jax.Array | None = None
        ) -> PCAParams:
  """Fits PCA to X (n, d); ``y`` is ignored. Returns :class:`PCAParams` holding k components.

  n_components: None (all min(n, d)), an int k, or a float in (0, 1): the fewest components
  whose explained_variance_ratio_ sums above it (exact solvers only). whiten: ``transform``
  then scales each component to unit variance. svd_solver: 'full', 'covariance_eigh' or
  'randomized' (see the module notes); n_oversamples, iterated_power and ``key`` (default
  ``jax.random.key(0)``) tune and seed the randomized one.
  """
  del y
  X, k = check(X, n_components=n_components, svd_solver=svd_solver,
               n_oversamples=n_oversamples, iterated_power=iterated_power)
  if isinstance(k, float):  # the number of components depends on the spectrum
    mean, s, vt = _exact(X, svd_solver)
    return _assemble(X.shape[0], mean, s, vt, _keep(s**2 / jnp.sum(s**2), k), whiten)
  return solve(X, key, k=k, whiten=whiten, svd_solver=svd_solver, n_oversamples=n_oversamples,
               iterated_power=iterated_power)


@functools.partial(jax.jit, static_argnames=("k", "whiten", "svd_solver", "n_oversamples",
                                             "iterated_power"))
def solve(X: jnp.ndarray, key: jax.Array | None = None, *, k: int, whiten: bool = False,
          svd_solver: str = "full", n_oversamples: int = 10, iterated_power: int = 4) -> PCAParams:
  """:func:`fit`'s pure core on float32 X (n, d) with an int k in 1..min(n, d); no input checks.

  Jitted; vmappable over X (e.g. bootstrap resamples) and key.
  """
  n, d = X.shape
  if svd_solver != "randomized":
    mean, s, vt = _exact(X, svd_solver)
    return _assemble(n, mean, s, vt, k, whiten)
  key = jax.random.key(0) if key is None else key
  mean, s, vt, total, discarded = _randomized(X, key, k, min(k + n_oversamples, n, d),
                                              iterated_power)
  return _assemble(n, mean, s, vt, k, whiten, total, discarded, min(n, d))


def _assemble(n: int, mean: jnp.ndarray, s: jnp.ndarray, vt: jnp.ndarray, k: int, whiten: bool,
              total=None, discarded=None, rank: int | None = None) -> PCAParams:
  """PCAParams of the k leading of the singular values s and right vectors vt of n centred rows.

  total / discarded: the squared norm of all / of the discarded directions (default: from s,
  which then holds all rank = len(s) singular values).
  """
  rank = len(s) if rank is None else rank
  total = jnp.sum(s**2) if total is None else total
  discarded = jnp.sum(s[k:] ** 2) if discarded is None else discarded
  noise = discarded / (n - 1) / (rank - k) if k < rank else jnp.zeros((), s.dtype)
  return PCAParams(vt[:k], s[:k] ** 2 / (n - 1), s[:k] ** 2 / total, s[:k], mean, noise, whiten)


def _check_width(name: str, X: jnp.ndarray, width: int, what: str) -> None:
  if X.shape[-1] != width:
    raise DataError(f"{name} has {X.shape[-1]} columns but the PCA was fitted with {width} {what}.")


def transform(params: PCAParams, X) -> jnp.ndarray:
  """X (n, d) or one row (d,) -> Z = (X - mean_) components_^T, (n, k); whitened: Z / sqrt(var).

  Checks X (:func:`validation.check_query`: values too when concrete, the shape under
  jit/vmap), then runs the jitted projection.
  """
  X = validation.check_query(X, params.mean_.shape[-1], "the PCA", allow_row=True)
  return _transform(params, X)


@jax.jit
def _transform(params: PCAParams, X: jnp.ndarray) -> jnp.ndarray:
  z = jnp.matmul(X - params.mean_, params.components_.T, precision=_HI)
  if params.whiten:
    z = z / jnp.maximum(jnp.sqrt(params.explained_variance_), jnp.finfo(z.dtype).eps)
  return z


@jax.jit
def inverse_transform(params: PCAParams, Z: jnp.ndarray) -> jnp.ndarray:
  """Z (n, k) or (k,) -> Z components_ + mean_, (n, d); whitened: Z scaled by sqrt(var) first."""
  _check_width("Z", Z, params.components_.shape[0], "components")
  if params.whiten:
    Z = Z * jnp.sqrt(params.explained_variance_)
  return jnp.matmul(Z, params.components_, precision=_HI) + params.mean_


def fit_transform(X, y=None, **hyper) -> tuple[PCAParams, jnp.ndarray]:
  """``fit`` then ``transform`` of the same X: returns (params, Z (n, k))."""
  params = fit(X, y, **hyper)
  return params, transform(params, X)
