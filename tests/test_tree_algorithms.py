"""The tree algorithms in the shared loop (decision tree, random forest, AdaBoost, gradient
boosting): every offline preset runs, the loop grows what the classic estimator grows, a run
cut short resumes to the same model, and misconfigurations are named."""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import TREES, cli
from m2m_jax import configlib, data, registry, train
from m2m_jax.classic import adaboost, decision_tree as dt, gradient_boosting
from m2m_jax.errors import ConfigError

PRESETS = [(name, preset) for name in TREES
           for preset, make in configlib.config_module(name).PRESETS.items()
           if not make().dataset.startswith("tfds:")]
# Trained here: each algorithm's default, regression where it has one, a multiclass booster.
# The other presets change only data and hyperparameters; their datasets load and their
# configs validate below (each training compiles for seconds).
TRAINED = [("decision_tree", "default"), ("decision_tree", "regression"),
           ("random_forest", "default"), ("random_forest", "regression"),
           ("adaboost", "default"), ("adaboost", "digits"),
           ("gradient_boosting", "default"), ("gradient_boosting", "regression")]


# Test scores that a few depth-4 trees clear (digits: 10 classes, chance 0.1).
FLOOR = {"moons": 0.8, "iris": 0.85, "breast_cancer": 0.85, "digits": 0.45, "diabetes": 0.1}


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


@pytest.mark.parametrize("name,preset", TRAINED, ids=[f"{n}:{p}" for n, p in TRAINED])
def test_preset_trains_and_draws_its_figures(name, preset, tmp_path):
  config = _small(name, preset)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["steps"] == config.num_steps
  metric = "accuracy" if config.dataset != "diabetes" else "r2"
  assert summary["test"][metric] > FLOOR[config.dataset]
  figures = set(os.listdir(tmp_path / "figures"))
  assert {"importances.png", "curves.png"} <= figures
  assert ("staged.png" in figures) == (name != "decision_tree")


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


def test_a_run_cut_short_resumes_to_the_same_model(tmp_path):
  config = _small("gradient_boosting", "stochastic", rounds=5)
  whole = train.train_and_evaluate(config, str(tmp_path / "whole"))
  cut = tmp_path / "cut"
  train.train_and_evaluate(config, str(cut))
  for step in os.listdir(cut / "checkpoints"):  # as if killed just after the step-2 checkpoint
    if int(step) > 2:
      shutil.rmtree(cut / "checkpoints" / step)
  resumed = train.train_and_evaluate(config, str(cut))
  assert resumed["resumed_from_step"] == 2 and resumed["test"] == whole["test"]


def test_eight_devices_grow_the_same_trees_as_one(tmp_path):
  args = ["--config=configs/gradient_boosting.py", "--config.dataset=iris",
          "--config.model.n_estimators=3"]  # 120 training rows: a multiple of 8
  summaries = []
  for devices in (1, 8):
    workdir = tmp_path / str(devices)
    result = cli(*args, f"--workdir={workdir}", devices=devices)
    assert result.returncode == 0, result.stderr
    summaries.append(json.loads((workdir / "summary.json").read_text()))
  assert summaries[1]["device_count"] == 8
  assert summaries[1]["test"]["accuracy"] == summaries[0]["test"]["accuracy"]
  assert summaries[1]["test"]["log_loss"] == pytest.approx(summaries[0]["test"]["log_loss"],
                                                           rel=1e-5)


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
