"""Linear regression: least squares, ridge, lasso and elastic net as pure functions.

Model: y_hat = X w + b with X (n, d), w (d,), b scalar. The penalty follows scikit-learn's
conventions, chosen by ``l1_ratio`` (rho):

  ``l1_ratio == 0`` (Ridge; LinearRegression when ``alpha == 0``):
      ||y - X w - b||^2 + alpha ||w||^2
  ``l1_ratio > 0`` (ElasticNet; Lasso when ``l1_ratio == 1``):
      1/(2n) ||y - X w - b||^2 + alpha rho ||w||_1 + alpha (1 - rho) / 2 ||w||^2

so ``ElasticNet(alpha, l1_ratio -> 0)`` is ``Ridge(n alpha)``, not ``Ridge(alpha)``: the two
conventions are scikit-learn's, kept so that its hyperparameter values mean the same here. Every
solver minimises the same objective divided by a positive constant,

  F(w) = 1/(2n) ||yc - Xc w||^2 + l1 ||w||_1 + l2/2 ||w||^2,
  (l1, l2) = (0, alpha / n) for ridge, (alpha rho, alpha (1 - rho)) for the elastic net,

on centred data Xc = X - mean(X), yc = y - mean(y); the intercept is never penalised and is
recovered as b = mean(y) - mean(X) . w (``fit_intercept=False``: no centring, b = 0).

Solvers (``solver=``):
  ``'lstsq'``     Householder QR of [Xc | yc] (n, d+1) -> R; its last column holds z = Q^T yc, so
                  w = argmin ||R_x w - z||: an SVD of the small R_x = U S V^T gives
                  w = V diag(s / (s^2 + n l2)) U^T z, the minimum-norm solution when X is rank
                  deficient (s below max(n, d) eps s_max count as zero). Errors grow like
                  cond(X) eps, not cond(X)^2 eps as with the normal equations. No L1 term.
  ``'cholesky'``  Cholesky of the centred normal equations (Xc^T Xc + n l2 I) w = Xc^T yc, then two
                  steps of iterative refinement whose residual Xc^T (yc - Xc w) - n l2 w is
                  computed from X itself (corrected semi-normal equations): in float32 this
                  brings the error down to the QR solution's while cond(X) < 1/sqrt(eps), at the
                  cost of a Gram matrix instead of a QR. Fails (refused) when Xc^T Xc + n l2 I
                  is singular. No L1 term.
  ``'cd'``        Cyclic coordinate descent on the covariance C = Xc^T Xc / n, c = Xc^T yc / n:
                  w_j <- S(c_j - C_j. w + C_jj w_j, l1) / (C_jj + l2), S(x, t) =
                  sign(x) max(|x| - t, 0); stops when scikit-learn's elastic-net duality gap
                  is <= tol ||yc||^2 / n (after ``n_iter_`` sweeps). Needs ``l1 > 0``.
  ``'gd'``        (Proximal) gradient descent, an epoch being one pass over a fresh permutation
                  of the data in batches of ``batch_size`` (None: the whole set, batch GD; 1:
                  stochastic; k: mini-batch):
                  w <- S(w - lr (Xb^T (Xb w - yb) / |b| + l2 w), lr l1).
                  An epoch's result is the mean of its iterates (Polyak-Ruppert averaging:
                  with a constant step the last iterate wanders in a noise ball around the
                  optimum, the mean far less; Bach & Moulines 2013); batch GD has one iterate
                  per epoch. Returns the epoch result of lowest F; stops after 5 epochs in a
                  row fail to lower the best F by more than tol |F| (scikit-learn's SGD rule).
                  ``learning_rate=None`` picks 1/L for batch GD and 1/(2 L_b) otherwise, with
                  L = lambda_max(Xc^T Xc / n) + l2 (power iteration) and the mini-batch
                  smoothness L_b = n (b-1) / (b (n-1)) L + (n-b) / (b (n-1)) L_max,
                  L_max = max_i ||xc_i||^2 + l2 (Gower et al. 2019, "SGD: general analysis and
                  improved rates").
  ``'auto'``      'gd' when ``batch_size`` or ``learning_rate`` is given, else 'cd' when there is an
                  L1 term, 'cholesky' for ridge (alpha > 0; the penalty keeps the system positive
                  definite) and 'lstsq' for plain least squares (rank deficiency is possible).
"""

import functools
import math

import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax.classic.validation import check_at_most, check_query, check_targets, check_X_y
from m2m_jax.errors import ConfigError, DataError, TrainingDiverged, choose

SOLVERS = ("auto", "lstsq", "cholesky", "cd", "gd")
_POWER_ITERATIONS = 20
_REFINEMENTS = 2
_PATIENCE = 5


@struct.dataclass
class LinearRegressionParams:
  """coef_: (d,); intercept_: (); n_iter_: () sweeps ('cd') or epochs ('gd'), None otherwise;
  alpha, l1_ratio: () the penalty fitted (leaves, so that fits vmap over them); solver: static."""

  coef_: jnp.ndarray
  intercept_: jnp.ndarray
  n_iter_: jnp.ndarray | None
  alpha: jnp.ndarray
  l1_ratio: jnp.ndarray
  solver: str = struct.field(pytree_node=False, default="lstsq")


def fit(X, y, *, alpha: float = 0.0, l1_ratio: float = 0.0, solver: str = "auto",
        fit_intercept: bool = True, learning_rate: float | None = None, max_iter: int = 1000,
        tol: float = 1e-4, batch_size: int | None = None,
        key: jax.Array | None = None) -> LinearRegressionParams:
  """Fits w, b to X (n, d), y (n,) by minimising the objective of the module docstring.

  alpha, l1_ratio: the penalty (scikit-learn's Ridge / ElasticNet conventions); solver: 'auto',
  'lstsq', 'cholesky', 'cd' or 'gd'; learning_rate: gd's step (None: from the data); max_iter:
  most cd sweeps / gd epochs; tol: stopping tolerance (module docstring); batch_size: gd's batch
  (None: all n); key: draws gd's per-epoch permutations (default key(0)).
  Checks the inputs (:func:`check`), then runs :func:`solve`; refuses a fit whose
  coefficients came out NaN.
  """
  X, y, solver = check(X, y, alpha=alpha, l1_ratio=l1_ratio, solver=solver,
                       learning_rate=learning_rate, max_iter=max_iter, tol=tol,
                       batch_size=batch_size)
  if solver == "gd" and learning_rate is not None:
    _check_stable(X, alpha, l1_ratio, fit_intercept, learning_rate, batch_size)
  params = solve(X, y, float(alpha), float(l1_ratio), int(max_iter), float(tol), key, solver=solver,
                 fit_intercept=fit_intercept, learning_rate=learning_rate, batch_size=batch_size)
  _check_finite(params.coef_, solver)
  return params


def check(X, y, *, alpha: float = 0.0, l1_ratio: float = 0.0, solver: str = "auto",
          learning_rate: float | None = None, max_iter: int = 1000, tol: float = 1e-4,
          batch_size: int | None = None) -> tuple[jnp.ndarray, jnp.ndarray, str]:
  """:func:`fit`'s input checks: returns X (n, d), y (n,) as float32 and the concrete solver."""
  X, y = check_X_y(X, y, classification=False)
  solver = _resolve_solver(solver, alpha, l1_ratio, learning_rate, batch_size, max_iter, tol)
  if batch_size is not None:
    check_at_most("batch_size", batch_size, X.shape[0], "the number of samples")
  return X, y, solver


@functools.partial(jax.jit, static_argnames=("solver", "fit_intercept", "batch_size"))
def solve(X, y, alpha=0.0, l1_ratio=0.0, max_iter=1000, tol=1e-4, key=None, *, solver: str,
          fit_intercept: bool = True, learning_rate=None,
          batch_size: int | None = None) -> LinearRegressionParams:
  """The pure core of :func:`fit` on float32 X (n, d), y (n,), with a concrete solver.

  No input checks (``fit`` makes them); jitted, and vmappable over X, y (e.g. bootstrap
  resamples), alpha, l1_ratio (a regularisation path), tol or key.
  """
  n = X.shape[0]
  l1, l2 = _penalties(alpha, l1_ratio, n)
  Xc, yc, x_mean, y_mean = _centre(X, y, fit_intercept)
  n_iter = None
  if solver == "lstsq":
    coef = _lstsq(Xc, yc, n * l2)
  elif solver == "cholesky":
    coef = _cholesky(Xc, yc, n * l2)
  elif solver == "cd":
    coef, n_iter = _coordinate_descent(Xc, yc, l1, l2, tol, max_iter)
  else:
    key = jax.random.key(0) if key is None else key
    batch_size = batch_size or n
    lr = _step_size(Xc, l2, batch_size) if learning_rate is None else learning_rate
    coef, n_iter = _gradient_descent(Xc, yc, l1, l2, lr, tol, max_iter, key, batch_size)
  as_leaf = lambda v: jnp.asarray(v, jnp.float32)
  return LinearRegressionParams(coef, y_mean - x_mean @ coef, n_iter, as_leaf(alpha),
                                as_leaf(l1_ratio), solver)


def predict(params: LinearRegressionParams, X: jnp.ndarray) -> jnp.ndarray:
  """X (n, d) -> X w + b (n,). Jittable; vmaps over stacked params."""
  X = check_query(X, params.coef_.shape[-1], "the linear regression")
  return X @ params.coef_ + params.intercept_


def score(params: LinearRegressionParams, X: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean y)^2 (scikit-learn's: 1 or 0 for constant y)."""
  prediction = predict(params, X)
  check_targets(y, prediction.shape[0])
  ss_res = jnp.sum((y - prediction) ** 2)
  ss_tot = jnp.sum((y - jnp.mean(y)) ** 2)
  constant = jnp.where(ss_res == 0, 1.0, 0.0)
  return jnp.where(ss_tot > 0, 1 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0), constant)


def objective(params: LinearRegressionParams, X: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """scikit-learn's objective at params (Ridge's for l1_ratio == 0, ElasticNet's otherwise)."""
  w, alpha, rho = params.coef_, params.alpha, params.l1_ratio
  prediction = predict(params, X)
  n = prediction.shape[0]
  check_targets(y, n)
  sse = jnp.sum((y - prediction) ** 2)
  ridge = sse + alpha * w @ w
  enet = sse / (2 * n) + alpha * rho * jnp.sum(jnp.abs(w)) + alpha * (1 - rho) / 2 * w @ w
  return jnp.where(rho == 0, ridge, enet)


def _resolve_solver(solver: str, alpha: float, l1_ratio: float, learning_rate: float | None,
                    batch_size: int | None, max_iter: int, tol: float) -> str:
  """Checks the hyperparameters; returns the concrete solver ('auto' resolved)."""
  choose("solver", solver, SOLVERS)
  if not (math.isfinite(alpha) and alpha >= 0):
    raise ConfigError(f"alpha={alpha} must be a finite number >= 0.")
  if not 0 <= l1_ratio <= 1:
    raise ConfigError(f"l1_ratio={l1_ratio} must lie in [0, 1] (0 ridge, 1 lasso).")
  if learning_rate is not None and not (math.isfinite(learning_rate) and learning_rate > 0):
    raise ConfigError(f"learning_rate={learning_rate} must be > 0 (or None: picked from the data).")
  if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
    raise ConfigError(f"max_iter={max_iter} must be a positive integer.")
  if not tol >= 0:
    raise ConfigError(f"tol={tol} must be >= 0.")
  if batch_size is not None and (isinstance(batch_size, bool)
                                 or not isinstance(batch_size, (int, np.integer))):
    raise ConfigError(f"batch_size={batch_size!r} must be an int (or None: batch GD).")
  has_l1 = alpha > 0 and l1_ratio > 0
  wants_gd = learning_rate is not None or batch_size is not None
  if solver == "auto":
    return "gd" if wants_gd else "cd" if has_l1 else "cholesky" if alpha > 0 else "lstsq"
  if wants_gd and solver != "gd":
    raise ConfigError(f"learning_rate and batch_size apply to solver='gd', not {solver!r}.")
  if has_l1 and solver in ("lstsq", "cholesky"):
    raise ConfigError(f"solver={solver!r} has no L1 term (alpha={alpha}, l1_ratio={l1_ratio}); "
                      "use solver='cd' or 'gd'.")
  if solver == "cd" and not has_l1:
    raise ConfigError("solver='cd' needs an L1 term (alpha > 0 and l1_ratio > 0); use "
                      "'lstsq' or 'cholesky' for least squares and ridge.")
  return solver


def _penalties(alpha, l1_ratio, n: int):
  """(l1, l2) of F(w) = 1/(2n) ||r||^2 + l1 ||w||_1 + l2/2 ||w||^2 (module docstring)."""
  return alpha * l1_ratio, jnp.where(l1_ratio == 0, alpha / n, alpha * (1 - l1_ratio))


def _xt(X, r):
  """X^T r as a fused reduction: on XLA:CPU ~10x faster than a transposed gemv, and as accurate."""
  return jnp.sum(X * r[:, None], 0)


def _centre(X, y, fit_intercept: bool):
  """(Xc, yc, mean X (d,), mean y ()); zero means without an intercept."""
  x_mean = jnp.mean(X, 0) if fit_intercept else jnp.zeros(X.shape[1], X.dtype)
  y_mean = jnp.mean(y) if fit_intercept else jnp.zeros((), y.dtype)
  return X - x_mean, y - y_mean, x_mean, y_mean


def _lstsq(Xc, yc, ridge):
  """argmin ||yc - Xc w||^2 + ridge ||w||^2 by QR of [Xc | yc] and an SVD of the small R_x."""
  d = Xc.shape[1]
  R = jnp.linalg.qr(jnp.concatenate([Xc, yc[:, None]], 1), mode="r")
  u, s, vt = jnp.linalg.svd(R[:, :d], full_matrices=False)
  cutoff = jnp.finfo(s.dtype).eps * max(Xc.shape) * s[0]
  kept = (s > cutoff) | (ridge > 0)
  filt = jnp.where(kept, s / jnp.where(kept, s**2 + ridge, 1.0), 0.0)
  return vt.T @ (filt * (u.T @ R[:, d]))


def _cholesky(Xc, yc, ridge):
  """Solves (Xc^T Xc + ridge I) w = Xc^T yc by Cholesky plus refinement from X's residual."""
  gram = Xc.T @ Xc + ridge * jnp.eye(Xc.shape[1], dtype=Xc.dtype)
  factor = jax.scipy.linalg.cho_factor(gram)
  cho_solve = lambda rhs: jax.scipy.linalg.cho_solve(factor, rhs)
  refine = lambda _, w: w + cho_solve(_xt(Xc, yc - Xc @ w) - ridge * w)
  return jax.lax.fori_loop(0, _REFINEMENTS, refine, cho_solve(_xt(Xc, yc)))


def _soft_threshold(x, t):
  """S(x, t) = sign(x) max(|x| - t, 0)."""
  return jnp.sign(x) * jnp.maximum(jnp.abs(x) - t, 0.0)


def _duality_gap(C, c, v, w, l1, l2):
  """scikit-learn's elastic-net duality gap / n (C = Xc^T Xc/n, c = Xc^T yc/n, v = yc.yc/n)."""
  Cw = C @ w
  r2 = v - 2 * c @ w + w @ Cw          # ||r||^2 / n
  ry = v - c @ w                       # r . yc / n
  dual_norm = jnp.max(jnp.abs(c - Cw - l2 * w))
  const = jnp.where(dual_norm > l1, l1 / jnp.where(dual_norm > 0, dual_norm, 1.0), 1.0)
  return 0.5 * (r2 + l2 * w @ w) * (1 + const**2) + l1 * jnp.sum(jnp.abs(w)) - const * ry


def _coordinate_descent(Xc, yc, l1, l2, tol, max_iter):
  """Cyclic coordinate descent on the covariance; returns (w, sweeps)."""
  n = Xc.shape[0]
  C, c, v = Xc.T @ Xc / n, _xt(Xc, yc) / n, yc @ yc / n
  diag = jnp.diag(C)

  def update(j, w):
    rho_j = c[j] - C[j] @ w + diag[j] * w[j]
    denom = diag[j] + l2
    return w.at[j].set(jnp.where(denom > 0, _soft_threshold(rho_j, l1) / denom, 0.0))

  def sweep(state):
    it, w, _ = state
    w = jax.lax.fori_loop(0, C.shape[0], update, w)
    return it + 1, w, _duality_gap(C, c, v, w, l1, l2)

  def running(state):
    it, _, gap = state
    return (it < max_iter) & (gap > tol * v)

  w0 = jnp.zeros(C.shape[0], Xc.dtype)
  it, w, _ = jax.lax.while_loop(running, sweep, (0, w0, jnp.inf))
  return w, it


def _step_size(Xc, l2, batch_size: int):
  """1/L (batch GD) or 1/(2 L_b) (mini-batch, stochastic); module docstring."""
  n, d = Xc.shape
  v = jax.random.normal(jax.random.key(0), (d,), Xc.dtype)
  unit = lambda g: g / jnp.maximum(jnp.linalg.norm(g), jnp.finfo(g.dtype).tiny)
  v = jax.lax.fori_loop(0, _POWER_ITERATIONS, lambda _, v: unit(_xt(Xc, Xc @ v)), unit(v))
  L = jnp.maximum(jnp.sum((Xc @ v) ** 2) / n + l2, jnp.finfo(Xc.dtype).tiny)
  if batch_size == n:
    return 1 / L
  L_max = jnp.max(jnp.sum(Xc**2, 1)) + l2
  b = batch_size
  L_b = n * (b - 1) / (b * (n - 1)) * L + (n - b) / (b * (n - 1)) * L_max
  return 1 / (2 * L_b)


def _check_stable(X, alpha, l1_ratio, fit_intercept: bool, learning_rate: float,
                  batch_size: int | None) -> None:
  """Refuses a gd step at or above 2 / L (2 / L_b for mini-batches; module docstring).

  On the quadratic part of F, a step w <- w - lr grad multiplies the error along the top
  eigenvector of the Hessian by |1 - lr L|, which exceeds 1 there: the iterates grow instead of
  converging, and the best epoch would be returned as if it were the optimum.
  """
  n = X.shape[0]
  b = batch_size or n
  Xc = _centre(X, jnp.zeros(n, X.dtype), fit_intercept)[0]
  default = float(_step_size(Xc, _penalties(alpha, l1_ratio, n)[1], b))
  limit = (2 if b == n else 4) * default  # 2 / L from 1 / L, 2 / L_b from 1 / (2 L_b)
  if learning_rate >= limit:
    raise ConfigError(f"learning_rate={learning_rate} is at or above 2/L = {limit:.4g} for this "
                      "data, where gradient descent diverges; use a smaller step "
                      f"(learning_rate=None picks {default:.4g}).")


def _gradient_descent(Xc, yc, l1, l2, lr, tol, max_iter, key, batch_size: int):
  """Proximal gradient descent by epochs of step lr; returns (best epoch's w, epochs).

  w is NaN when an epoch's objective became NaN or inf (divergence).
  """
  n, d = Xc.shape
  objective_ = lambda w: (jnp.sum((yc - Xc @ w) ** 2) / (2 * n) + l1 * jnp.sum(jnp.abs(w))
                          + l2 / 2 * w @ w)

  def step(w, Xb, yb, mask):
    grad = _xt(Xb, mask * (Xb @ w - yb)) / jnp.sum(mask) + l2 * w
    return _soft_threshold(w - lr * grad, lr * l1)

  def epoch(it, w):
    """(last iterate, mean of the epoch's iterates)."""
    if batch_size == n:
      w = step(w, Xc, yc, jnp.ones(n, Xc.dtype))
      return w, w
    n_batches = -(-n // batch_size)
    order = jax.random.permutation(jax.random.fold_in(key, it), n)
    order = jnp.pad(order, (0, n_batches * batch_size - n)).reshape(n_batches, batch_size)
    mask = (jnp.arange(n_batches * batch_size) < n).astype(Xc.dtype).reshape(order.shape)

    def batch(carry, batch_mask):
      w = step(carry[0], Xc[batch_mask[0]], yc[batch_mask[0]], batch_mask[1])
      return (w, carry[1] + w), None

    w, total = jax.lax.scan(batch, (w, jnp.zeros_like(w)), (order, mask))[0]
    return w, total / n_batches

  def run(state):
    it, w, w_best, f_best, stale = state
    w, candidate = epoch(it, w)
    f = objective_(candidate)
    stale = jnp.where(f < f_best - tol * jnp.abs(f_best), 0, stale + 1)
    w_best = jnp.where(f < f_best, candidate, w_best)
    return it + 1, w, jnp.where(jnp.isfinite(f), w_best, jnp.nan), jnp.minimum(f, f_best), stale

  def running(state):
    it, _, w_best, _, stale = state
    return (it < max_iter) & (stale < _PATIENCE) & jnp.all(jnp.isfinite(w_best))

  w0 = jnp.zeros(d, Xc.dtype)
  it, _, w, _, _ = jax.lax.while_loop(running, run, (0, w0, w0, objective_(w0), 0))
  return w, it


def _check_finite(coef, solver: str) -> None:
  """Refuses NaN/inf coefficients with the likely cause."""
  if np.all(np.isfinite(np.asarray(coef))):
    return
  if solver == "gd":
    raise TrainingDiverged("gradient descent diverged (coefficients became NaN or inf); lower "
                           "learning_rate, or leave it None to pick a stable step.")
  raise DataError(f"solver={solver!r} failed: X^T X (+ ridge) is singular or too ill-conditioned "
                  "for float32; use solver='lstsq' or a larger alpha.")
