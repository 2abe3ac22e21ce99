"""Logistic regression vs scikit-learn's LogisticRegression on its bundled datasets.

Both minimise the same objective, (1/n) sum_i log-loss_i + ||W||^2 / (2 C n) with the intercept
unpenalised, and both stop on max |gradient| <= tol. To compare the optima rather than two
solvers' stopping points, both run past the default tol=1e-4: scikit-learn (float64) to 1e-5,
which puts its held-out log-loss within 0.05% of its tol=1e-8 optimum on every dataset here
(1e-8 takes 20 s on digits), and ours to 1e-6, since float32 gradients (about 1e-7 relative
rounding) cannot be driven much lower; that gives log-losses within 0.1% of scikit-learn's. The issue's tolerances (accuracy within 1
point, log-loss within 1%) are asserted, plus probabilities within 0.01.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from m2m_jax.classic import logistic_regression as lr
from m2m_jax.errors import ConfigError, DataError


def split(name: str, standardise: bool = True):
  """A fixed stratified 70/30 split, features standardised on the training part."""
  X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
  Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
  if standardise:
    scaler = StandardScaler().fit(Xtr)
    Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
  return Xtr, Xte, ytr, yte


def reference(Xtr, ytr, **kw) -> LogisticRegression:
  return LogisticRegression(tol=1e-5, max_iter=10000, **kw).fit(Xtr, ytr)


def assert_matches(params, sk, Xte, yte):
  proba = np.asarray(lr.predict_proba(params, Xte))
  ours, theirs = log_loss(yte, proba), log_loss(yte, sk.predict_proba(Xte))
  assert abs(float(lr.score(params, Xte, yte)) - sk.score(Xte, yte)) <= 0.01
  assert abs(ours / theirs - 1) <= 0.01, (ours, theirs)
  np.testing.assert_allclose(proba, sk.predict_proba(Xte), atol=0.01)


@pytest.mark.parametrize("name,C", [
    ("iris", 1.0), ("wine", 0.1), ("breast_cancer", 1.0), ("digits", 1.0)])
def test_lbfgs_matches_sklearn(name, C):
  Xtr, Xte, ytr, yte = split(name)
  params = lr.fit(Xtr, ytr, C=C, tol=1e-6, max_iter=5000)
  assert_matches(params, reference(Xtr, ytr, C=C), Xte, yte)


# gradient descent is slow on ill-conditioned problems; its fixed point is the same optimum.
@pytest.mark.parametrize("name", ["iris", "breast_cancer"])
def test_gd_matches_sklearn(name):
  Xtr, Xte, ytr, yte = split(name)
  params = lr.fit(Xtr, ytr, solver="gd", tol=1e-5, max_iter=20000)
  assert int(params.n_iter_) < 20000
  assert_matches(params, reference(Xtr, ytr), Xte, yte)


def test_default_tol_stops_where_sklearn_does():
  """Same objective and stopping rule: scikit-learn's defaults give the same answer."""
  Xtr, Xte, ytr, yte = split("breast_cancer")
  sk = LogisticRegression().fit(Xtr, ytr)
  params = lr.fit(Xtr, ytr)
  assert abs(int(params.n_iter_) - sk.n_iter_[0]) <= 3
  assert_matches(params, sk, Xte, yte)


def sklearn_objective(theta, X, y, C):
  """scikit-learn's objective written out: sum_i -log p_i[y_i] + ||W||^2 / (2C)."""
  coef, intercept = theta
  z = X @ coef.T + intercept
  z = jnp.concatenate([jnp.zeros_like(z), z], 1) if coef.shape[0] == 1 else z
  log_p = jax.nn.log_softmax(z)
  return -log_p[jnp.arange(len(y)), y].sum() + jnp.sum(coef**2) / (2 * C)


# digits unscaled (pixels 0..16) is ill-conditioned: about 3000 L-BFGS steps to reach 1e-6.
@pytest.mark.parametrize("name,standardise", [
    ("breast_cancer", True), ("wine", True), ("digits", False)])
def test_gradient_vanishes_at_the_optimum(name, standardise):
  Xtr, _, ytr, _ = split(name, standardise)
  params = lr.fit(Xtr, ytr, C=0.5, tol=1e-6, max_iter=10000)
  assert int(params.n_iter_) < 10000
  X = jnp.asarray(Xtr, jnp.float32)
  grad_w, grad_b = jax.grad(sklearn_objective)((params.coef_, params.intercept_), X, ytr, 0.5)
  # the summed objective's gradient is n times the mean one's that fit drives below tol
  assert float(jnp.abs(grad_w).max()) / len(ytr) <= 2e-6
  assert float(jnp.abs(grad_b).max()) / len(ytr) <= 2e-6
  # unpenalised intercept: sum_i (p_i - y_i) = 0, so mean predicted = observed class frequency
  freq = np.bincount(ytr) / len(ytr)
  np.testing.assert_allclose(np.asarray(lr.predict_proba(params, X)).mean(0), freq, atol=1e-5)


def test_strong_penalty_leaves_the_intercept_free():
  """C -> 0 shrinks W to 0 but not b: probabilities become the class frequencies."""
  Xtr, _, ytr, _ = split("wine")
  params = lr.fit(Xtr, ytr, C=1e-6)
  freq = np.bincount(ytr) / len(ytr)
  assert float(jnp.abs(params.coef_).max()) < 1e-4
  np.testing.assert_allclose(np.asarray(lr.predict_proba(params, Xtr[:3])), [freq] * 3,
                             atol=1e-4)


def test_no_penalty_and_no_intercept_match_sklearn():
  X, y = datasets.make_classification(600, 8, n_informative=5, flip_y=0.2, random_state=0)
  Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
  free = lr.fit(Xtr, ytr, penalty=None, tol=1e-6)
  np.testing.assert_allclose(free.coef_, reference(Xtr, ytr, C=np.inf).coef_, atol=2e-3)
  assert np.array_equal(lr.fit(Xtr, ytr, C=np.inf, tol=1e-6).coef_, free.coef_)
  origin = lr.fit(Xtr, ytr, fit_intercept=False, tol=1e-6)
  assert float(origin.intercept_[0]) == 0.0
  sk = reference(Xtr, ytr, fit_intercept=False)
  np.testing.assert_allclose(origin.coef_, sk.coef_, atol=2e-3)
  assert_matches(origin, sk, Xte, yte)


def test_shapes_and_decision_function():
  Xtr, Xte, ytr, _ = split("breast_cancer")
  binary = lr.fit(Xtr, ytr, tol=1e-6)
  assert binary.coef_.shape == (1, 30) and binary.intercept_.shape == (1,)
  assert lr.decision_function(binary, Xte).shape == (len(Xte),)
  assert lr.predict_proba(binary, Xte).shape == (len(Xte), 2)
  np.testing.assert_allclose(lr.decision_function(binary, Xte),
                             reference(Xtr, ytr).decision_function(Xte), atol=0.05)
  Xtr, Xte, ytr, _ = split("iris")
  multi = lr.fit(Xtr, ytr)
  assert multi.coef_.shape == (3, 4) and lr.decision_function(multi, Xte).shape == (45, 3)
  np.testing.assert_allclose(lr.predict_proba(multi, Xte).sum(1), 1.0, atol=1e-6)


def test_huge_inputs_give_finite_probabilities():
  X, _, y, _ = split("iris")
  params = lr.fit(X, y)
  proba = np.asarray(lr.predict_proba(params, X * 1e6))   # logits of order 1e6
  assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1.0)
  # gd's 1/L step, L of order 1e8 here, barely moves the intercept in 300 steps: lower bar;
  # L-BFGS's path on this ill-conditioned problem moves with float rounding (0.943 to 0.971,
  # measured at XLA's backend optimisation levels 0 and 1).
  for solver, accuracy in [("lbfgs", 0.9), ("gd", 0.85)]:
    big = lr.fit(X * 1e4, y, solver=solver, max_iter=300)
    assert np.isfinite(np.asarray(big.coef_)).all()
    assert np.isfinite(np.asarray(lr.predict_proba(big, X * 1e4))).all()
    assert float(lr.score(big, X * 1e4, y)) >= accuracy


def test_labels_of_any_encoding():
  Xtr, Xte, ytr, yte = split("iris")
  names = np.array(["setosa", "versicolor", "virginica"])
  as_str = lr.fit(Xtr, names[ytr])
  assert as_str.classes_ == ("setosa", "versicolor", "virginica")
  assert float(lr.score(as_str, Xte, names[yte])) >= 0.9
  Xtr, Xte, ytr, yte = split("breast_cancer")
  as_sign = lr.fit(Xtr, 2 * ytr - 1)
  assert as_sign.classes_ == (-1, 1)
  assert set(np.asarray(lr.predict(as_sign, Xte)).tolist()) == {-1, 1}
  assert float(lr.score(as_sign, Xte, 2 * yte - 1)) >= 0.95


def test_jit_and_vmap_over_bootstrap_fits():
  Xtr, Xte, ytr, yte = split("breast_cancer")
  rng = np.random.default_rng(0)
  fits = [lr.fit(Xtr[i], ytr[i]) for i in rng.integers(0, len(ytr), (4, len(ytr)))]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *fits)
  Xte = jnp.asarray(Xte, jnp.float32)
  votes = jax.jit(jax.vmap(lr.predict, in_axes=(0, None)))(stacked, Xte)
  assert votes.shape == (4, len(yte))
  np.testing.assert_array_equal(votes[2], lr.predict(fits[2], Xte))
  assert float(jnp.mean(votes == yte)) >= 0.93
  np.testing.assert_allclose(jax.jit(lr.predict_proba)(fits[0], Xte),
                             lr.predict_proba(fits[0], Xte), atol=1e-6)


@pytest.mark.parametrize("X,y,message", [
    ([[0.0, np.nan], [1.0, 2.0]], [0, 1], "NaN or inf"),
    ([[0.0, np.inf], [1.0, 2.0]], [0, 1], "NaN or inf"),
    ([[0.0], [1.0], [2.0]], [0, 1], "3 samples but y has 2"),
    ([0.0, 1.0], [0, 1], "must be 2-D"),
    ([[0.0], [1.0]], ["a", "a"], "single class"),
    ([[0.0], [1.0]], [[0], [1]], "y must be 1-D"),
])
def test_bad_data(X, y, message):
  with pytest.raises(DataError, match=message):
    lr.fit(np.array(X), y)


@pytest.mark.parametrize("hyper,message", [
    ({"C": 0.0}, "C=0.0 must be > 0"), ({"solver": "newton"}, "unknown solver 'newton'"),
    ({"penalty": "none"}, "unknown penalty 'none'"), ({"max_iter": 0}, "max_iter=0"),
    ({"tol": -1.0}, "tol=-1.0"), ({"learning_rate": 0.0}, "learning_rate=0.0"),
])
def test_bad_hyperparameters(hyper, message):
  with pytest.raises(ConfigError, match=message):
    lr.fit([[0.0], [1.0]], [0, 1], **hyper)
