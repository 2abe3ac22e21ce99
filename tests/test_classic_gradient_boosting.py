"""Gradient boosting (m2m_jax.classic.gradient_boosting) against scikit-learn's
HistGradientBoosting, its gradients against autodiff, the step-wise API against fit, bad input.

scikit-learn runs on one thread: its OpenMP threads fight JAX's for the two cores of a small
machine (digits: 0.6 s to fit on one thread, up to a minute on two, and seconds to predict).
Each dataset's splits have one size so that fit compiles once per dataset.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from conftest import fast
from m2m_jax.classic import decision_tree as dt
from m2m_jax.classic import gradient_boosting as gb
from m2m_jax.errors import ConfigError, DataError

HYPER = dict(learning_rate=0.1, max_depth=3, min_samples_leaf=20, l2_regularization=0.0)
SPLITS = 3  # same-size splits averaged per dataset
REGRESSION = ("diabetes", "friedman1")

_rng = np.random.default_rng(0)
XS = _rng.normal(size=(300, 5)).astype(np.float32)  # a small problem for the unit tests
YS = {
    "multiclass": np.digitize(XS[:, 0] - XS[:, 2] + 0.3 * _rng.normal(size=300), [-0.6, 0.6]),
    "binary": np.where(XS[:, 0] * XS[:, 1] + 0.3 * _rng.normal(size=300) > 0, 7, 3),
    "regression": (np.sin(2 * XS[:, 0]) + XS[:, 1] ** 2 + 0.1 * _rng.normal(size=300)
                   ).astype(np.float32),
}
SMALL = dict(n_estimators=8, learning_rate=0.3, max_depth=3, min_samples_leaf=10)


@pytest.fixture(autouse=True)
def _one_thread():
  with threadpool_limits(1):
    yield


def _task(kind):
  return "regression" if kind == "regression" else "classification"


def _data(name):
  if name == "friedman1":
    return datasets.make_friedman1(1000, noise=1.0, random_state=0)
  return getattr(datasets, f"load_{name}")(return_X_y=True)


def _reference(task, **hyper):
  Reference = HistGradientBoostingRegressor if task == "regression" else \
      HistGradientBoostingClassifier
  return Reference(max_leaf_nodes=None, early_stopping=False, max_bins=255, **hyper)


@pytest.mark.parametrize("name", fast(["iris", "wine", "breast_cancer", "digits", *REGRESSION],
                                     keep=("wine", "breast_cancer", "diabetes")))
def test_scores_match_scikit_learn(name):
  X, y = _data(name)
  task = "regression" if name in REGRESSION else "classification"
  ours, theirs = [], []
  for seed in range(SPLITS):
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=seed)
    params = gb.fit(X_train, y_train, task=task, n_estimators=100, max_bins=255, **HYPER)
    reference = _reference(task, max_iter=100, **HYPER).fit(X_train, y_train)
    np.testing.assert_allclose(params.baseline, reference._baseline_prediction.ravel(),
                               rtol=1e-5, atol=1e-6)
    ours.append(float(gb.score(params, X_test, y_test)))
    theirs.append(reference.score(X_test, y_test))
    if task == "classification":  # the same method: nearly every prediction agrees (quantile
      # bins differ a little: np.percentile 'midpoint' here, 'averaged_inverted_cdf' there)
      assert np.mean(np.asarray(gb.predict(params, X_test)) == reference.predict(X_test)) >= 0.95
  assert np.mean(ours) == pytest.approx(np.mean(theirs), abs=0.015 if task != "regression"
                                        else 0.03)


def test_training_predictions_equal_scikit_learn_on_shared_bins():
  # Few distinct values: both libraries split at the same midpoints, so the trees are the same
  # and only float32 against float64 separates the predictions.
  rng = np.random.default_rng(1)
  X = rng.integers(0, 6, (200, 3)).astype(np.float64)
  y = X[:, 0] ** 2 - 3 * X[:, 1] + 2 * (X[:, 2] > 2) + rng.normal(size=200)
  hyper = dict(learning_rate=0.3, max_depth=2, min_samples_leaf=5, l2_regularization=1.0)
  params = gb.fit(X, y, task="regression", n_estimators=5, **hyper)
  reference = _reference("regression", max_iter=5, **hyper).fit(X, y)
  np.testing.assert_allclose(params.baseline, reference._baseline_prediction.ravel(), rtol=1e-6)
  np.testing.assert_allclose(gb.predict(params, X), reference.predict(X), rtol=1e-4)
  for ours, theirs in zip(gb.staged_score(params, X, y), reference.staged_predict(X)):
    assert float(ours) == pytest.approx(1 - np.sum((y - theirs) ** 2)
                                        / np.sum((y - y.mean()) ** 2), abs=1e-5)


def _root_split_gain(Xb, feature, bin_, g, h, l2=0.0):
  """Newton gain 0.5 (G_L^2/H_L + G_R^2/H_R - G^2/H) of sending Xb[:, feature] <= bin_ left."""
  left = np.asarray(Xb[:, feature]) <= bin_
  score = lambda m: g[m].sum() ** 2 / (h[m].sum() + l2)
  return 0.5 * (score(left) + score(~left) - score(np.ones_like(left)))


def test_binary_gradients_are_autodiff_of_the_log_loss():
  params = gb.fit(XS, YS["binary"], **SMALL)
  y = (YS["binary"] == 7).astype(np.float32)
  prior = y.mean()
  np.testing.assert_allclose(params.baseline, [np.log(prior / (1 - prior))], rtol=1e-5)
  F0 = jnp.full((len(y),), params.baseline[0])
  log_loss = lambda F: jnp.sum(jnp.logaddexp(0.0, F) - y * F)  # -sum log p(y | F)
  g_auto = np.asarray(jax.grad(log_loss)(F0))
  hessian = np.asarray(jax.hessian(log_loss)(F0))
  g, h = map(np.asarray, gb.gradient_hessian(F0[:, None], jnp.asarray(y), "classification"))
  np.testing.assert_allclose(g[:, 0], g_auto, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(h[:, 0], np.diag(hessian), rtol=1e-6)
  np.testing.assert_array_equal(hessian - np.diag(np.diag(hessian)), 0)
  # The first tree was grown on these statistics: its root holds the Newton step of all rows
  # and its root split the gain they give.
  root = jax.tree.map(lambda a: a[0, 0, 0], params.trees)
  assert float(root.count) == len(y)
  lr = SMALL["learning_rate"]
  assert float(root.value[0]) == pytest.approx(-lr * g_auto.sum() / np.diag(hessian).sum(),
                                               rel=1e-4, abs=1e-7)
  Xb = dt.apply_bins(params.bins, jnp.asarray(XS))
  expected = _root_split_gain(Xb, int(root.feature), int(root.bin), g_auto, np.diag(hessian))
  assert float(root.gain) == pytest.approx(expected, rel=1e-4)


def test_multiclass_gradients_are_autodiff_of_the_log_loss():
  params = gb.fit(XS, YS["multiclass"], **SMALL)
  y = YS["multiclass"]
  prior = np.bincount(y) / len(y)
  np.testing.assert_allclose(params.baseline, np.log(prior) - np.log(prior).mean(), rtol=1e-5)
  F0 = jnp.broadcast_to(params.baseline, (len(y), 3))
  sample_loss = lambda f, c: -jax.nn.log_softmax(f)[c]
  g_auto = np.asarray(jax.grad(lambda F: jnp.sum(jax.vmap(sample_loss)(F, y)))(F0))
  h_auto = np.asarray(jax.vmap(jax.hessian(sample_loss))(F0, y))  # (n, K, K)
  g, h = map(np.asarray, gb.gradient_hessian(F0, jnp.asarray(y), "classification"))
  np.testing.assert_allclose(g, g_auto, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(h, np.diagonal(h_auto, axis1=1, axis2=2), rtol=1e-6)
  Xb = dt.apply_bins(params.bins, jnp.asarray(XS))
  for k in range(3):  # one tree per class, each grown on its own column of (g, h)
    root = jax.tree.map(lambda a: a[0, k, 0], params.trees)
    h_k = h_auto[:, k, k]
    assert float(root.value[0]) == pytest.approx(
        -SMALL["learning_rate"] * g_auto[:, k].sum() / h_k.sum(), rel=1e-4, abs=1e-7)
    expected = _root_split_gain(Xb, int(root.feature), int(root.bin), g_auto[:, k], h_k)
    assert float(root.gain) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_gradients_are_those_of_the_loss(kind):
  task = _task(kind)
  classes, y = dt.encode_targets(YS[kind], task)
  y = jnp.asarray(y)
  raw = jnp.asarray(np.random.default_rng(2).normal(size=(300, 3 if kind == "multiclass" else 1)),
                    jnp.float32)
  g, h = gb.gradient_hessian(raw, y, task)
  np.testing.assert_allclose(jax.grad(gb.loss)(raw, y, task), g, rtol=1e-5, atol=1e-6)
  per_sample = jax.vmap(jax.hessian(lambda f, t: gb.loss(f[None], t[None], task)))(raw, y)
  np.testing.assert_allclose(np.diagonal(per_sample, axis1=1, axis2=2), h, rtol=1e-5, atol=1e-6)
  if kind == "multiclass":
    expected = -jnp.sum(jax.nn.log_softmax(raw)[jnp.arange(300), y])
  elif kind == "binary":
    expected = -jnp.sum(jnp.log(jnp.where(y == 1, jax.nn.sigmoid(raw[:, 0]),
                                          jax.nn.sigmoid(-raw[:, 0]))))
  else:
    expected = 0.5 * jnp.sum((raw[:, 0] - y) ** 2)
  assert float(gb.loss(raw, y, task)) == pytest.approx(float(expected), rel=1e-5)


def _trees_equal(a, b, rtol=1e-6):
  """The same trees; values to ``rtol``, gains (differences of large sums) to 100 rtol."""
  for name in ("feature", "bin", "threshold", "left", "count", "value", "gain"):
    tol = 100 * rtol if name == "gain" else rtol
    np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=tol, atol=tol / 10,
                               err_msg=name)


def _differ(a, b) -> bool:
  return not all(np.array_equal(x, z) for x, z in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_subsample_draws_rows_per_round_reproducibly():
  fit = lambda subsample, seed: gb.fit(XS, YS["multiclass"], subsample=subsample,
                                       key=jax.random.key(seed), **SMALL)
  params = fit(0.7, 1)
  _trees_equal(params.trees, fit(0.7, 1).trees, rtol=0)
  assert _differ(params.trees, fit(0.7, 2).trees)
  assert _differ(params.trees, fit(1.0, 1).trees)
  # Every round's trees see 210 rows, a different set each round.
  np.testing.assert_array_equal(params.trees.count[:, :, 0], 210)
  assert float(gb.score(params, XS, YS["multiclass"])) > 0.85


@pytest.mark.parametrize("kind,subsample", [("multiclass", 0.7), ("regression", 1.0)])
def test_step_api_reproduces_fit(kind, subsample):
  # The training loop's view: no per-sample state, raw scores rebuilt from the rounds so far.
  task, key = _task(kind), jax.random.key(1)
  params = gb.fit(XS, YS[kind], task=task, subsample=subsample, key=key, **SMALL)
  X, y, bins, hyper = gb.check(XS, YS[kind], task=task, subsample=subsample, **SMALL)
  if kind == "multiclass":
    hyper["classes"] = 3  # the loop's classes: 0..C-1, whether present or not
  step = gb.init(bins, y, **hyper)
  assert (step.min_samples_leaf, step.subsample, step.trees.depth) == (
      SMALL["min_samples_leaf"], subsample, SMALL["max_depth"])
  Xb = dt.apply_bins(bins, X)
  np.testing.assert_array_equal(gb.raw_scores_binned(step, Xb),
                                jnp.broadcast_to(params.baseline, (300, params.n_scores)))
  for t in range(SMALL["n_estimators"]):
    raw = gb.raw_scores_binned(step, Xb)
    step = gb.boost_round(step, Xb, y, raw, t, key, bins)
  _trees_equal(step.trees, params.trees)
  np.testing.assert_allclose(step.baseline, params.baseline)
  assert step.classes_ == params.classes_
  # Prediction bins X again: the training rows reach the leaves they were grown in.
  np.testing.assert_array_equal(gb.decision_function(params, XS),
                                gb.raw_scores_binned(params, Xb))


def test_step_api_with_rows_in_another_order_each_round():
  X, y, bins, hyper = gb.check(XS, YS["regression"], task="regression", **SMALL)
  Xb = dt.apply_bins(bins, X)
  step = gb.init(bins, y, **hyper)
  for t in range(SMALL["n_estimators"]):
    order = np.random.default_rng(t).permutation(300)
    raw = gb.raw_scores_binned(step, Xb[order])
    step = gb.boost_round(step, Xb[order], y[order], raw, t, jax.random.key(0), bins)
  params = gb.fit(XS, YS["regression"], task="regression", **SMALL)
  np.testing.assert_allclose(gb.predict(step, XS), gb.predict(params, XS), rtol=1e-4, atol=1e-4)
  with pytest.raises(ConfigError, match="init was given"):  # 30 rows: trees of 7 nodes, not 15
    gb.boost_round(step, Xb[:30], y[:30], raw[:30], 0, jax.random.key(0))
  with pytest.raises(ConfigError, match="a classifier needs at least two classes"):
    gb.init(bins, np.zeros(300, int), classes=("only",))


def test_prediction_contract():
  labels = np.array([-7, 2, 40])  # labels of any encoding come back as given
  y = labels[YS["multiclass"]]
  params = gb.fit(XS, y, **SMALL)
  np.testing.assert_array_equal(params.classes_, labels)
  again = gb.fit(XS, y, **SMALL)
  _trees_equal(params.trees, again.trees, rtol=0)  # deterministic
  prediction = gb.predict(params, XS)
  assert set(np.unique(prediction)) <= set(labels)
  np.testing.assert_array_equal(jax.jit(gb.predict)(params, XS), prediction)
  proba = gb.predict_proba(params, XS)
  assert proba.shape == (300, 3)
  np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
  np.testing.assert_array_equal(labels[np.argmax(proba, 1)], prediction)
  assert gb.decision_function(params, XS).shape == (300, 3)
  staged = gb.staged_score(params, XS, y)
  assert staged.shape == (SMALL["n_estimators"],)
  assert float(staged[-1]) == float(gb.score(params, XS, y))
  assert float(staged[-1]) > float(staged[0])
  importances = gb.feature_importances(params)
  assert float(importances.sum()) == pytest.approx(1, rel=1e-6)
  assert int(jnp.argmax(importances)) in (0, 2)  # the classes depend on x0 - x2 only


def test_binary_and_regression_contract():
  params = gb.fit(XS, YS["binary"], **SMALL)
  assert params.classes_ == (3, 7)
  words = np.where(YS["binary"] == 7, "yes", "no")  # labels of any kind, one compiled program
  named = gb.fit(XS, words, **SMALL)
  assert named.classes_ == ("no", "yes")
  np.testing.assert_array_equal(gb.predict(named, XS),
                                np.where(np.asarray(gb.predict(params, XS)) == 7, "yes", "no"))
  assert float(gb.staged_score(named, XS, words)[-1]) == float(gb.score(named, XS, words))
  raw = gb.decision_function(params, XS)
  assert raw.shape == (300, 1)
  proba = gb.predict_proba(params, XS)
  np.testing.assert_allclose(proba[:, 1], jax.nn.sigmoid(raw[:, 0]), rtol=1e-6)
  np.testing.assert_array_equal(gb.predict(params, XS), np.where(raw[:, 0] > 0, 7, 3))
  regression = gb.fit(XS, YS["regression"], task="regression", **SMALL)
  staged = gb.staged_score(regression, XS, YS["regression"])
  assert float(staged[-1]) == pytest.approx(float(gb.score(regression, XS, YS["regression"])),
                                            abs=1e-6)
  assert np.all(np.diff(np.asarray(staged)) > 0)  # training R^2 rises round after round
  with pytest.raises(ConfigError, match="predict_proba needs task='classification'"):
    gb.predict_proba(regression, XS)


_NAN = XS.copy()
_NAN[3, 1] = np.nan


@pytest.mark.parametrize("X,y,hyper,error,match", [
    (_NAN, YS["binary"], {}, DataError, "X holds NaN or inf"),
    (XS, np.full(300, 4), {}, DataError, "single class"),
    (XS, YS["binary"][:299], {}, DataError, "X has 300 samples but y has 299"),
    (XS, YS["binary"], dict(max_depth=0), ConfigError, "max_depth=0 must be an integer >= 1"),
    (XS, YS["binary"], dict(n_estimators=0), ConfigError, "n_estimators=0 must be an integer"),
    (XS, YS["binary"], dict(n_estimators=2.5), ConfigError, "n_estimators=2.5 must be"),
    (XS, YS["binary"], dict(learning_rate=0.0), ConfigError, "learning_rate=0.0 must be a "
     "positive"),
    (XS, YS["binary"], dict(learning_rate=-1), ConfigError, "learning_rate=-1 must be"),
    (XS, YS["binary"], dict(learning_rate="0.1"), ConfigError, "learning_rate='0.1' must be"),
    (XS, YS["binary"], dict(subsample=0.0), ConfigError, r"subsample=0.0 must be a fraction in "
     r"\(0, 1\]"),
    (XS, YS["binary"], dict(subsample=1.5), ConfigError, r"subsample=1.5 must be a fraction"),
    (XS, YS["binary"], dict(l2_regularization=-1.0), ConfigError, "l2_regularization=-1.0"),
    (XS, YS["binary"], dict(min_samples_leaf=301), DataError, "min_samples_leaf=301 must lie"),
    (XS, YS["binary"], dict(max_bins=1), ConfigError, "max_bins=1 must be an integer"),
    (XS, YS["binary"], dict(task="ranking"), ConfigError, "unknown task 'ranking'"),
    (XS, YS["regression"], dict(task="regression", max_depth=None), ConfigError,
     "max_depth=None"),
])
def test_bad_input_is_refused(X, y, hyper, error, match):
  with pytest.raises(error, match=match):
    gb.fit(X, y, **hyper)


def test_bad_queries_and_memory_are_refused():
  params = gb.fit(XS, YS["binary"], **SMALL)
  with pytest.raises(DataError, match="X has 4 features but the gradient boosting model"):
    gb.predict(params, XS[:, :4])
  with pytest.raises(DataError, match="X holds NaN or inf"):
    gb.predict(params, _NAN)
  with pytest.raises(DataError, match=r"y must have shape \(300,\)"):
    gb.staged_score(params, XS, YS["binary"][:10])
  # 10 classes grow 10 trees at once: their histograms count 10 times against the limit.
  X = np.random.default_rng(0).normal(size=(2000, 100))
  with pytest.raises(ConfigError, match="GiB of histograms per level"):
    gb.fit(X, np.arange(2000) % 10, max_depth=10, min_samples_leaf=1)
