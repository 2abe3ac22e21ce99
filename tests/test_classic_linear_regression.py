"""m2m_jax.classic.linear_regression against scikit-learn's LinearRegression, Ridge, ElasticNet.

Tolerances: the library computes in float32, scikit-learn in float64. Coefficients are compared
relative to the largest |coef| (diabetes' reach ~800, where float32's spacing alone is 6e-5, so
an absolute 1e-4 is below float32's resolution); objectives relative to scikit-learn's value.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, make_regression
from sklearn.linear_model import ElasticNet, LinearRegression, Ridge

from m2m_jax.classic import linear_regression as lr
from m2m_jax.errors import ConfigError, DataError

DIABETES = load_diabetes(return_X_y=True)
REGRESSION = make_regression(n_samples=600, n_features=20, n_informative=12, noise=5.0,
                             bias=3.0, random_state=0)
# Well conditioned (independent unit-variance features), for gradient descent.
EASY = make_regression(n_samples=2000, n_features=10, noise=10.0, bias=-2.0, random_state=1)
DATASETS = {"diabetes": DIABETES, "make_regression": REGRESSION}


def rel_err(a, b) -> float:
  """max |a - b| / max |b|."""
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def enet_objective(coef, intercept, X, y, alpha, l1_ratio) -> float:
  """scikit-learn's ElasticNet objective, in float64."""
  w = np.asarray(coef, np.float64)
  r = y - X @ w - float(intercept)
  l1, l2 = alpha * l1_ratio, alpha * (1 - l1_ratio)
  return r @ r / (2 * len(y)) + l1 * np.abs(w).sum() + l2 / 2 * w @ w


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("solver", ["lstsq", "cholesky"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_least_squares_matches_sklearn(data, solver, fit_intercept):
  X, y = DATASETS[data]
  params = lr.fit(X, y, solver=solver, fit_intercept=fit_intercept)
  ref = LinearRegression(fit_intercept=fit_intercept).fit(X, y)
  assert rel_err(params.coef_, ref.coef_) < 1e-4
  assert abs(float(params.intercept_) - ref.intercept_) < 1e-4 * max(1.0, abs(ref.intercept_))
  assert float(lr.score(params, X, y)) == pytest.approx(ref.score(X, y), abs=1e-5)
  assert params.n_iter_ is None


def test_auto_picks_lstsq_and_gives_the_minimum_norm_solution_when_rank_deficient():
  X, y = DIABETES
  X = np.hstack([X, X[:, :3]])                    # three duplicated columns: rank 10 of 13
  params = lr.fit(X, y)
  assert params.solver == "lstsq"
  assert rel_err(params.coef_, LinearRegression().fit(X, y).coef_) < 1e-4
  with pytest.raises(DataError, match="solver='cholesky' failed: X\\^T X"):
    lr.fit(X, y, solver="cholesky")


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("alpha", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("solver", ["auto", "lstsq", "cholesky"])
def test_ridge_matches_sklearn(data, alpha, solver):
  X, y = DATASETS[data]
  params = lr.fit(X, y, alpha=alpha, solver=solver)
  ref = Ridge(alpha=alpha).fit(X, y)
  assert params.solver == ("cholesky" if solver == "auto" else solver)
  assert rel_err(params.coef_, ref.coef_) < 1e-4
  assert abs(float(params.intercept_) - ref.intercept_) < 1e-4 * abs(ref.intercept_)
  sk_objective = np.sum((y - ref.predict(X)) ** 2) + alpha * ref.coef_ @ ref.coef_
  assert float(lr.objective(params, X, y)) == pytest.approx(sk_objective, rel=1e-5)


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("alpha", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("l1_ratio", [1.0, 0.5, 0.2])
def test_lasso_and_elastic_net_reach_sklearn_objective(data, alpha, l1_ratio):
  X, y = DATASETS[data]
  params = lr.fit(X, y, alpha=alpha, l1_ratio=l1_ratio, tol=1e-6)
  ref = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, tol=1e-10, max_iter=100_000).fit(X, y)
  ours = enet_objective(params.coef_, params.intercept_, X, y, alpha, l1_ratio)
  theirs = enet_objective(ref.coef_, ref.intercept_, X, y, alpha, l1_ratio)
  assert params.solver == "cd" and 1 <= int(params.n_iter_) < 1000
  assert abs(ours - theirs) <= 1e-4 * theirs
  assert float(lr.objective(params, X, y)) == pytest.approx(ours, rel=1e-5)
  if l1_ratio == 1.0:                             # Lasso picks the same features
    np.testing.assert_array_equal(np.asarray(params.coef_) == 0, ref.coef_ == 0)


def test_default_tolerance_stops_early_but_near_the_optimum():
  X, y = DIABETES
  params = lr.fit(X, y, alpha=0.01, l1_ratio=1.0)
  ref = ElasticNet(alpha=0.01, l1_ratio=1.0, tol=1e-10, max_iter=100_000).fit(X, y)
  ours = enet_objective(params.coef_, params.intercept_, X, y, 0.01, 1.0)
  theirs = enet_objective(ref.coef_, ref.intercept_, X, y, 0.01, 1.0)
  # The duality gap bounds the suboptimality: F - F* <= tol ||y - mean y||^2 / n.
  assert 0 <= ours - theirs <= 1e-4 * np.var(y)


def test_intercept_is_never_penalised():
  X, y = REGRESSION
  lasso = lr.fit(X, y, alpha=1e4, l1_ratio=1.0)
  np.testing.assert_array_equal(np.asarray(lasso.coef_), 0.0)
  assert float(lasso.intercept_) == pytest.approx(y.mean(), abs=1e-5)
  ridge = lr.fit(X, y, alpha=1e12)
  assert np.max(np.abs(ridge.coef_)) < 1e-6
  assert float(ridge.intercept_) == pytest.approx(y.mean(), abs=1e-4)


@pytest.mark.parametrize("batch_size", [None, 1, 32])
def test_gradient_descent_reaches_the_closed_form_r2(batch_size):
  X, y = EASY
  best = float(lr.score(lr.fit(X, y), X, y))      # R^2 = 0.99
  params = lr.fit(X, y, solver="gd", batch_size=batch_size, tol=1e-6)
  # Batch GD converges (float32 rounding only); stochastic and mini-batch GD with a constant
  # step stay in a noise ball around the optimum, which the epoch averaging shrinks to ~1e-6.
  tolerance = 1e-7 if batch_size is None else 1e-5
  assert float(lr.score(params, X, y)) == pytest.approx(best, abs=tolerance)
  assert params.solver == "gd" and 1 <= int(params.n_iter_) < 100


@pytest.mark.parametrize("batch_size", [None, 1, 32])
@pytest.mark.parametrize("alpha, l1_ratio", [(100.0, 0.0), (1.0, 0.5), (1.0, 1.0)])
def test_gradient_descent_minimises_penalised_objectives(batch_size, alpha, l1_ratio):
  X, y = EASY
  exact = lr.fit(X, y, alpha=alpha, l1_ratio=l1_ratio, tol=1e-8)
  params = lr.fit(X, y, alpha=alpha, l1_ratio=l1_ratio, solver="gd", batch_size=batch_size,
                  tol=1e-6)
  # Batch (proximal) GD: float32 rounding only; stochastic / mini-batch: the noise ball.
  rel = 1e-6 if batch_size is None else 1e-4
  ours, theirs = float(lr.objective(params, X, y)), float(lr.objective(exact, X, y))
  assert theirs * (1 - 1e-6) <= ours <= theirs * (1 + rel)


def test_gradient_descent_epochs_and_keys():
  X, y = EASY
  three = lr.fit(X, y, batch_size=32, max_iter=3)
  assert int(three.n_iter_) == 3
  again = lr.fit(X, y, batch_size=32, max_iter=3)
  np.testing.assert_array_equal(np.asarray(three.coef_), np.asarray(again.coef_))
  other = lr.fit(X, y, batch_size=32, max_iter=3, key=jax.random.key(1))
  assert not np.array_equal(np.asarray(three.coef_), np.asarray(other.coef_))
  slow = lr.fit(X, y, learning_rate=1e-4, max_iter=5)   # 'auto' -> 'gd' with a given step
  assert slow.solver == "gd" and int(slow.n_iter_) == 5
  assert float(lr.score(slow, X, y)) < 0.1


def test_predict_and_score_jit_and_vmap():
  X, y = DIABETES
  params = lr.fit(X, y, alpha=0.1)
  Xj = jnp.asarray(X, jnp.float32)
  np.testing.assert_allclose(jax.jit(lr.predict)(params, Xj), lr.predict(params, Xj), atol=1e-4)
  r2 = Ridge(0.1).fit(X, y).score(X, y)
  assert float(jax.jit(lr.score)(params, Xj, y)) == pytest.approx(r2, abs=1e-5)
  rows = np.random.default_rng(0).integers(0, len(y), (4, len(y)))
  fits = [lr.fit(X[r], y[r], alpha=0.1) for r in rows]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *fits)
  batched = jax.vmap(lr.predict, in_axes=(0, None))(stacked, Xj)
  assert batched.shape == (4, len(y))
  for fitted, out in zip(fits, batched):
    np.testing.assert_allclose(out, lr.predict(fitted, Xj), atol=1e-3)
  per_row = jax.vmap(lambda x: lr.predict(params, x[None])[0])(Xj)
  np.testing.assert_allclose(per_row, lr.predict(params, Xj), atol=1e-3)


def test_solve_vmaps_over_a_regularisation_path_and_bootstrap_resamples():
  X, y = DIABETES
  Xj, yj = jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32)
  alphas = jnp.array([0.01, 0.1, 1.0])
  path = jax.vmap(lambda a: lr.solve(Xj, yj, a, 1.0, 1000, 1e-6, solver="cd"))(alphas)
  assert path.coef_.shape == (3, 10) and path.n_iter_.shape == (3,)
  for alpha, coef, intercept in zip([0.01, 0.1, 1.0], path.coef_, path.intercept_):
    ref = ElasticNet(alpha=alpha, l1_ratio=1.0, tol=1e-10, max_iter=100_000).fit(X, y)
    theirs = enet_objective(ref.coef_, ref.intercept_, X, y, alpha, 1.0)
    ours = enet_objective(coef, intercept, X, y, alpha, 1.0)
    assert abs(ours - theirs) <= 1e-4 * theirs
  rows = jnp.asarray(np.random.default_rng(1).integers(0, len(y), (5, len(y))))
  boot = jax.vmap(lambda r: lr.solve(Xj[r], yj[r], 1.0, solver="cholesky"))(rows)
  for r, coef in zip(np.asarray(rows), boot.coef_):
    assert rel_err(coef, Ridge(1.0).fit(X[r], y[r]).coef_) < 1e-4


def test_score_of_constant_targets_follows_sklearn():
  X, y = DIABETES
  params = lr.fit(X, y)
  assert float(lr.score(params, X, np.full(len(y), 5.0))) == 0.0
  flat = lr.fit(X, np.full(len(y), 5.0))
  assert float(lr.score(flat, X, np.full(len(y), 5.0))) == 1.0


@pytest.mark.parametrize("X, y, message", [
    (np.array([[1.0, np.nan], [2.0, 3.0]]), np.ones(2), "X holds NaN or inf"),
    (np.ones((3, 2)), np.array([1.0, np.inf, 2.0]), "y holds NaN or inf"),
    (np.ones((3, 2)), np.ones(4), "X has 3 samples but y has 4"),
    (np.ones(3), np.ones(3), "X must be 2-D"),
])
def test_bad_data_is_refused(X, y, message):
  with pytest.raises(DataError, match=message):
    lr.fit(X, y)


@pytest.mark.parametrize("hyper, message", [
    ({"solver": "svd"}, "unknown solver 'svd'; choose one of: auto, cd, cholesky, gd, lstsq"),
    ({"alpha": -1.0}, "alpha=-1.0 must be a finite number >= 0"),
    ({"l1_ratio": 1.5}, "l1_ratio=1.5 must lie in \\[0, 1\\]"),
    ({"alpha": 1.0, "l1_ratio": 0.5, "solver": "lstsq"}, "solver='lstsq' has no L1 term"),
    ({"solver": "cd"}, "solver='cd' needs an L1 term"),
    ({"solver": "cholesky", "batch_size": 4}, "learning_rate and batch_size apply to solver='gd'"),
    ({"learning_rate": 0.0}, "learning_rate=0.0 must be > 0"),
    ({"max_iter": 0}, "max_iter=0 must be a positive integer"),
    ({"tol": -1.0}, "tol=-1.0 must be >= 0"),
    ({"batch_size": 2.5}, "batch_size=2.5 must be an int"),
])
def test_bad_hyperparameters_are_refused(hyper, message):
  X, y = DIABETES
  with pytest.raises(ConfigError, match=message):
    lr.fit(X, y, **hyper)


def test_batch_size_above_n_samples_is_refused():
  X, y = DIABETES
  with pytest.raises(DataError, match="batch_size=500 must lie in 1..442"):
    lr.fit(X, y, batch_size=500)


@pytest.mark.parametrize("batch_size", [None, 50])
def test_a_step_beyond_the_stability_limit_is_refused(batch_size):
  # Above 2/L the iterates grow; the best epoch (possibly w = 0) must not pass for the optimum.
  X = np.random.default_rng(0).standard_normal((500, 10)).astype(np.float32)
  y = X @ np.linspace(-2, 2, 10) + 0.1
  L = np.linalg.eigvalsh(np.cov(X.T, bias=True)).max()
  for factor in (2.1, 3.0, 1e6):
    with pytest.raises(ConfigError, match=r"learning_rate=.* is at or above 2/L = .*diverges"):
      lr.fit(X, y, learning_rate=factor / L, batch_size=batch_size, tol=0.0, max_iter=300)
  if batch_size is None:  # just below the limit, batch GD still converges
    fit = lr.fit(X, y, learning_rate=1.9 / L, tol=0.0, max_iter=300)
    np.testing.assert_allclose(fit.coef_, lr.fit(X, y).coef_, atol=1e-4)


def test_predict_refuses_wrong_width():
  X, y = DIABETES
  params = lr.fit(X, y)
  with pytest.raises(DataError,
                     match=r"X has 5 features but the linear regression was fitted with 10\."):
    lr.predict(params, X[:, :5])
