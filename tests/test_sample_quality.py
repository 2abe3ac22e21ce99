"""The Fréchet distance and the judge that sample quality is measured with."""

import os

import jax
import ml_collections
import numpy as np
import pytest
import scipy.linalg

from m2m_jax import data, train
from m2m_jax.algorithms import sample_quality
from m2m_jax.errors import ConfigError, DataError
from m2m_jax.ops import metrics


def _random_cov(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_against_scipy_sqrtm():
  rng = np.random.default_rng(0)
  m1, m2 = rng.normal(size=6), rng.normal(size=6)
  s1, s2 = _random_cov(rng, 6), _random_cov(rng, 6)
  expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
  np.testing.assert_allclose(metrics.frechet_distance(m1, s1, m2, s2), expected, rtol=1e-9)
  assert abs(metrics.frechet_distance(m1, s1, m1, s1)) < 1e-9


def test_frechet_distance_of_one_dimensional_gaussians():
  # W2^2 of N(m1, v1) and N(m2, v2) is (m1 - m2)^2 + (sqrt v1 - sqrt v2)^2: 1 + (2 - 3)^2 = 2.
  assert metrics.frechet_distance(np.array([0.]), np.array([[4.]]), np.array([1.]),
                                  np.array([[9.]])) == pytest.approx(2.0)


def test_gaussian_fit_is_unbiased_and_refuses_one_vector():
  f = np.array([[0., 1.], [2., 1.], [4., 4.]])
  mean, cov = metrics.gaussian_fit(f)
  np.testing.assert_allclose(mean, [2, 2])
  np.testing.assert_allclose(cov, [[4, 3], [3, 3]])
  with pytest.raises(ValueError, match="at least 2"):
    metrics.gaussian_fit(f[:1])


def test_draw_takes_batch_i_from_the_key_folded_with_i():
  key, sizes = jax.random.key(7), []

  def sample(k, b):
    sizes.append(b)
    return jax.random.normal(k, (b, 3))

  x = sample_quality.draw(sample, 7, key, batch=3)
  assert x.shape == (7, 3) and sizes == [3, 3, 3]
  np.testing.assert_array_equal(x[3:6], jax.random.normal(jax.random.fold_in(key, 1), (3, 3)))
  assert sample_quality.draw(sample, 2, key, batch=3).shape == (2, 3) and sizes[-1] == 2


@pytest.fixture(scope="module")
def digits():
  config = ml_collections.ConfigDict({"dataset": "digits", "data": {"upsample": 2},
                                      "fd": sample_quality.default_config()})
  config.fd.judge_epochs = 5  # at 2 (the generative models' tests) noise gets more confident votes
  return config, data.load("digits", upsample=2)


def test_real_digits_score_the_baseline_and_noise_does_not(digits):
  config, dataset = digits
  real = dataset.test[np.arange(len(dataset.test))]["x"]
  rng = np.random.default_rng(0)
  collapsed = np.clip(real[:1] + rng.normal(0, 0.02, real.shape), 0, 1)
  out = sample_quality.evaluate(config, dataset, {"": real, "noise": rng.uniform(size=real.shape),
                                                  "collapsed": collapsed})
  assert out["judge_accuracy"] > 0.9
  # The test split judged as samples is the real-vs-real baseline itself.
  assert out["fd"] == pytest.approx(out["fd_real"]) and out["classes"] == 10
  assert out["confidence"] > 0.7 and out["noise_confidence"] < out["confidence"]
  assert out["noise_fd"] > 20 * out["fd_real"] and out["collapsed_fd"] > 20 * out["fd_real"]
  assert out["collapsed_classes"] == 1
  # The judge was trained once and kept: the cache holds it, and judging again reuses it.
  workdir = sample_quality.judge_workdir(config)
  assert os.path.exists(os.path.join(workdir, "summary.json"))
  mtime = os.path.getmtime(os.path.join(workdir, "summary.json"))
  assert sample_quality.evaluate(config, dataset, {"": real[:50]})["classes"] == 10
  assert os.path.getmtime(os.path.join(workdir, "summary.json")) == mtime


def test_a_model_of_other_data_is_judged_on_the_dataset_fd_names(digits):
  """A model of sequences (here the spirals) judged against digits: the judge, the reference
  and the real-vs-real baseline are then the digits'."""
  config, dataset = digits
  other = ml_collections.ConfigDict({"dataset": "spirals", "data": {"noise": 0.3},
                                     "fd": config.fd.to_dict()})
  other.fd.dataset = "digits"
  assert sample_quality.judge_config(other).data.to_dict() == {"upsample": 2}
  assert sample_quality.judge_workdir(other) == sample_quality.judge_workdir(config)
  real = dataset.test[np.arange(len(dataset.test))]["x"]
  out = sample_quality.evaluate(other, data.load("spirals"), {"": real})
  assert out["fd"] == pytest.approx(out["fd_real"]) and out["classes"] == 10
  with pytest.raises(DataError, match=r"shape \(N, 16, 16, 1\)"):
    sample_quality.evaluate(other, data.load("spirals"), {"": np.zeros((4, 28, 28, 1))})


def test_bad_samples_and_disabled_judging(digits):
  config, dataset = digits
  with pytest.raises(DataError, match=r"shape \(N, 16, 16, 1\)"):
    sample_quality.evaluate(config, dataset, {"": np.zeros((4, 8, 8, 1))})
  off = ml_collections.ConfigDict(config.to_dict())
  off.fd.num_samples = 0
  assert sample_quality.evaluate(off, dataset, {"": np.zeros((4, 8, 8, 1))}) == {}


def test_load_state_needs_a_checkpoint(digits, tmp_path):
  judge = sample_quality.judge_config(digits[0])
  with pytest.raises(ConfigError, match="no checkpoint"):
    train.load_state(judge, str(tmp_path))
