"""Every config: each offline preset trains a few steps; the defaults reach their stated quality."""

import pytest

from conftest import ONE_STEP, TREES
from m2m_jax import configlib, train

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


@pytest.mark.parametrize("name,preset", OFFLINE, ids=[f"{n}:{p}" for n, p in OFFLINE])
def test_offline_preset_trains_a_few_steps(name, preset, tmp_path):
  config = configlib.load(name, preset)
  config.num_steps, config.log_every, config.eval_every, config.checkpoint_every = 3, 1, 2, 2
  config.warmup_steps = 0  # a warmup longer than the 3 steps is refused
  if "fd" in config:  # judging samples is tested in test_sample_quality.py and per model
    config.fd.num_samples = 0
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["steps"] == 3 and summary["test"]


@pytest.mark.parametrize("name,preset,floor", [
    ("mlp", "default", 0.96), ("mlp_scratch", "default", 0.96),
    pytest.param("cnn", "mnist5k", 0.97, marks=pytest.mark.slow),  # 40 s; cnn:default is in test_train
    pytest.param("resnet", "default", 0.98, marks=pytest.mark.slow)])  # 30 s
def test_preset_reaches_its_stated_accuracy(name, preset, floor, tmp_path):
  summary = train.train_and_evaluate(configlib.load(name, preset), str(tmp_path))
  assert summary["test"]["accuracy"] >= floor
