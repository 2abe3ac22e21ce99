"""k-NN (m2m_jax.classic.knn) against scikit-learn's brute-force KNeighbors*, bad input, jit/vmap.

The references use ``algorithm='brute'``: scikit-learn's trees (its default for few features)
break distance ties by tree layout, its brute force by heap layout, neither by index; so exact
ties at the k-th neighbour may legitimately pick other points. Everything else must agree.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from conftest import fast

from m2m_jax.classic import knn
from m2m_jax.errors import ConfigError, DataError

K = 5
# float32 keeps ~7 significant digits and sums up to 64 terms: distances match scikit-learn's
# float64 ones to 1e-5 relative. Cosine distances of near-parallel rows (wine, breast cancer:
# 1 - cos down to 7e-7) move by up to 2e-5 relative when the inputs are rounded to float32 alone.
DIST_RTOL = {"cosine": 5e-5}
TIE_RTOL = 1e-5  # two float64 distances this close are a tie float32 cannot order
DATASETS = ["iris", "wine", "breast_cancer", "digits", "diabetes"]
METRICS = [("euclidean", 2), ("manhattan", 2), ("cosine", 2), ("minkowski", 3)]
CASES = [(name, metric, p) for name in DATASETS for metric, p in METRICS]
# minkowski with p = 2, 1 is the euclidean / manhattan search (the default metric is
# minkowski p=2); p = inf is chebyshev, whose integer distances on digits tie often.
CASES += [(name, "minkowski", p) for name in ("iris", "digits") for p in (2, 1)]
CASES += [("digits", "minkowski", np.inf)]
# The fast suite: every metric on the digits, regression on the diabetes data, cosine where
# near-parallel rows test its tolerance, and the minkowski special cases.
FAST = [(name, metric, p) for name, metric, p in CASES if name == "digits"] + [
    ("diabetes", "euclidean", 2), ("wine", "cosine", 2), ("iris", "minkowski", 2),
    ("iris", "minkowski", 1)]


def _split(name):
  X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
  return train_test_split(X, y, test_size=0.3, random_state=0)


def _untied(distances: np.ndarray) -> np.ndarray:
  """(m, k+1) ascending reference distances -> (m, k) mask: position j ties neither neighbour."""
  gap = ~np.isclose(distances[:, 1:], distances[:, :-1], rtol=TIE_RTOL, atol=1e-9)  # j vs j+1
  return np.concatenate([np.ones_like(gap[:, :1]), gap[:, :-1]], 1) & gap


@pytest.mark.parametrize("name,metric,p", fast(CASES, FAST))
def test_matches_scikit_learn(name, metric, p):
  X_train, X_test, y_train, y_test = _split(name)
  task = "regression" if name == "diabetes" else "classification"
  Reference = KNeighborsRegressor if task == "regression" else KNeighborsClassifier
  # Small blocks: several query blocks, training tiles and chunks of tiles, with padding.
  fit = lambda weights: knn.fit(X_train, y_train, n_neighbors=K, weights=weights, metric=metric,
                                p=p, task=task, block_size=64, train_block_size=16)
  reference = lambda weights: Reference(K, weights=weights, metric=metric, p=p,
                                        algorithm="brute").fit(X_train, y_train)
  ref_d, ref_i = reference("uniform").kneighbors(X_test, K + 1)
  d, i = map(np.asarray, knn.kneighbors(fit("uniform"), X_test))
  np.testing.assert_allclose(d, ref_d[:, :K], rtol=DIST_RTOL.get(metric, 1e-5), atol=1e-6)
  untied = _untied(ref_d)
  np.testing.assert_array_equal(i[untied], ref_i[:, :K][untied])
  clear = untied[:, -1]  # rows whose k-th and (k+1)-th neighbours are not tied
  np.testing.assert_array_equal(np.sort(i[clear], 1), np.sort(ref_i[clear, :K], 1))
  for weights in ("uniform", "distance"):
    params, ref = fit(weights), reference(weights)
    prediction, expected = np.asarray(knn.predict(params, X_test)), ref.predict(X_test)
    if task == "regression":
      np.testing.assert_allclose(prediction[clear], expected[clear], rtol=1e-5)
    else:
      np.testing.assert_array_equal(prediction[clear], expected[clear])
      np.testing.assert_allclose(knn.predict_proba(params, X_test)[clear],
                                 ref.predict_proba(X_test)[clear], atol=1e-5)
    # Rows with a tie at the k-th neighbour: both answers are right (the distances above match)
    # and the choice rarely changes the vote: one digits row (|| ||^2 = 792 twice, we take
    # training index 568, scikit-learn 1040). Chebyshev's integer distances tie far more often.
    agree = np.isclose(prediction, expected, rtol=1e-5).mean()
    assert agree >= (0.95 if p == np.inf else 0.995)


@pytest.mark.parametrize("metric,p", [("euclidean", 2), ("manhattan", 1), ("minkowski", np.inf),
                                      ("minkowski", 0.5)])
def test_exact_ties_go_to_the_earlier_training_point(metric, p):
  # Integers 0..3: distances tie massively; the blocked two-stage search must equal a full sort
  # by (distance, index) for every block layout (euclidean: through its exact integer scores).
  rng = np.random.default_rng(0)
  X, Q = rng.integers(0, 4, (3000, 6)), rng.integers(0, 4, (300, 6))
  diff = np.abs(Q[:, None] - X[None]).astype(np.float64)
  full = diff.max(2) if p == np.inf else (diff**p).sum(2)
  expected = np.lexsort((np.broadcast_to(np.arange(3000), full.shape), full), 1)[:, :7]
  # One tile; or 6 chunks of 32 tiles of 16 rows, the last 4.5 of them padding.
  for block_size, train_block_size in ((7, 8192), (64, 16)):
    params = knn.fit(X, rng.integers(0, 2, 3000), n_neighbors=7, metric=metric, p=p,
                     block_size=block_size, train_block_size=train_block_size)
    np.testing.assert_array_equal(knn.kneighbors(params, Q)[1], expected)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_euclidean_and_cosine_order_survive_float32_cancellation(offset):
  # ||a||^2 - 2ab + ||b||^2 alone loses the order of close points far from the origin; the
  # re-ranking by exact differences must give the float64 order of the same float32 points.
  rng = np.random.default_rng(1)
  X = (offset + rng.normal(size=(5000, 16))).astype(np.float32)
  Q = (offset + rng.normal(size=(200, 16))).astype(np.float32)
  X64, Q64 = X.astype(np.float64), Q.astype(np.float64)
  euclidean = ((Q64[:, None] - X64[None]) ** 2).sum(2)
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  cosine = 1 - unit(Q64) @ unit(X64).T
  for metric, full in (("euclidean", euclidean), ("cosine", cosine)):
    params = knn.fit(X, np.arange(5000) % 3, n_neighbors=10, metric=metric, block_size=64,
                     train_block_size=1024)
    d, i = knn.kneighbors(params, Q)
    expected = np.argsort(full, 1)[:, :10]
    np.testing.assert_array_equal(i, expected)
    reference = np.sqrt(np.take_along_axis(full, expected, 1)) if metric == "euclidean" else \
        np.take_along_axis(full, expected, 1)
    np.testing.assert_allclose(d, reference, rtol=1e-5, atol=1e-6)


def test_zero_distance_takes_all_the_weight_like_scikit_learn():
  # Querying the training set: each point is its own neighbour at distance 0 (iris also holds
  # duplicates, two zeros in a row); those get weight 1, the rest 0.
  X, y = datasets.load_iris(return_X_y=True)
  reference = KNeighborsClassifier(K, weights="distance", algorithm="brute").fit(X, y)
  params = knn.fit(X, y, weights="distance")
  proba = np.asarray(knn.predict_proba(params, X))
  np.testing.assert_allclose(proba, reference.predict_proba(X), atol=1e-6)
  assert np.all(np.isin(proba, [0.0, 0.5, 1.0]))
  np.testing.assert_array_equal(knn.predict(params, X), y)
  regression = knn.fit(X, y * 1.5, weights="distance", task="regression")
  expected = KNeighborsRegressor(K, weights="distance", algorithm="brute").fit(X, y * 1.5)
  expected = expected.predict(X)
  np.testing.assert_allclose(knn.predict(regression, X), expected, rtol=1e-6)


def test_labels_and_scores_like_scikit_learn():
  X_train, X_test, y_train, y_test = _split("wine")
  labels = np.array([-7, 2, 40])  # arbitrary numeric labels come back as they went in
  reference = KNeighborsClassifier(K, algorithm="brute").fit(X_train, labels[y_train])
  params = knn.fit(X_train, labels[y_train])
  np.testing.assert_array_equal(params.classes_, labels)
  np.testing.assert_array_equal(knn.predict(params, X_test), reference.predict(X_test))
  assert float(knn.score(params, X_test, labels[y_test])) == pytest.approx(
      reference.score(X_test, labels[y_test]), abs=1e-6)
  X_train, X_test, y_train, y_test = _split("diabetes")
  reference = KNeighborsRegressor(K, weights="distance", algorithm="brute").fit(X_train, y_train)
  params = knn.fit(X_train, y_train, weights="distance", task="regression")
  assert float(knn.score(params, X_test, y_test)) == pytest.approx(
      reference.score(X_test, y_test), abs=1e-5)
  d, i = knn.kneighbors(params, X_test, n_neighbors=9)
  assert d.shape == i.shape == (len(X_test), 9)
  np.testing.assert_array_equal(i, reference.kneighbors(X_test, 9)[1])


def test_jit_and_vmap():
  X, y = datasets.load_breast_cancer(return_X_y=True)
  params = knn.fit(X[:400], y[:400], weights="distance", block_size=50)
  expected = np.asarray(knn.predict_proba(params, X[400:]))
  np.testing.assert_array_equal(jax.jit(knn.predict_proba)(params, X[400:]), expected)
  row = lambda x: knn.predict_proba(params, x[None])[0]
  np.testing.assert_allclose(jax.vmap(row)(jnp.asarray(X[400:], jnp.float32)), expected, atol=1e-6)
  # A batch of params fitted on bootstrap resamples, predicted in one vmapped call.
  rng = np.random.default_rng(0)
  fits = [knn.fit(X[b], y[b], block_size=50) for b in rng.integers(0, 400, (4, 400))]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *fits)
  batched = jax.jit(jax.vmap(knn.predict, in_axes=(0, None)))(stacked, X[400:])
  np.testing.assert_array_equal(batched, np.stack([knn.predict(f, X[400:]) for f in fits]))


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_a_nan_query_under_jit_gets_nan(weights):
  """Concrete NaN is refused; under jit, where values are unknown, a row holding NaN or inf
  gets NaN probabilities and a NaN regression value, and the other rows are unchanged."""
  X, y = datasets.load_iris(return_X_y=True)
  queries = X[100:104].copy()
  queries[1, 2], queries[3, 0] = np.nan, np.inf
  for task, target in [("classification", y[:100]), ("regression", X[:100, 3])]:
    params = knn.fit(X[:100], target, task=task, weights=weights)
    function = knn.predict_proba if task == "classification" else knn.predict
    with pytest.raises(DataError, match="X holds NaN or inf values"):
      function(params, queries)
    out = np.asarray(jax.jit(function)(params, queries))
    assert np.isnan(out[[1, 3]]).all() and np.isfinite(out[[0, 2]]).all()
    np.testing.assert_array_equal(out[[0, 2]], function(params, queries[[0, 2]]))


def test_memory_stays_bounded_by_the_blocks():
  # 4096 queries x 20000 training points: a full distance matrix is 328 MB (x64 features: 21 GB).
  shapes = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in ((20000, 64), (4096, 64))]
  for kind, p in (("euclidean", None), ("cosine", None), ("minkowski", 3.0)):
    compiled = knn._kneighbors.lower(*shapes, K, kind, p, 256, 1024).compile()
    # Copies of the training set (5 MB each) plus 256 x 1024 blocks of scores.
    assert compiled.memory_analysis().temp_size_in_bytes < 16e6


def test_bad_input_fails_with_one_clear_sentence():
  X, y = datasets.load_iris(return_X_y=True)
  bad = X.copy()
  bad[3, 1] = np.nan
  with pytest.raises(DataError, match="X holds NaN or inf values"):
    knn.fit(bad, y)
  bad[3, 1] = np.inf
  with pytest.raises(DataError, match="X holds NaN or inf values"):
    knn.predict(knn.fit(X, y), bad)
  with pytest.raises(DataError, match="X has 150 samples but y has 149"):
    knn.fit(X, y[:-1])
  with pytest.raises(DataError, match="X must be 2-D"):
    knn.fit(X[:, 0], y)
  with pytest.raises(DataError, match=r"n_neighbors=151 must lie in 1\.\.150"):
    knn.fit(X, y, n_neighbors=151)
  with pytest.raises(DataError, match=r"n_neighbors=0 must lie in 1\.\.150"):
    knn.kneighbors(knn.fit(X, y), X, n_neighbors=0)
  with pytest.raises(DataError, match="a classifier needs at least two"):
    knn.fit(X, np.ones(150))
  with pytest.raises(DataError, match="y holds NaN or inf values"):
    knn.fit(X, np.where(y == 2, np.nan, y))
  with pytest.raises(DataError, match="numeric labels"):
    knn.fit(X, np.array(["setosa", "versicolor", "virginica"])[y])
  with pytest.raises(DataError, match=r"X has 3 features but the k-NN model was fitted with 4\."):
    knn.predict(knn.fit(X, y), X[:, :3])
  with pytest.raises(ConfigError, match="unknown metric 'chebychev'"):
    knn.fit(X, y, metric="chebychev")
  with pytest.raises(ConfigError, match="unknown weights 'inverse'"):
    knn.fit(X, y, weights="inverse")
  with pytest.raises(ConfigError, match="unknown task 'ranking'"):
    knn.fit(X, y, task="ranking")
  with pytest.raises(ConfigError, match="p=0 must be > 0"):
    knn.fit(X, y, p=0)
  with pytest.raises(ConfigError, match="block_size=0 must be a positive integer"):
    knn.fit(X, y, block_size=0)
  with pytest.raises(ConfigError, match="predict_proba needs task='classification'"):
    knn.predict_proba(knn.fit(X, y * 1.0, task="regression"), X)
