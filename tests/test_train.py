"""The shared loop: quality, outputs, exact resume after SIGKILL, dtype, NaN inside a compiled
step. Determinism, resume
after a stop, eval-batch invariance, NaN, 8 devices and refused workdirs are checked for every
algorithm by the contract suite (test_contract.py)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, cli, trained_as_a_user, xla_flags
from m2m_jax import configlib, train
from m2m_jax.algorithms import classifier
from m2m_jax.errors import TrainingDiverged


@pytest.fixture(scope="module")
def cnn_default(tmp_path_factory):
  """The CNN default preset, trained once for the tests of this module by README's first
  command (a minute of the suite's two cores: under -m slow, with the other preset trainings;
  the contract suite checks every default's outputs on its tiny copy)."""
  workdir = str(tmp_path_factory.mktemp("cnn"))
  return workdir, trained_as_a_user("cnn.py", workdir)


@pytest.mark.slow
def test_cnn_default_reaches_98_percent_on_digits(cnn_default):
  workdir, summary = cnn_default
  assert summary["test"]["accuracy"] >= 0.98
  assert summary["steps"] == 1320 and summary["device_count"] == 1


@pytest.mark.slow
def test_run_writes_every_output(cnn_default):
  workdir, summary = cnn_default
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["test"] == summary["test"]
  for key in ("wall_time_s", "examples_per_sec", "device_kind", "num_params"):
    assert summary[key]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["num_steps"] == 1320  # resolved from num_epochs
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert {r["split"] for r in rows} == {"train", "test"}
  assert rows[-1] == {"step": 1320, "split": "test", **summary["test"]}
  assert rows[0]["step"] == 50 and rows[0]["loss"] > rows[-2]["loss"]
  assert set(os.listdir(os.path.join(workdir, "figures"))) >= {
      "curves.png", "confusion.png", "misclassified.png"}
  assert sorted(map(int, os.listdir(os.path.join(workdir, "checkpoints"))))[-1] == 1320


def _short_cnn(**overrides):
  c = configlib.load("cnn")
  c.num_steps, c.log_every, c.eval_every, c.checkpoint_every = 60, 10, 30, 20
  c.update(overrides)
  return c


def _wait_for_checkpoint(proc, workdir, step):
  ckpts = os.path.join(workdir, "checkpoints")
  while proc.poll() is None:
    if os.path.isdir(ckpts) and any(d.isdigit() and int(d) >= step for d in os.listdir(ckpts)):
      return
    time.sleep(0.05)
  raise AssertionError(f"run ended before checkpoint {step}: {proc.stderr.read()}")


def test_killed_run_resumes_to_the_same_numbers(tmp_path):
  """A CLI run of a narrow CNN killed (SIGKILL) at a random moment after its first checkpoint,
  then finished, ends as the same run uninterrupted in this process. Nothing done is lost: each
  checkpoint commits before the loop goes on, so the kill finds every checkpoint of a step
  before the last one logged in ``metrics.jsonl``, and the restart resumes from the newest."""
  every = 20
  fields = {"num_steps": 120, "checkpoint_every": every, "eval_every": 40, "log_every": 3}
  args = ["--config=configs/cnn.py", "--config.model.features=(8,16)", "--config.model.dense=32",
          *(f"--config.{k}={v}" for k, v in fields.items())]
  ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
  config = configlib.load("cnn")
  config.update(fields)
  config.model.features, config.model.dense = (8, 16), 32
  train.train_and_evaluate(config, ref)
  env = dict(os.environ, M2M_NO_PROGRESS="1", XLA_FLAGS=xla_flags(1))
  proc = subprocess.Popen([sys.executable, "-m", "m2m_jax.main", *args, f"--workdir={run}"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for_checkpoint(proc, run, every)
  time.sleep(random.uniform(0.0, 1.0))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  with open(os.path.join(run, "metrics.jsonl")) as f:
    logged = max(json.loads(line)["step"] for line in f)
  saved = max(int(d) for d in os.listdir(os.path.join(run, "checkpoints")) if d.isdigit())
  assert saved >= (logged - 1) // every * every, (logged, saved)
  finished = cli(*args, f"--workdir={run}")
  assert finished.returncode == 0, finished.stderr
  with open(os.path.join(ref, "summary.json")) as f, open(os.path.join(run, "summary.json")) as g:
    a, b = json.load(f), json.load(g)
  assert b["resumed_from_step"] == saved and a["test"] == b["test"]
  with open(os.path.join(ref, "metrics.jsonl")) as f, open(os.path.join(run, "metrics.jsonl")) as g:
    assert f.read() == g.read()


def test_bfloat16_computes_in_bf16_and_keeps_float32_parameters(tmp_path):
  config = _short_cnn(dtype="bfloat16", num_steps=100)
  config.num_classes = 10
  batch = {"x": np.zeros((2, 16, 16, 1), np.float32), "y": np.array([0, 9], np.int32)}
  state = classifier.init(config, jax.random.key(0), batch)
  assert {p.dtype for p in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
  assert state.apply_fn({"params": state.params}, batch["x"]).dtype == jnp.bfloat16
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["dtype"] == "bfloat16" and summary["test"]["accuracy"] >= 0.9  # 0.939


def test_nan_inside_the_compiled_step_stops_the_run(tmp_path, monkeypatch):
  """The loss turns NaN inside the jitted step from step 3 on: the compiled accumulator catches
  it and the run stops, keeping checkpoint 2. (The contract suite adds the NaN after each
  algorithm's compiled step instead, to reuse its programs.)"""
  step = classifier.train_step

  def train_step(config, state, batch, rng):
    state, metrics = step(config, state, batch, rng)
    return state, {**metrics, "loss": jnp.where(state.step >= 3, jnp.nan, metrics["loss"])}

  monkeypatch.setattr(classifier, "train_step", train_step)
  config = configlib.tiny(configlib.load("cnn"), steps=6)
  with pytest.raises(TrainingDiverged, match=r"at step 3; stopped, keeping the last good "
                                             r"checkpoint \(step 2\)"):
    train.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints") == ["2"]


def test_clear_compiled_forgets_the_programs_and_changes_no_number(tmp_path):
  config = configlib.tiny(configlib.load("mlp"))
  first = train.train_and_evaluate(config, str(tmp_path / "a"))
  assert train._programs.cache_info().currsize > 0
  train.clear_compiled()
  assert train._programs.cache_info().currsize == 0
  assert train.train_and_evaluate(config, str(tmp_path / "b"))["test"] == first["test"]
