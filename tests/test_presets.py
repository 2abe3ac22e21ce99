"""Every config: each offline default trains a few steps, every other offline preset traces; some
defaults reach their stated quality."""

import os

import jax
import numpy as np
import pytest

from conftest import ONE_STEP, TREES
from m2m_jax import configlib, data, registry, train

# The one-step estimators' presets each run in full in test_fitted.py, against scikit-learn;
# the trees' in test_tree_algorithms.py.
OFFLINE = [(name, preset) for name in configlib.config_names() if name not in ONE_STEP + TREES
           for preset, make in configlib.config_module(name).PRESETS.items()
           if not make().dataset.startswith("tfds:")]


def test_every_config_has_an_offline_default():
  for name in configlib.config_names():
    presets = configlib.config_module(name).PRESETS
    assert "default" in presets
    assert not presets["default"]().dataset.startswith("tfds:"), f"{name} default must be offline"


def _small(name, preset):
  config = configlib.load(name, preset)
  config.num_steps, config.log_every, config.eval_every, config.checkpoint_every = 3, 1, 2, 2
  config.warmup_steps = 0  # a warmup longer than the 3 steps is refused
  if "fd" in config:  # judging samples is tested in test_sample_quality.py and per model
    config.fd.num_samples = 0
  if "diffusion_steps" in config:  # the figures' samplers: 10 steps, not 1000
    config.diffusion_steps, config.ddim_steps = 10, 5
  return config


DEFAULTS = [(name, preset) for name, preset in OFFLINE if preset == "default"]
VARIANTS = [(name, preset) for name, preset in OFFLINE if preset != "default"]


@pytest.mark.parametrize("name,preset", DEFAULTS, ids=[f"{n}:{p}" for n, p in DEFAULTS])
def test_offline_default_trains_a_few_steps(name, preset, tmp_path):
  summary = train.train_and_evaluate(_small(name, preset), str(tmp_path))
  assert summary["steps"] == 3 and summary["test"]
  assert "curves.png" in os.listdir(tmp_path / "figures")


@pytest.mark.parametrize("name,preset", VARIANTS, ids=[f"{n}:{p}" for n, p in VARIANTS])
def test_offline_preset_traces(name, preset):
  """Every other offline preset validates, loads its data, and its init, train step and eval
  step trace to the shapes the loop expects (jax.eval_shape: no compilation, which would cost
  seconds a preset; their training runs in each algorithm's own tests)."""
  config = _small(name, preset)
  configlib.validate(config, 1)
  algorithm = registry.get(config.algorithm)
  dataset = data.load(config.dataset, **config.data)
  config = train.resolve(config, dataset)
  idx = data.batch_indices(0, num_examples=len(dataset.train), batch_size=config.batch_size,
                           seed=config.seed)
  batch = dataset.train[idx]
  state = jax.eval_shape(lambda: algorithm.init(config, jax.random.key(0), batch))
  metrics = jax.eval_shape(algorithm.train_step, state, batch, jax.random.key(1))[1]
  assert "loss" in metrics and all(m.shape == () for m in metrics.values())
  outputs = jax.eval_shape(algorithm.eval_step, state, dataset.test[np.arange(8)])
  assert outputs and all(o.shape[0] == 8 for o in outputs.values())


@pytest.mark.parametrize("name,preset,floor", [
    ("mlp", "default", 0.96), ("mlp_scratch", "default", 0.96),
    pytest.param("cnn", "mnist5k", 0.97, marks=pytest.mark.slow),  # 40 s; cnn:default is in test_train
    pytest.param("resnet", "default", 0.98, marks=pytest.mark.slow)])  # 30 s
def test_preset_reaches_its_stated_accuracy(name, preset, floor, tmp_path):
  summary = train.train_and_evaluate(configlib.load(name, preset), str(tmp_path))
  assert summary["test"]["accuracy"] >= floor
