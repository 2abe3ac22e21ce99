"""The contract every classic estimator keeps, checked once over all of them (scikit-learn's
``check_estimator`` idea): fit returns a pytree, deterministically; prediction functions give
documented shapes and dtypes, the same under ``jax.jit`` and ``jax.vmap`` as eagerly; float64
and integer input is accepted as float32; and bad input is refused with one exact sentence,
the same sentence from every estimator for the same mistake.

Tiny data (40 x 3) leaves mostly compile time: about 20 s on two cores.
"""

import dataclasses
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m2m_jax.classic import decision_tree, kmeans, knn, pca, validation
from m2m_jax.classic import linear_regression as linreg
from m2m_jax.classic import logistic_regression as logreg
from m2m_jax.errors import ConfigError, DataError

N, D, M = 40, 3, 5  # training rows, features, query rows
_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, D)).astype(np.float32)
Q = _rng.normal(size=(3, M, D)).astype(np.float32)  # three query sets, for vmap
XQ = Q[0]
Y = {
    "regression": (X @ np.array([1.0, -2.0, 0.5]) + 0.1 * _rng.normal(size=N)).astype(np.float32),
    "binary": np.where(X[:, 0] + X[:, 1] > 0, 7, 3),  # labels 3 and 7, not indices
    "multiclass": np.digitize(X[:, 0] - X[:, 2], [-0.5, 0.5]),
}
F32, I32 = jnp.float32, jnp.int32


@dataclasses.dataclass(frozen=True)
class Case:
  """One estimator setting: module, fit keywords, target kind (None: unsupervised), what its
  messages call the fitted model, and its prediction functions of (params, X) with the
  expected output as [(shape given m, dtype)] per array returned."""

  name: str
  module: Any
  hyper: dict
  target: str | None
  fitted_what: str
  methods: dict[str, tuple[Callable, list]]

  def fit(self, X, y=None, **hyper):
    if self.target is None:
      return self.module.fit(X, **self.hyper, **hyper)
    return self.module.fit(X, Y[self.target] if y is None else y, **self.hyper, **hyper)

  def __repr__(self):
    return self.name


def _regressor(name, module, hyper, what, extra=None):
  methods = {"predict": (module.predict, [(lambda m: (m,), F32)])}
  return Case(name, module, hyper, "regression", what, dict(methods, **(extra or {})))


_KNN_NEIGHBOURS = {"kneighbors": (knn.kneighbors, [(lambda m: (m, 3), F32), (lambda m: (m, 3), I32)])}

CASES = [
    _regressor("linear_regression-lstsq", linreg, {"solver": "lstsq"}, "the linear regression"),
    _regressor("linear_regression-ridge", linreg, {"alpha": 1.0}, "the linear regression"),
    _regressor("linear_regression-lasso-cd", linreg, {"alpha": 0.1, "l1_ratio": 1.0, "solver": "cd"},
               "the linear regression"),
    _regressor("linear_regression-gd", linreg, {"solver": "gd", "max_iter": 200},
               "the linear regression"),
    Case("logistic_regression-binary", logreg, {}, "binary", "the logistic regression", {
        "predict": (logreg.predict, [(lambda m: (m,), I32)]),
        "predict_proba": (logreg.predict_proba, [(lambda m: (m, 2), F32)]),
        "decision_function": (logreg.decision_function, [(lambda m: (m,), F32)])}),
    Case("logistic_regression-multinomial", logreg, {}, "multiclass", "the logistic regression", {
        "predict": (logreg.predict, [(lambda m: (m,), I32)]),
        "predict_proba": (logreg.predict_proba, [(lambda m: (m, 3), F32)]),
        "decision_function": (logreg.decision_function, [(lambda m: (m, 3), F32)])}),
    Case("knn-classification", knn, {"n_neighbors": 3}, "binary", "the k-NN model", {
        "predict": (knn.predict, [(lambda m: (m,), I32)]),
        "predict_proba": (knn.predict_proba, [(lambda m: (m, 2), F32)]), **_KNN_NEIGHBOURS}),
    _regressor("knn-regression", knn, {"n_neighbors": 3, "task": "regression"}, "the k-NN model",
               _KNN_NEIGHBOURS),
    Case("kmeans", kmeans, {"n_clusters": 3, "n_init": 2}, None, "the k-means model", {
        "predict": (kmeans.predict, [(lambda m: (m,), I32)]),
        "transform": (kmeans.transform, [(lambda m: (m, 3), F32)]),
        "score": (kmeans.score, [(lambda m: (), F32)])}),
    Case("decision_tree-classification", decision_tree, {"max_depth": 3}, "binary",
         "the decision tree", {
             "predict": (decision_tree.predict, [(lambda m: (m,), I32)]),
             "predict_proba": (decision_tree.predict_proba, [(lambda m: (m, 2), F32)])}),
    _regressor("decision_tree-regression", decision_tree, {"max_depth": 3, "task": "regression"},
               "the decision tree"),
    Case("pca", pca, {"n_components": 2}, None, "the PCA", {
        "transform": (pca.transform, [(lambda m: (m, 2), F32)])}),
]
SUPERVISED = [case for case in CASES if case.target is not None]
METHODS = [(case, method) for case in CASES for method in case.methods]
_FITTED = {}


def fitted(case: Case):
  """One fit per case for the whole file (compiling dominates the run time)."""
  if case.name not in _FITTED:
    _FITTED[case.name] = case.fit(X)
  return _FITTED[case.name]


def exactly(message: str) -> str:
  """A pattern matching exactly this message; raised under jit, JAX may append a note, after a
  line of dashes, about the traceback frames it filtered out."""
  return f"(?s)^{re.escape(message)}(\n-+\nFor simplicity, JAX has removed .*)?$"


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_close(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# fit


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_fit_returns_a_pytree_of_arrays(case):
  params = fitted(case)
  leaves, treedef = jax.tree.flatten(params)
  assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
  assert_trees_equal(jax.tree.unflatten(treedef, leaves), params)
  for leaf in leaves:  # float32 / int32 only
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_fit_is_deterministic(case):
  assert_trees_equal(case.fit(X), fitted(case))


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_float64_and_integer_input_is_fitted_as_float32(case):
  assert_trees_equal(case.fit(X.astype(np.float64)), fitted(case))
  whole = np.round(3 * X).astype(np.int64)
  assert_trees_equal(case.fit(whole), case.fit(whole.astype(np.float32)))
  params = fitted(case)
  for name, (method, _) in case.methods.items():
    reference = method(params, XQ)
    assert_trees_equal(method(params, XQ.astype(np.float64)), reference)
    assert_trees_equal(method(params, jnp.asarray(XQ)), reference)
  rounded = np.round(XQ).astype(np.int32)
  for name, (method, _) in case.methods.items():
    assert_trees_equal(method(params, rounded), method(params, rounded.astype(np.float32)))


# ---------------------------------------------------------------------------------------------
# prediction


@pytest.mark.parametrize("case, method", METHODS, ids=lambda x: x if isinstance(x, str) else repr(x))
def test_prediction_shapes_and_dtypes(case, method):
  function, expected = case.methods[method]
  outputs = function(fitted(case), XQ)
  outputs = outputs if isinstance(outputs, tuple) else (outputs,)
  assert len(outputs) == len(expected)
  for output, (shape, dtype) in zip(outputs, expected):
    assert isinstance(output, jax.Array)
    assert output.shape == shape(M) and output.dtype == dtype, (output.shape, output.dtype)
  if method == "predict_proba":
    np.testing.assert_allclose(np.sum(outputs[0], 1), 1.0, rtol=1e-6)
  if method == "predict" and case.target in ("binary", "multiclass"):
    assert set(np.asarray(outputs[0]).tolist()) <= set(Y[case.target].tolist())


@pytest.mark.parametrize("case, method", METHODS, ids=lambda x: x if isinstance(x, str) else repr(x))
def test_prediction_under_jit_equals_eager(case, method):
  function = case.methods[method][0]
  params = fitted(case)
  assert_trees_close(jax.jit(function)(params, XQ), function(params, XQ))


@pytest.mark.parametrize("case, method", METHODS, ids=lambda x: x if isinstance(x, str) else repr(x))
def test_vmap_over_query_sets_equals_a_loop(case, method):
  function = case.methods[method][0]
  params = fitted(case)
  batched = jax.vmap(function, (None, 0))(params, jnp.asarray(Q))
  looped = jax.tree.map(lambda *xs: jnp.stack(xs), *[function(params, q) for q in Q])
  assert_trees_close(batched, looped)


@pytest.mark.parametrize("case", SUPERVISED, ids=repr)
def test_score_is_a_float32_scalar_and_refuses_misshapen_y(case):
  params, y = fitted(case), Y[case.target][:M]
  score = case.module.score(params, XQ, y)
  assert score.shape == () and score.dtype == jnp.float32
  np.testing.assert_allclose(jax.jit(case.module.score)(params, XQ, y), score, rtol=1e-6)
  with pytest.raises(DataError, match=exactly(
      f"y must have shape ({M},), one target per row of X, got ({M}, 1).")):
    case.module.score(params, XQ, y[:, None])


def test_pca_transform_takes_one_row():
  params = fitted(CASES[-1])
  np.testing.assert_allclose(pca.transform(params, XQ[0]), pca.transform(params, XQ)[0],
                             rtol=1e-6, atol=1e-6)
  rows = jax.vmap(pca.transform, (None, 0))(params, XQ)
  np.testing.assert_allclose(rows, pca.transform(params, XQ), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# bad input: the same exact sentence from every estimator

_WITH_NAN = np.where(np.arange(N * D).reshape(N, D) == 7, np.nan, X)
_WITH_INF = np.where(np.arange(N * D).reshape(N, D) == 7, -np.inf, X)
BAD_X = {
    "nan": (_WITH_NAN, "X holds NaN or inf values."),
    "inf": (_WITH_INF, "X holds NaN or inf values."),
    "1d": (X[:, 0], "X must be 2-D (n_samples, n_features), got shape (40,); reshape a single "
                    "feature with X.reshape(-1, 1)."),
    "3d": (X[:, :, None], "X must be 2-D (n_samples, n_features), got shape (40, 3, 1); flatten "
                          "each sample with X.reshape(len(X), -1)."),
    "empty": (np.zeros((0, D), np.float32), "X is empty (shape (0, 3))."),
    "strings": (np.full((N, D), "a"), "X must hold real numbers, got dtype <U1."),
    "overflow": (np.full((N, D), 1e39), "X holds values beyond float32's range (|x| > 3.4e+38)."),
}


@pytest.mark.parametrize("bad", BAD_X)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_fit_refuses_bad_X(case, bad):
  X_bad, message = BAD_X[bad]
  y = None if case.target is None else Y[case.target][:len(X_bad)]
  if bad == "1d" and y is not None:
    y = Y[case.target]
  with pytest.raises(DataError, match=exactly(message)):
    case.fit(X_bad, y)


@pytest.mark.parametrize("case", SUPERVISED, ids=repr)
def test_fit_refuses_bad_y(case):
  y = Y[case.target]
  with pytest.raises(DataError, match=exactly("X has 40 samples but y has 39.")):
    case.fit(X, y[:-1])
  with pytest.raises(DataError, match=exactly("y must be 1-D (n_samples,), got shape (40, 1).")):
    case.fit(X, y[:, None])
  y_nan = np.where(np.arange(N) == 3, np.nan, y.astype(np.float64))
  message = ("y holds NaN or inf values." if case.target == "regression"
             else "y holds NaN or inf values; class labels must be finite.")
  with pytest.raises(DataError, match=exactly(message)):
    case.fit(X, y_nan)
  with pytest.raises(DataError, match=exactly(message)):
    case.fit(X, np.where(np.arange(N) == 3, np.inf, y.astype(np.float64)))


@pytest.mark.parametrize("case, method", METHODS, ids=lambda x: x if isinstance(x, str) else repr(x))
def test_prediction_refuses_the_wrong_feature_count(case, method):
  function, params = case.methods[method][0], fitted(case)
  message = exactly(f"X has 2 features but {case.fitted_what} was fitted with 3.")
  with pytest.raises(DataError, match=message):
    function(params, XQ[:, :2])
  with pytest.raises(DataError, match=message):
    jax.jit(function)(params, XQ[:, :2])
  with pytest.raises(DataError, match=message):
    jax.vmap(function, (None, 0))(params, Q[:, :, :2])


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_prediction_refuses_bad_X(case):
  params = fitted(case)
  for method, (function, _) in case.methods.items():
    for X_bad, message in [
        (np.where(XQ > 1, np.nan, XQ), "X holds NaN or inf values."),
        (np.full((M, D), "a"), "X must hold real numbers, got dtype <U1."),
        (np.zeros((0, D), np.float32), "X is empty (shape (0, 3))."),
    ]:
      with pytest.raises(DataError, match=exactly(message)):
        function(params, X_bad)
    if case.module is pca:  # one row (d,) is a documented input of transform
      wrong_ndim = "X must be (n_samples, 3) or one sample (3,), got shape (5, 3, 1)."
    else:
      wrong_ndim = "X must be 2-D (n_samples, 3), got shape (5, 3, 1)."
      with pytest.raises(DataError, match=exactly(
          "X must be 2-D (n_samples, 3), got shape (3,); pass one sample as X.reshape(1, -1).")):
        jax.jit(function)(params, XQ[0])
    for run in (function, jax.jit(function)):
      with pytest.raises(DataError, match=exactly(wrong_ndim)):
        run(params, XQ[:, :, None])
    with pytest.raises(DataError, match=exactly("X is empty (shape (0, 3)).")):
      jax.jit(function)(params, jnp.zeros((0, D)))


# ---------------------------------------------------------------------------------------------
# messages of the shared validation


@pytest.mark.parametrize("module, y, label", [
    (logreg, ["cat"] * N, "'cat'"), (logreg, [7] * N, "7"), (knn, np.full(N, 2.5), "2.5")])
def test_a_single_class_is_named_as_given(module, y, label):
  with pytest.raises(DataError, match=exactly(
      f"y holds a single class ({label}); a classifier needs at least two.")):
    module.fit(X, y)


@pytest.mark.parametrize("y, message", [
    (np.array([0.0, 1.0]), "y must hold integer class indices 0..C-1, got dtype float64; map "
                           "other labels with encode_labels(y)."),
    (np.array([0, -1]), "y must hold class indices 0..C-1, got -1; map other labels with "
                        "encode_labels(y)."),
    (np.array([0, np.nan]), "y holds NaN or inf values; class labels must be finite."),
])
def test_check_X_y_names_the_bad_class_indices(y, message):
  with pytest.raises(DataError, match=exactly(message)):
    validation.check_X_y(X[:2], y, classification=True)


@pytest.mark.parametrize("value, shown", [
    (2.5, "2.5"), (True, "True"), ("3", "'3'"), (np.float64(2.5), "2.5"), (None, "None")])
def test_check_at_most_refuses_non_integers(value, shown):
  with pytest.raises(ConfigError, match=exactly(
      f"n_neighbors={shown} must be an integer in 1..40 (the number of training samples).")):
    knn.fit(X, Y["binary"], n_neighbors=value)


def test_check_at_most_accepts_whole_numbers_of_any_kind():
  for value in (3, np.int64(3), jnp.int32(3), 3.0, np.float32(3.0)):
    assert validation.check_at_most("n_neighbors", value, 40, "the number of samples") == 3
  with pytest.raises(DataError, match=exactly(
      "n_neighbors=41 must lie in 1..40 (the number of training samples).")):
    knn.fit(X, Y["binary"], n_neighbors=41)


@pytest.mark.parametrize("module, hyper, message", [
    (kmeans, {"n_clusters": "abc"},
     "n_clusters='abc' must be an integer in 1..40 (at most the number of samples in X)."),
    (kmeans, {"n_clusters": 2, "n_init": None}, "n_init=None must be a positive integer."),
    (knn, {"block_size": "x"}, "block_size=x must be a positive integer."),
    (logreg, {"max_iter": 2.5}, "max_iter=2.5 must be a positive integer."),
])
def test_integer_hyperparameters_of_the_wrong_type_are_config_errors(module, hyper, message):
  with pytest.raises(ConfigError, match=exactly(message)):
    module.fit(X, None if module is kmeans else Y["binary"], **hyper)
