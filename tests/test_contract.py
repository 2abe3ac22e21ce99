"""The contract every registered algorithm keeps, checked the way scikit-learn's
``check_estimator`` puts every estimator through the same checks.

Each config preset is shrunk by :func:`m2m_jax.configlib.tiny` (a few steps, a few dozen
examples, tiny widths) and trained through :func:`m2m_jax.train.train_and_evaluate`; ``tfds``
presets run on tensorflow-datasets' mock data. Every config's default preset goes through the
whole battery:

- it trains and evaluates, with finite test metrics and every output written (the figures of
  the configs in ``FIGURES_IN_NOTEBOOK`` are drawn by their notebook's training instead);
- a metric that turns NaN stops the run naming the step, keeping the last good checkpoint (the
  NaN is added to the metrics the compiled step accumulated, so that the run reuses the
  battery's compiled programs; ``test_train.py`` poisons a step inside its program once);
- determinism and exact resume: that run, stopped by the NaN at step 3 just after its
  checkpoint at step 2 and started again without it, ends with the same test metrics and the
  same ``metrics.jsonl`` as the uninterrupted run; a finished run started again evaluates its
  last checkpoint to the same numbers;
- a corrupt newest checkpoint (64 random bytes in its data) is skipped: the finished run
  falls back to checkpoint 2 and ends with the same test metrics (a one-step fit, with no
  checkpoint before it, is refused in one sentence); the other faults are tried once, in
  ``test_reliability.py``;
- a workdir holding its checkpoint refuses another config;
- 8 CPU devices, with evaluation batches of another size whose last one is padded, give the
  metrics of 1 (each algorithm's first config, all in one subprocess that runs beside the
  suite, ``EIGHT_DEVICES_RTOL``);
- data it cannot use is refused with an M2MError (one sentence), not a traceback.

Every other preset is traced: its config validates, its data loads (tfds presets on mock
data), and ``jax.eval_shape`` of its steps (nothing compiled) keeps the state's structure,
shapes and dtypes, gives scalar train metrics and per-example eval outputs. The presets whose
training or figures take another path than their default's (``OTHER_PATH``) also train and
evaluate with finite metrics; the other presets, which change only the data, sizes or
hyperparameters, train under ``-m slow``, where compiling them would cost minutes. (The
one-step estimators' offline presets train in ``test_fitted.py``, against scikit-learn.) A new
algorithm is checked by registering it and adding its config. The hard kill (SIGKILL) of the
loop is tested once, in ``test_train.py``.
"""

import functools
import json
import os
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import (ONE_STEP, ROOT, SESSION_DIR, checkpoint_data_file, fake_openai_weights,
                      scribble, xla_flags)
from m2m_jax import configlib, data, registry, report, train
from m2m_jax.data import transforms
from m2m_jax.errors import CheckpointError, ConfigError, M2MError, TrainingDiverged

MOCK_TFDS_EXAMPLES = 64  # a split, for the mock_tfds fixture of conftest
# tfds builders that import TensorFlow (not installed by the test extra).
NEEDS_TENSORFLOW = {("linear_regression", "seed")}
# Metrics on 8 devices against 1: reductions run in another order, and a few training steps
# amplify the rounding. Under the suite's XLA flags (optimisation level 0) the U-Net's tiny run
# ends 1.3e-4 apart in its loss and one pixel apart in its hard Dice (7.5e-4 of it), where with
# the default flags the two agree to 6e-6; a sharding bug (statistics of one device, a batch
# seen twice) moves them by 1e-2 or more.
EIGHT_DEVICES_RTOL = 1e-3
# The 8-device runs' evaluation batch: tiny's 32 test examples make a batch of 24 and a padded
# one (the 1-device runs evaluate in batches of 16).
EIGHT_DEVICES_EVAL_BATCH = 24
# The presets whose training or figures take another path than their default's: regression
# targets, points instead of images, an RGB head, the entropy criterion, mini-batch k-means,
# subsampled boosting rounds.
OTHER_PATH = {("latent_ode", "spirals"), ("decision_tree", "regression"),
              ("decision_tree", "breast_cancer"), ("random_forest", "regression"),
              ("gradient_boosting", "regression"), ("gradient_boosting", "stochastic"),
              ("kmeans", "minibatch"), ("colorize", "rgb")}


def _presets():
  for name in configlib.config_names():
    for preset, make in configlib.config_module(name).PRESETS.items():
      config = make()
      yield name, preset, config.dataset.startswith("tfds:")


CONFIGS = configlib.config_names()
OTHER_PRESETS = [pytest.param(name, preset, tfds, id=f"{name}:{preset}",
                              marks=[] if (name, preset) in OTHER_PATH else [pytest.mark.slow])
                 for name, preset, tfds in _presets()
                 if preset != "default" and (name not in ONE_STEP or tfds)]
# The presets that do not train in the fast suite: the defaults train through the battery,
# OTHER_PATH in test_preset_trains_and_evaluates, and a training checks all a trace does (a
# state of another structure, shape or dtype is refused when the battery's checkpoint is
# restored; the loop logs only scalar metrics and concatenates per-example outputs).
TRACED = [pytest.param(name, preset, tfds, id=f"{name}:{preset}")
          for name, preset, tfds in _presets()
          if preset != "default" and (name, preset) not in OTHER_PATH]
# One config for each algorithm: the first whose default trains it.
FIRST_CONFIG = {}
for _name in CONFIGS:
  FIRST_CONFIG.setdefault(configlib.load(_name).algorithm, _name)


def tiny(name: str, preset: str | None = None, **overrides):
  config = configlib.tiny(configlib.load(name, preset))
  config.update(overrides)
  return config


def _read(path) -> str:
  with open(path) as f:
    return f.read()


def _check_outputs(workdir, summary: dict, config, curves: bool = True) -> None:
  assert summary["steps"] == config.num_steps
  assert summary["test"] and all(np.isfinite(v) for v in summary["test"].values()), summary["test"]
  assert json.loads(_read(os.path.join(workdir, "summary.json")))["test"] == summary["test"]
  rows = [json.loads(line) for line in _read(os.path.join(workdir, "metrics.jsonl")).splitlines()]
  assert rows[-1] == {"step": config.num_steps, "split": "test", **summary["test"]}
  assert curves == ("curves.png" in os.listdir(os.path.join(workdir, "figures")))
  assert str(config.num_steps) in os.listdir(os.path.join(workdir, "checkpoints"))


def _without_algorithm_figures(monkeypatch) -> None:
  """From now on the loop draws no figures of the algorithm's own (the curves still)."""
  get = registry.get
  monkeypatch.setattr(registry, "get", lambda name: types.SimpleNamespace(**{
      k: getattr(get(name), k) for k in dir(get(name)) if not k.startswith("_") and k != "figures"}))


def _without_figures(monkeypatch) -> None:
  """From now on the loop draws no figures, the training curves included (each run drew them
  once already)."""
  monkeypatch.setattr(report, "plot_curves", lambda rows, path: None)
  _without_algorithm_figures(monkeypatch)


# The configs whose figures (samplers and ODE solves, compiled apart: 10 to 15 s) the battery
# leaves to their notebook, which trains the default preset through the loop at a small size.
FIGURES_IN_NOTEBOOK = {"diffusion": "diffusion.ipynb", "latent_ode": "latent_ode.ipynb"}


@pytest.mark.parametrize("name,notebook", FIGURES_IN_NOTEBOOK.items())
def test_the_figures_the_battery_leaves_out_are_drawn_by_a_notebook(name, notebook):
  import nbformat
  cells = nbformat.read(os.path.join(ROOT, "notebooks", notebook), as_version=4).cells
  code = "\n".join(c.source for c in cells if c.cell_type == "code")
  assert f'configlib.load("{name}")' in code and "train_and_evaluate(" in code


@pytest.mark.parametrize("name", CONFIGS)
def test_default_keeps_the_contract(name, tmp_path, monkeypatch, eight_devices_started):
  config = tiny(name)
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  if name in FIGURES_IN_NOTEBOOK:
    _without_algorithm_figures(monkeypatch)
  first = train.train_and_evaluate(config, a)
  _check_outputs(a, first, config)
  _keep_one_device_metrics(name, first["test"])
  _without_figures(monkeypatch)

  # A run whose metrics turn NaN at step 3, after checkpoint 2 (a one-step fit: at step 1,
  # nothing saved), stops naming the step and keeps that checkpoint; started again without the
  # NaN, it resumes there and ends as the uninterrupted run did.
  stepped = config.num_steps > 2
  message = (r"at step 3; stopped, keeping the last good checkpoint \(step 2\)" if stepped
             else "at step 1; stopped; no checkpoint was saved")
  with monkeypatch.context() as m:
    m.setattr(train, "programs", _poisoned_programs(train.programs, 2 if stepped else 0))
    with pytest.raises(TrainingDiverged, match=message):
      train.train_and_evaluate(config, b)
  assert os.listdir(os.path.join(b, "checkpoints")) == (["2"] if stepped else [])
  second = train.train_and_evaluate(config, b)
  assert second["resumed_from_step"] == (2 if stepped else 0)
  assert second["test"] == first["test"]
  assert _read(os.path.join(a, "metrics.jsonl")) == _read(os.path.join(b, "metrics.jsonl"))

  again = train.train_and_evaluate(config, b)  # finished: evaluated again from the checkpoint
  assert again["resumed_from_step"] == config.num_steps and again["test"] == first["test"]

  # Its newest checkpoint corrupted (64 random bytes in its largest data file), a finished run
  # falls back to the one before and ends the same; a one-step fit has none before and is
  # refused in one sentence.
  scribble(checkpoint_data_file(os.path.join(a, "checkpoints", str(config.num_steps))))
  if stepped:
    fallback = train.train_and_evaluate(config, a)
    assert fallback["resumed_from_step"] == 2 and fallback["test"] == first["test"]
  else:
    with pytest.raises(CheckpointError, match=r"^no checkpoint in .* can be restored \(1: "):
      train.train_and_evaluate(config, a)

  with pytest.raises(ConfigError, match="holds a checkpoint of a different config"):
    train.train_and_evaluate(tiny(name, seed=1), a)


def _preset(name, preset, tfds, tmp_path, request):
  if (name, preset) in NEEDS_TENSORFLOW:
    pytest.importorskip("tensorflow")
  config = tiny(name, preset)
  if config.get("pretrained"):  # a small random model in place of the download
    fake_openai_weights(request.getfixturevalue("monkeypatch"))
  if tfds:
    request.getfixturevalue("mock_tfds")
    config.data.data_dir = str(tmp_path / "tfds")
  return config


def _shapes(tree):
  return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


def _transformed(spec: str, batch: dict, config) -> dict:
  """``batch`` as the loop's step transforms it by ``spec`` (nothing to do without one)."""
  pp = transforms.parse(spec)
  if not pp:
    return batch
  return jax.jit(lambda b: pp(jax.random.key(0), b, config.get("num_classes", 0)))(batch)


@pytest.mark.parametrize("name,preset,tfds", TRACED)
def test_preset_traces(name, preset, tfds, tmp_path, request):
  config = _preset(name, preset, tfds, tmp_path, request)
  configlib.validate(config, 1)
  algorithm = registry.get(config.algorithm)
  if hasattr(algorithm, "validate"):
    algorithm.validate(config)
  dataset = data.load(config.dataset, **config.data)
  config = train.resolve(config, dataset)
  steps = train.step_config(config)
  batch = _transformed(config.get("transforms", ""),
                       dataset.train[train.first_batch(config, dataset)], config)
  try:  # the networks' initialisers trace; the trees read their data on the host
    state = jax.eval_shape(lambda rng: algorithm.init(config, rng, batch), jax.random.key(0))
  except jax.errors.TracerArrayConversionError:
    state = algorithm.init(config, jax.random.key(0), batch)
  new_state, metrics = jax.eval_shape(functools.partial(algorithm.train_step, steps), state, batch,
                                      jax.random.key(1))
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert _shapes(new_state) == _shapes(state)
  assert metrics and all(jnp.shape(v) == () for v in metrics.values()), metrics
  test_batch = _transformed(config.get("eval_transforms", ""),
                            dataset.test[np.arange(config.eval_batch_size)], config)
  outputs = jax.eval_shape(functools.partial(algorithm.eval_step, steps), state, test_batch)
  assert outputs and all(v.shape[0] == config.eval_batch_size for v in outputs.values())


@pytest.mark.parametrize("name,preset,tfds", OTHER_PRESETS)
def test_preset_trains_and_evaluates(name, preset, tfds, tmp_path, request, monkeypatch):
  figures = (name, preset) in OTHER_PATH
  if not figures:
    _without_figures(monkeypatch)
  config = _preset(name, preset, tfds, tmp_path, request)
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  _check_outputs(tmp_path / "run", summary, config, curves=figures)


def _poisoned_programs(programs, from_step: int):
  """``train.programs`` whose compiled training step is followed by NaN metrics, added to the
  step's accumulator as the step adds its own, from step ``from_step`` (0-based) on."""

  def poisoned(algorithm, config, mesh):
    compiled = programs(algorithm, config, mesh)

    def train_step(state, acc, batch, rng, step):
      state, acc = compiled.train(state, acc, batch, rng, step)
      if step >= from_step:
        acc = acc.add({k: jnp.full((), jnp.nan) for k in acc.sums}, step)
      return state, acc

    return types.SimpleNamespace(**{**vars(compiled), "train": train_step})

  return poisoned


# Data each config's algorithm cannot use: a table for the image models, masks as targets for
# the tabular estimators, real targets where classes are needed, classes where real targets
# are. (k-means clusters the features of any dataset; the trees and k-NN flatten images and
# sequences into features.)
WRONG_DATA = [(name, dataset) for name, datasets in {
    "adaboost": ["diabetes"], "cnn": ["diabetes", "iris", "rotating_digits"],
    "colorize": ["iris"], "decision_tree": ["shapes"], "denoise": ["iris"],
    "diffusion": ["iris"], "gan": ["iris"], "gradient_boosting": ["shapes"],
    "knn": ["shapes"], "latent_ode": ["iris"], "linear_regression": ["iris"],
    "logistic_regression": ["diabetes"], "mlp": ["diabetes"], "mlp_scratch": ["diabetes"],
    "pca": ["iris"], "random_forest": ["shapes"], "resnet": ["diabetes"],
    "unet": ["iris"], "vae": ["iris"], "vit": ["diabetes"], "swin": ["iris"],
    "clip": ["digits"], "faster_rcnn": ["digits"]}.items() for dataset in datasets]
# Data of another kind that an algorithm can still use: the GAN at 8x8, the VAE and PCA on
# images whose targets are masks.
OTHER_DATA = [("gan", "digits"), ("vae", "shapes"), ("pca", "shapes")]


def _on(name: str, dataset: str):
  config = tiny(name)
  config.dataset = dataset
  config.data = {"train_examples": 64, "test_examples": 32}
  return config


@pytest.mark.parametrize("name,dataset", WRONG_DATA)
def test_data_it_cannot_use_is_refused_in_one_sentence(name, dataset, tmp_path):
  with pytest.raises(M2MError) as error:
    train.train_and_evaluate(_on(name, dataset), str(tmp_path))
  message = str(error.value)
  assert message.endswith(".") and "\n" not in message, message


@pytest.mark.parametrize("name,dataset", OTHER_DATA)
def test_other_data_it_can_use_trains(name, dataset, tmp_path):
  config = _on(name, dataset)
  _check_outputs(tmp_path, train.train_and_evaluate(config, str(tmp_path)), config)


def test_every_config_but_kmeans_has_data_it_cannot_use():
  assert {name for name, _ in WRONG_DATA} == set(CONFIGS) - {"kmeans"}


# 8 CPU devices against 1: one subprocess, started once a session (across the pytest-xdist
# workers, by the first contract test to run), trains every algorithm's first config, shrunk as
# in the default battery but evaluated in batches of EIGHT_DEVICES_EVAL_BATCH, on 8 devices
# while the suite goes on; the battery keeps each 1-device result, and the last test of the
# suite compares the two.
EIGHT_DIR = os.path.join(SESSION_DIR, "eight_devices")
EIGHT_DEVICES = """
import os, sys, tempfile, traceback, types
from m2m_jax import configlib, registry, report, train
out_dir, names = sys.argv[1], sys.argv[2:]
get = registry.get
registry.get = lambda name: types.SimpleNamespace(**{
    k: getattr(get(name), k) for k in dir(get(name)) if not k.startswith("_") and k != "figures"})
report.plot_curves = lambda rows, path: None

def config(name):
  c = configlib.tiny(configlib.load(name))
  c.eval_batch_size = int(os.environ["EVAL_BATCH_SIZE"])
  return c

try:
  out = {name: train.train_and_evaluate(config(name), tempfile.mkdtemp())["test"]
         for name in names}
except Exception:
  with open(os.path.join(out_dir, "error.txt"), "w") as f:
    f.write(traceback.format_exc())
  raise
report.write_json(os.path.join(out_dir, "eight.json"), out)  # atomic: written, then renamed
"""


@pytest.fixture(scope="session")
def eight_devices_started():
  """Starts the 8-device subprocess unless another worker of this session did."""
  os.makedirs(os.path.join(EIGHT_DIR, "one"), exist_ok=True)
  try:
    os.close(os.open(os.path.join(EIGHT_DIR, "started"), os.O_CREAT | os.O_EXCL))
  except FileExistsError:
    yield
    return
  env = dict(os.environ, M2M_NO_PROGRESS="1", XLA_FLAGS=xla_flags(8),
             EVAL_BATCH_SIZE=str(EIGHT_DEVICES_EVAL_BATCH))
  with open(os.path.join(EIGHT_DIR, "stderr.txt"), "w") as stderr:
    proc = subprocess.Popen([sys.executable, "-c", EIGHT_DEVICES, EIGHT_DIR,
                             *sorted(FIRST_CONFIG.values())],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
  yield
  proc.wait()


def _keep_one_device_metrics(name: str, metrics: dict) -> None:
  if FIRST_CONFIG.get(configlib.load(name).algorithm) == name:
    report.write_json(os.path.join(EIGHT_DIR, "one", f"{name}.json"), metrics)


def _eight_device_metrics(timeout: float = 1200) -> dict:
  path, error = os.path.join(EIGHT_DIR, "eight.json"), os.path.join(EIGHT_DIR, "error.txt")
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert not os.path.exists(error), _read(error)[-3000:]
    assert time.time() < deadline, ("the 8-device subprocess did not finish; its stderr: "
                                    + _read(os.path.join(EIGHT_DIR, "stderr.txt"))[-3000:])
    time.sleep(1)
  return json.loads(_read(path))


def test_eight_devices_give_the_metrics_of_one(tmp_path, monkeypatch, eight_devices_started):
  """Every algorithm (its first config, as in the default battery) on 8 CPU devices in the
  session's subprocess, evaluated in batches of another size, against its 1-device run in the
  battery (run here if it did not): the test metrics change neither with the devices nor with
  ``eval_batch_size``."""
  eight = _eight_device_metrics()
  _without_figures(monkeypatch)  # figures are the same code on any mesh
  for name in sorted(FIRST_CONFIG.values()):
    path = os.path.join(EIGHT_DIR, "one", f"{name}.json")
    one = (json.loads(_read(path)) if os.path.exists(path) else
           train.train_and_evaluate(tiny(name), str(tmp_path / name))["test"])
    assert eight[name].keys() == one.keys(), name
    for key, value in one.items():
      np.testing.assert_allclose(eight[name][key], value, rtol=EIGHT_DEVICES_RTOL, atol=1e-5,
                                 err_msg=f"{name}: {key}")


def test_every_registered_algorithm_has_a_config():
  assert set(FIRST_CONFIG) == set(registry.ALGORITHMS)
