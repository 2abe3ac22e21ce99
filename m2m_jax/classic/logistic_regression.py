"""Logistic regression, binary and multinomial, as pure functions.

For n samples x_i (d features) with classes y_i in 0..K-1, the model's logits are
z_i = W x_i + b and its class probabilities p_i = softmax(z_i). For K = 2 there is one logit
z_i = w . x_i + b, read as the logits (0, z_i), so p_i = (sigmoid(-z_i), sigmoid(z_i)).
``fit`` minimises scikit-learn's objective divided by n (the same minimiser, but gradients of
order one whatever n is):

  f(W, b) = (1/n) sum_i -log softmax(z_i)[y_i] + ||W||^2 / (2 C n),

with the intercept b unpenalised. Its gradient is (1/n) (P - Y)^T [X, 1] plus (W / (C n), 0),
where P holds the probabilities and Y the one-hot labels (not the hard 0/1 predictions of the
seed's perceptron-like rule). Log-probabilities come from ``jax.nn.log_softmax``, so no input
overflows. Solvers: L-BFGS (``optax.lbfgs`` with its zoom line search) or plain full-batch
gradient descent; both stop when max |grad f| <= ``tol`` (scikit-learn's ``gtol``) or after
``max_iter`` steps, starting from zeros.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError, choose


@struct.dataclass
class LogisticRegressionParams:
  """A fitted model. coef_: (K', d) and intercept_: (K',) with K' = 1 for two classes, else K;
  n_iter_: () solver steps taken; classes_: the K original labels (static), sorted."""
  coef_: jax.Array
  intercept_: jax.Array
  n_iter_: jax.Array
  classes_: tuple = struct.field(pytree_node=False)


def _logits(coef: jax.Array, intercept: jax.Array, X: jax.Array) -> jax.Array:
  """(n, d) -> (n, K) logits; one column (z) becomes the pair (0, z)."""
  z = X @ coef.T + intercept
  return jnp.concatenate([jnp.zeros_like(z), z], axis=1) if coef.shape[0] == 1 else z


def objective(theta, X: jax.Array, y: jax.Array, l2: jax.Array, fit_intercept: bool):
  """f(W, b) above on X (n, d) and class indices y (n,), with l2 = 1 / C (0 for no penalty);
  theta = (W (K', d), b (K',)); b counts as 0 when not ``fit_intercept``."""
  coef, intercept = theta
  intercept = intercept if fit_intercept else jnp.zeros_like(intercept)
  log_p = jax.nn.log_softmax(_logits(coef, intercept, X))
  nll = -jnp.take_along_axis(log_p, y[:, None], axis=1).mean()
  return nll + 0.5 * l2 * jnp.sum(coef**2) / X.shape[0]


def _max_abs(tree) -> jax.Array:
  """max |entry| over all leaves of a pytree."""
  return jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(tree)]))


def _lbfgs(f, theta, max_iter: jax.Array, tol: jax.Array):
  """Minimises f from theta with optax's L-BFGS; returns (theta, steps)."""
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(f)

  def step(carry):
    theta, state = carry
    value, grad = value_and_grad(theta, state=state)
    updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=f)
    return optax.apply_updates(theta, updates), state

  def going(carry):
    _, state = carry
    count = optax.tree.get(state, "count")
    grad = optax.tree.get(state, "grad")
    return (count == 0) | ((count < max_iter) & (_max_abs(grad) > tol))

  theta, state = jax.lax.while_loop(going, step, (theta, opt.init(theta)))
  return theta, optax.tree.get(state, "count")


def _smoothness(X: jax.Array, l2: jax.Array, fit_intercept: bool) -> jax.Array:
  """L with ||grad f(u) - grad f(v)|| <= L ||u - v||: lambda_max([X,1]^T [X,1]) / (2n) + l2/n.

  The softmax cross-entropy's Hessian in the logits has eigenvalues at most 1/2."""
  n = X.shape[0]
  Xb = jnp.concatenate([X, jnp.ones((n, 1), X.dtype)], axis=1) if fit_intercept else X
  return jnp.linalg.eigvalsh(Xb.T @ Xb)[-1] / (2 * n) + l2 / n


def _gd(f, theta, max_iter: jax.Array, tol: jax.Array, learning_rate: jax.Array):
  """theta <- theta - learning_rate * grad f(theta) until max |grad| <= tol; (theta, steps)."""
  grad_f = jax.grad(f)

  def step(carry):
    theta, grad, k = carry
    theta = jax.tree.map(lambda t, g: t - learning_rate * g, theta, grad)
    return theta, grad_f(theta), k + 1

  def going(carry):
    _, grad, k = carry
    return (k < max_iter) & (_max_abs(grad) > tol)

  theta, _, k = jax.lax.while_loop(going, step, (theta, grad_f(theta), jnp.int32(0)))
  return theta, k


def solve(X, y, l2, tol, learning_rate, max_iter, *, n_classes: int, solver: str,
           fit_intercept: bool):
  """:func:`fit`'s pure core, no input checks: X (n, d) float32, y (n,) int32 in
  0..n_classes-1, l2 = 1 / C -> (W (K', d), b (K',), steps ()). Jittable and vmappable.

  learning_rate <= 0 (gd only) means 1 / L from :func:`_smoothness`."""
  width = 1 if n_classes == 2 else n_classes
  theta = (jnp.zeros((width, X.shape[1]), X.dtype), jnp.zeros((width,), X.dtype))
  f = lambda t: objective(t, X, y, l2, fit_intercept)
  if solver == "lbfgs":
    (coef, intercept), steps = _lbfgs(f, theta, max_iter, tol)
  else:
    lr = jnp.where(learning_rate > 0, learning_rate,
                   1.0 / _smoothness(X, l2, fit_intercept))
    (coef, intercept), steps = _gd(f, theta, max_iter, tol, lr)
  return coef, intercept, steps


_solve_jit = jax.jit(solve, static_argnames=("n_classes", "solver", "fit_intercept"))


def check_hyper(C: float, penalty: Optional[str], solver: str, max_iter: int, tol: float,
                 learning_rate: Optional[float]) -> None:
  if penalty not in ("l2", None):
    raise ConfigError(f"unknown penalty {penalty!r}; choose 'l2' or None.")
  choose("solver", solver, ["lbfgs", "gd"])
  if not C > 0:
    raise ConfigError(f"C={C} must be > 0 (np.inf or penalty=None: no penalty).")
  if validation.as_integer(max_iter) is None or max_iter < 1:
    raise ConfigError(f"max_iter={max_iter} must be a positive integer.")
  if not tol > 0:
    raise ConfigError(f"tol={tol} must be > 0.")
  if learning_rate is not None and not learning_rate > 0:
    raise ConfigError(f"learning_rate={learning_rate} must be > 0 (or None: 1/L).")


def fit(X, y, *, C: float = 1.0, penalty: Optional[str] = "l2", solver: str = "lbfgs",
        max_iter: int = 1000, tol: float = 1e-4, learning_rate: Optional[float] = None,
        fit_intercept: bool = True) -> LogisticRegressionParams:
  """Minimises f(W, b) (module docstring) on X (n, d) and labels y (n,) of any encoding.

  C: inverse L2 strength (scikit-learn's C); penalty: "l2" or None (C = inf is the same);
  solver: "lbfgs" or "gd"; max_iter: most solver steps; tol: stop at max |grad f| <= tol;
  learning_rate: gd's step (None: 1/L, L the gradient's Lipschitz constant); fit_intercept:
  learn b (else b = 0). Returns coef_ (K', d), intercept_ (K',), with K' = 1 for two classes.
  """
  check_hyper(C, penalty, solver, max_iter, tol, learning_rate)
  validation.check_labels(y)
  classes, indices = validation.encode_labels(y)
  X, y = validation.check_X_y(X, indices.reshape(np.shape(y)), classification=True,
                              classes=classes)
  l2 = 0.0 if penalty is None else 1.0 / C
  coef, intercept, steps = _solve_jit(
      X, y, jnp.float32(l2), jnp.float32(tol), jnp.float32(learning_rate or 0.0),
      jnp.int32(max_iter), n_classes=len(classes), solver=solver,
      fit_intercept=bool(fit_intercept))
  return LogisticRegressionParams(coef, intercept, steps, tuple(classes.tolist()))


def decision_function(params: LogisticRegressionParams, X: jax.Array) -> jax.Array:
  """Logits X W^T + b: (n,) for two classes (the class-1 logit z), else (n, K)."""
  z = _check_query(params, X) @ params.coef_.T + params.intercept_
  return z[:, 0] if z.shape[1] == 1 else z


def predict_proba(params: LogisticRegressionParams, X: jax.Array) -> jax.Array:
  """softmax(z_i) for each row, (n, K) in the order of classes_; finite for any finite X."""
  return jax.nn.softmax(_logits(params.coef_, params.intercept_, _check_query(params, X)), axis=1)


def predict(params: LogisticRegressionParams, X: jax.Array) -> jax.Array:
  """classes_[argmax_k z_ik], (n,); jittable for numeric labels (others return numpy)."""
  k = jnp.argmax(_logits(params.coef_, params.intercept_, _check_query(params, X)), axis=1)
  classes = np.asarray(params.classes_)
  if classes.dtype.kind in "biuf":
    return jnp.asarray(classes)[k]
  return classes[np.asarray(k)]


def score(params: LogisticRegressionParams, X: jax.Array, y) -> jax.Array:
  """Accuracy: the fraction of rows whose predicted label equals y (n,)."""
  prediction = predict(params, X)
  validation.check_targets(y, prediction.shape[0])
  return jnp.mean(prediction == y)


def _check_query(params: LogisticRegressionParams, X) -> jax.Array:
  """X as float32 (n, d) with the fitted d (:func:`validation.check_query`)."""
  return validation.check_query(X, params.coef_.shape[-1], "the logistic regression")
