"""The ``tfds:<name>`` path on tensorflow-datasets' mock data; nothing here touches the network."""

import importlib.util
import json
import os
import time

import numpy as np
import pytest

import m2m_jax.data
from m2m_jax import train
from m2m_jax.errors import DataError

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
MOCK_TFDS_EXAMPLES = 128  # per split: one batch of the `mnist` preset, one padded eval batch


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_load(mock_tfds, tmp_path, name: str, shape: tuple[int, ...]):
  ds = m2m_jax.data.load(f"tfds:{name}", data_dir=str(tmp_path))
  assert (ds.name, ds.num_classes) == (f"tfds:{name}", 10)
  assert len(ds.train) == len(ds.test) == MOCK_TFDS_EXAMPLES
  batch = ds.test[np.arange(5, 13)]
  assert batch["x"].dtype == np.float32 and batch["x"].shape == (8, *shape)
  assert 0.0 <= batch["x"].min() and batch["x"].max() <= 1.0 and batch["x"].max() > 0.5
  assert batch["y"].dtype == np.int32 and batch["y"].shape == (8,)
  assert np.all((0 <= batch["y"]) & (batch["y"] < 10))


@pytest.mark.parametrize("preset", ["mnist", "seed"])
def test_train_and_evaluate(mock_tfds, tmp_path, preset: str):
  spec = importlib.util.spec_from_file_location("cnn_config", os.path.join(CONFIGS, "cnn.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(preset)
  config.num_steps = 3
  config.data.data_dir = str(tmp_path / "tfds")
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  with open(tmp_path / "run" / "summary.json") as f:
    assert json.load(f) == summary
  assert summary["dataset"] == "tfds:mnist" and summary["steps"] == 3
  assert all(np.isfinite(v) for v in summary["test"].values())


def test_unknown_name():
  with pytest.raises(DataError, match="no dataset 'no_such_dataset'"):
    m2m_jax.data.load("tfds:no_such_dataset")


def test_not_prepared_fails_fast_without_download(tmp_path):
  start = time.monotonic()
  with pytest.raises(DataError, match="'mnist' is not prepared"):
    m2m_jax.data.load("tfds:mnist", data_dir=str(tmp_path))
  assert time.monotonic() - start < 10
  assert not any(tmp_path.iterdir())  # nothing was downloaded or written


TFDS_MNIST_SEEDS = [("kmeans", "seed"), ("knn", "seed"), ("logistic_regression", "seed"),
                    ("pca", "seed")]


@pytest.mark.parametrize("name, preset", TFDS_MNIST_SEEDS, ids=[n for n, _ in TFDS_MNIST_SEEDS])
def test_classic_seed_presets_run_on_mock_mnist(mock_tfds, tmp_path, name: str, preset: str):
  from m2m_jax import configlib
  config = configlib.load(name, preset)
  assert config.dataset == "tfds:mnist"
  config.data.data_dir = str(tmp_path / "tfds")
  if config.num_steps > 1:
    config.num_steps, config.eval_every, config.checkpoint_every = 2, 1, 1
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert all(np.isfinite(v) for v in summary["test"].values())


TREE_SEEDS = ["decision_tree", "random_forest", "adaboost", "gradient_boosting"]


@pytest.mark.parametrize("name", TREE_SEEDS)
def test_tree_seed_presets_run_on_mock_mnist(mock_tfds, tmp_path, name: str):
  """The tree seeds' loading path, with two rounds of depth-2 trees (the presets' own depths
  compile for seconds a level)."""
  from m2m_jax import configlib
  config = configlib.load(name, "seed")
  assert config.dataset == "tfds:mnist" and config.model.max_bins == 32
  config.data.data_dir = str(tmp_path / "tfds")
  config.model.max_depth = 2
  if "n_estimators" in config.model:
    config.model.n_estimators, config.eval_every, config.checkpoint_every = 2, 1, 1
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["steps"] == config.num_steps
  assert all(np.isfinite(v) for v in summary["test"].values())


class _FakeSource(list):
  def __getitems__(self, keys):
    return [self[k] for k in keys]


def test_split_reads_tabular_features_and_real_targets():
  from m2m_jax.data.tfds_source import TfdsSplit
  records = [{"features": {"b": 2.0 * i, "a": float(i)}, "quality": i + 3} for i in range(4)]
  split = TfdsSplit(_FakeSource(records), x_key="features", y_key="quality")
  batch = split[np.array([3, 1])]
  np.testing.assert_array_equal(batch["x"], [[3.0, 6.0], [1.0, 2.0]])  # sorted keys: a, b
  assert batch["x"].dtype == np.float32 and batch["y"].dtype == np.int32
  real = TfdsSplit(_FakeSource([{"image": np.full((2, 2), 255, np.uint8), "label": 0.5}]))[[0]]
  assert real["x"].max() == 1.0 and real["y"].dtype == np.float32


def test_unknown_feature_is_refused(mock_tfds, tmp_path):
  with pytest.raises(DataError, match="'mnist' has no feature 'features'; its features are: image, label"):
    m2m_jax.data.load("tfds:mnist", data_dir=str(tmp_path), x_key="features")


def test_linear_regression_seed_reads_wine_quality(mock_tfds, tmp_path):
  pytest.importorskip("tensorflow")  # wine_quality's builder imports TensorFlow
  from m2m_jax import configlib
  config = configlib.load("linear_regression", "seed")
  config.data.data_dir = str(tmp_path / "tfds")
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(summary["test"]["rmse"])


GENERATIVE_SEEDS = {"vae": "tfds:cifar10", "gan": "tfds:cifar10", "diffusion": "tfds:mnist",
                    "latent_ode": "tfds:mnist"}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """One data_dir for the module, so that the tests judging samples of one dataset share a judge."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.mark.parametrize("name", GENERATIVE_SEEDS)
def test_generative_seed_presets_run_on_mock_data(mock_tfds, tfds_dir, tmp_path, name: str):
  """The generative seeds for two steps of 8 examples on mock data, their samples judged by a
  judge trained on the same mock data. Diffusion's 9.9M-parameter U-Net is counted, then
  trained at base 8 with a 10-step chain."""
  from m2m_jax import configlib
  config = configlib.load(name, "seed")
  assert config.dataset == GENERATIVE_SEEDS[name]
  config.data.data_dir = tfds_dir
  config.num_steps, config.eval_every, config.checkpoint_every = 2, 2, 2
  config.batch_size = 8
  config.fd.num_samples, config.fd.judge_epochs = 16, 1.0
  if name == "diffusion":
    import jax
    from m2m_jax.algorithms import nets
    variables = jax.eval_shape(lambda: nets.build_model(config).init(
        jax.random.key(0), jax.numpy.zeros((1, 28, 28, 1)), jax.numpy.zeros(1, "int32")))
    assert sum(p.size for p in jax.tree.leaves(variables)) == 9_860_801
    config.model.base, config.model.groups = 8, 4
    config.diffusion_steps, config.ddim_steps = 10, 5
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  test = summary["test"]
  assert all(np.isfinite(v) for v in test.values())
  fds = [k for k in test if k.endswith("fd")]
  assert fds and all(test[k] > test["fd_real"] for k in fds), test
