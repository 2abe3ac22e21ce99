"""Some presets reach the quality their config states, trained as a user trains them. Every
preset trains (tiny) in the contract suite (test_contract.py)."""

import pytest

from conftest import trained_as_a_user
from m2m_jax import configlib


def test_every_config_has_an_offline_default():
  for name in configlib.config_names():
    presets = configlib.config_module(name).PRESETS
    assert "default" in presets
    assert not presets["default"]().dataset.startswith("tfds:"), f"{name} default must be offline"


@pytest.mark.parametrize("name,preset,floor", [
    # 15 s; test_mlp_scratch's short training reaches 0.95
    pytest.param("mlp_scratch", "default", 0.96, marks=pytest.mark.slow),
    pytest.param("mlp", "default", 0.96, marks=pytest.mark.slow),  # 25 s; the CNN's loop and loss
    pytest.param("cnn", "mnist5k", 0.97, marks=pytest.mark.slow),  # 40 s; cnn:default is in test_train
    pytest.param("resnet", "default", 0.98, marks=pytest.mark.slow)])  # 30 s
def test_preset_reaches_its_stated_accuracy(name, preset, floor, tmp_path):
  summary = trained_as_a_user(f"{name}.py:{preset}", tmp_path)
  assert summary["test"]["accuracy"] >= floor
