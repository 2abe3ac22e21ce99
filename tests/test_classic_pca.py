"""PCA against scikit-learn's on its bundled datasets; whitening, round trips, solvers, bad input.

Tolerances. We fit in float32, scikit-learn in float64. A float32 SVD is backward stable: it is
exact for Xc + E with ||E|| ~ eps * s_max (eps = 1.2e-7), so a singular value s_i carries a
relative error up to ~eps * s_max / s_i. The issue's relative 1e-5 on explained_variance_
(= s_i^2 / (n - 1)) therefore holds where s_max / s_i <~ 40, i.e. variances above 1e-3 of the
largest; below that we check the absolute error against the largest variance (1e-6 of it).
The raw wine and breast cancer data span 11-12 decades of variance (their features' units
differ by 1e5), so their trailing components are not resolvable in float32 and are left out of
the component comparison (variance below 1e-6 of the largest); so are digits' three exactly-zero
variances, whose components are an arbitrary basis of the null space.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets
from sklearn.decomposition import PCA

from m2m_jax.classic import pca
from m2m_jax.errors import ConfigError, DataError

DATASETS = ("iris", "wine", "digits", "breast_cancer")


def _load(name: str) -> np.ndarray:
  return getattr(datasets, f"load_{name}")().data


@pytest.fixture(scope="module", params=DATASETS)
def fitted(request):
  X = _load(request.param)
  return X, pca.fit(X), PCA(svd_solver="full").fit(X)


def test_explained_variance_matches_scikit_learn(fitted):
  _, ours, ref = fitted
  ev, ev_ref = np.asarray(ours.explained_variance_, np.float64), ref.explained_variance_
  leading = ev_ref >= 1e-3 * ev_ref[0]
  np.testing.assert_allclose(ev[leading], ev_ref[leading], rtol=1e-5)
  np.testing.assert_allclose(ev, ev_ref, rtol=0, atol=1e-6 * ev_ref[0])
  np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_,
                             rtol=0, atol=1e-6)
  np.testing.assert_allclose(ours.singular_values_, ref.singular_values_,
                             rtol=0, atol=1e-6 * ref.singular_values_[0])
  np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=1e-6)
  assert float(jnp.sum(ours.explained_variance_ratio_)) == pytest.approx(1.0, abs=1e-6)


def test_components_equal_scikit_learn_signs_included(fitted):
  _, ours, ref = fitted
  resolvable = ref.explained_variance_ >= 1e-6 * ref.explained_variance_[0]
  assert resolvable.sum() >= min(4, len(resolvable))
  # Not "up to sign": the same svd_flip convention gives the very same vectors.
  np.testing.assert_allclose(np.asarray(ours.components_)[resolvable],
                             ref.components_[resolvable], atol=1e-4)
  c = np.asarray(ours.components_)
  largest = c[np.arange(len(c)), np.argmax(np.abs(c), 1)]
  assert np.all(largest > 0)
  np.testing.assert_allclose(c @ c.T, np.eye(len(c)), atol=1e-5)


@pytest.mark.parametrize("name", DATASETS)
def test_transform_centres_with_the_training_mean(name):
  X = _load(name)
  train, test = X[::2], X[1::2]
  ours, ref = pca.fit(train, n_components=3), PCA(3, svd_solver="full").fit(train)
  z, z_ref = np.asarray(pca.transform(ours, test)), ref.transform(test)
  np.testing.assert_allclose(z, z_ref, rtol=0, atol=1e-5 * np.abs(z_ref).max())
  # The seed forgot the mean: the training mean must map to the origin.
  np.testing.assert_allclose(pca.transform(ours, ours.mean_), 0, atol=1e-5 * np.abs(z_ref).max())
  _, z_train = pca.fit_transform(train, n_components=3)
  np.testing.assert_allclose(z_train, ref.transform(train), atol=1e-5 * np.abs(z_ref).max())


def test_noise_variance_of_a_truncated_fit():
  X = _load("iris")
  ours, ref = pca.fit(X, n_components=2), PCA(2, svd_solver="full").fit(X)
  assert ours.components_.shape == (2, 4)
  assert float(ours.noise_variance_) == pytest.approx(ref.noise_variance_, rel=1e-5)
  assert float(pca.fit(X).noise_variance_) == 0.0


@pytest.mark.parametrize("name", ["iris", "digits"])
def test_whitening_matches_scikit_learn_and_gives_unit_variance(name):
  X = _load(name)
  ours, ref = pca.fit(X, n_components=4, whiten=True), PCA(4, whiten=True).fit(X)
  z = np.asarray(pca.transform(ours, X), np.float64)
  np.testing.assert_allclose(z, ref.transform(X), atol=2e-5 * np.abs(z).max())
  np.testing.assert_allclose(z.var(0, ddof=1), 1.0, rtol=1e-4)
  np.testing.assert_allclose(np.corrcoef(z.T), np.eye(4), atol=1e-4)


@pytest.mark.parametrize("name,whiten", [(name, False) for name in DATASETS]
                         + [("iris", True), ("digits", True)])
def test_round_trip_at_full_rank(name, whiten):
  X = _load(name)
  if name == "digits":  # drop the constant pixels: their zero variances cannot be un-whitened
    X = X[:, X.std(0) > 0]
  params = pca.fit(X, whiten=whiten)
  back = np.asarray(pca.inverse_transform(params, pca.transform(params, X)))
  # Exact up to float32 rounding: within ~16 ulps of the largest entry (2e-6 of max |X|: 1.6e-5
  # on iris, 3.2e-5 on digits, under the 1e-4; 8.5e-3 on breast cancer's areas ~4254).
  np.testing.assert_allclose(back, X, rtol=0, atol=2e-6 * np.abs(X).max())


def test_fraction_of_variance_picks_scikit_learn_count():
  X = _load("digits")
  for fraction in (0.5, 0.9, 0.95):
    assert pca.fit(X, n_components=fraction).components_.shape[0] == \
        PCA(fraction, svd_solver="full").fit(X).n_components_


def _low_rank_wide(rank: int = 8, n: int = 100, d: int = 1000) -> np.ndarray:
  rng = np.random.default_rng(0)
  signal = (rng.normal(size=(n, rank)) * np.geomspace(10, 1, rank)) @ rng.normal(size=(rank, d))
  return 10 * signal / np.sqrt(d) + 1e-3 * rng.normal(size=(n, d)) + 5.0


def test_randomized_solver_equals_full_on_low_rank_wide_data():
  X = _low_rank_wide()
  full = pca.fit(X, n_components=8)
  fast = pca.fit(X, n_components=8, svd_solver="randomized", key=jax.random.key(3))
  ref = PCA(8, svd_solver="randomized", random_state=0).fit(X)
  np.testing.assert_allclose(fast.components_, full.components_, atol=1e-5)
  np.testing.assert_allclose(fast.components_, ref.components_, atol=1e-5)
  np.testing.assert_allclose(fast.explained_variance_, full.explained_variance_, rtol=1e-5)
  np.testing.assert_allclose(fast.explained_variance_, ref.explained_variance_, rtol=1e-5)
  np.testing.assert_allclose(fast.explained_variance_ratio_, ref.explained_variance_ratio_,
                             rtol=1e-5)
  assert float(fast.noise_variance_) == pytest.approx(ref.noise_variance_, rel=1e-3)
  assert float(full.noise_variance_) == pytest.approx(ref.noise_variance_, rel=1e-3)


def test_covariance_eigh_solver_matches_on_the_leading_components():
  X = _load("digits")
  ours, ref = pca.fit(X, n_components=10, svd_solver="covariance_eigh"), PCA(10).fit(X)
  np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-5)
  np.testing.assert_allclose(ours.components_, ref.components_, atol=1e-4)
  # More rows than one 8192-row block of the Gram sum, and a large offset from zero.
  X = np.random.default_rng(0).normal(size=(8192 * 2 + 5, 5)) * [1, 2, 3, 4, 5] + 100
  ours, ref = pca.fit(X, svd_solver="covariance_eigh"), PCA().fit(X)
  np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-5)
  np.testing.assert_allclose(ours.components_, ref.components_, atol=1e-5)


def test_fit_is_deterministic():
  X = _load("wine")
  a, b = pca.fit(X), pca.fit(X)
  np.testing.assert_array_equal(a.components_, b.components_)
  r1, r2 = (pca.fit(X, n_components=3, svd_solver="randomized") for _ in range(2))
  np.testing.assert_array_equal(r1.components_, r2.components_)


def test_transform_jits_and_vmaps():
  X = _load("iris")
  params = pca.fit(X, n_components=2, whiten=True)
  Xj = jnp.asarray(X, jnp.float32)
  z = pca.transform(params, Xj)
  np.testing.assert_allclose(jax.jit(pca.transform)(params, Xj), z, atol=1e-6)
  np.testing.assert_allclose(jax.vmap(pca.transform, (None, 0))(params, Xj), z, atol=1e-6)
  np.testing.assert_allclose(jax.jit(pca.inverse_transform)(params, z),
                             pca.inverse_transform(params, z), atol=1e-6)
  # A batch of PCAs fitted on bootstrap resamples, applied at once.
  rng = np.random.default_rng(0)
  fits = [pca.fit(X[rng.integers(0, len(X), len(X))], n_components=2) for _ in range(3)]
  batch = jax.tree.map(lambda *leaves: jnp.stack(leaves), *fits)
  zs = jax.jit(jax.vmap(pca.transform, (0, None)))(batch, Xj)
  assert zs.shape == (3, 150, 2)
  np.testing.assert_allclose(zs[1], pca.transform(fits[1], Xj), atol=1e-5)


def test_bad_input_raises_one_clear_error():
  X = _load("iris")
  with pytest.raises(DataError, match=r"n_components=5 must lie in 1\.\.4 \(at most min\(n_sam"):
    pca.fit(X, n_components=5)
  with pytest.raises(DataError, match=r"n_components=4 must lie in 1\.\.3"):
    pca.fit(X[:3], n_components=4, svd_solver="randomized")  # wide: min(n, d) = n = 3
  with pytest.raises(DataError, match=r"n_components=0 must lie in 1\.\.4"):
    pca.fit(X, n_components=0)
  with pytest.raises(DataError, match=r"n_components=0\.9 must be an int in 1\.\.4, or a float"):
    pca.fit(X, n_components=0.9, svd_solver="randomized")
  with pytest.raises(DataError, match="holds NaN or inf"):
    pca.fit(np.where(X > 7.5, np.nan, X))
  with pytest.raises(DataError, match=r"X must be 2-D"):
    pca.fit(X[:, 0])
  with pytest.raises(DataError, match="at least 2 samples"):
    pca.fit(X[:1])
  with pytest.raises(ConfigError, match="unknown svd_solver 'arpack'; choose one of"):
    pca.fit(X, svd_solver="arpack")
  with pytest.raises(DataError, match="n_oversamples=-1"):
    pca.fit(X, n_components=2, svd_solver="randomized", n_oversamples=-1)
  params = pca.fit(X, n_components=2)
  with pytest.raises(DataError, match=r"X has 3 features but the PCA was fitted with 4\."):
    pca.transform(params, X[:, :3])
  with pytest.raises(DataError, match="Z has 4 columns but the PCA was fitted with 2 components"):
    pca.inverse_transform(params, X)
