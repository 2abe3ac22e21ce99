"""The tree algorithms in the shared loop (decision tree, random forest, AdaBoost, gradient
boosting): every offline preset validates and loads, the loop grows what the classic estimator
grows, and misconfigurations are named. Training every preset, resuming, 8 devices against 1:
the contract suite (test_contract.py)."""

import numpy as np
import pytest

from conftest import TREES
from m2m_jax import configlib, data, registry, train
from m2m_jax.classic import adaboost, decision_tree as dt, gradient_boosting
from m2m_jax.errors import ConfigError

PRESETS = [(name, preset) for name in TREES
           for preset, make in configlib.config_module(name).PRESETS.items()
           if not make().dataset.startswith("tfds:")]


def _small(name, preset, rounds=3, depth=4):
  """The preset with few rounds (num_steps follows n_estimators) of shallow trees: each tree
  depth compiles its own program, seconds apiece on two cores."""
  config = configlib.load(name, preset)
  config.model.max_depth = min(config.model.max_depth, depth)
  if "n_estimators" in config.model:
    config.model.n_estimators = rounds
    config.log_every, config.eval_every, config.checkpoint_every = 1, 2, 2
  return config


def _arrays(config):
  ds = data.load(config.dataset, **config.data)
  train_, test = (s[np.arange(len(s))] for s in (ds.train, ds.test))
  return train_["x"], train_["y"], test["x"], test["y"]


@pytest.mark.parametrize("name,preset", PRESETS, ids=[f"{n}:{p}" for n, p in PRESETS])
def test_offline_preset_validates_and_its_data_loads(name, preset):
  config = configlib.load(name, preset)
  registry.get(name).validate(config)
  dataset = data.load(config.dataset, **config.data)
  assert bool(dataset.num_classes) == (config.dataset != "diabetes")


def test_the_loop_grows_what_the_estimators_fit(tmp_path):
  """Deterministic estimators: the loop's test accuracy equals the classic fit's."""
  for module in (dt, adaboost, gradient_boosting):
    name = module.__name__.rsplit(".", 1)[1]
    config = _small(name, "default", rounds=5)
    summary = train.train_and_evaluate(config, str(tmp_path / name))
    x, y, xt, yt = _arrays(config)
    model = module.fit(x, y, **{k: v for k, v in config.model.to_dict().items() if v is not None})
    expected = float(np.mean(np.asarray(module.predict(model, xt)) == yt))
    assert summary["test"]["accuracy"] == pytest.approx(expected, abs=1e-9), name


@pytest.mark.parametrize("name,field,value,message", [
    ("decision_tree", "batch_size", 64, "grows each tree on the whole training set: set "
                                        "batch_size=0"),
    ("decision_tree", "num_steps", 3, "one step, so num_steps must be 1, not 3"),
    ("adaboost", "model.n_estimators", 0, "n_estimators=0 must be an integer >= 1."),
    ("random_forest", "model.max_features", "half", "unknown max_features 'half'"),
    ("adaboost", "dataset", "diabetes", "AdaBoost classifies; dataset 'diabetes' has no classes"),
    ("gradient_boosting", "model.max_depth", 0, "max_depth=0 must be an integer >= 1"),
])
def test_misconfigurations_are_named(name, field, value, message, tmp_path):
  config = configlib.load(name)
  if field.startswith("model."):
    config.model[field[6:]] = value
  else:
    config[field] = value
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
