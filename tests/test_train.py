"""The shared loop: quality, outputs, determinism, exact resume after SIGKILL, NaN, devices, dtype."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, cli, xla_flags
from m2m_jax import configlib, registry, train
from m2m_jax.algorithms import classifier
from m2m_jax.errors import TrainingDiverged


@pytest.fixture(scope="module")
def cnn_default(tmp_path_factory):
  """The CNN default preset, trained once for the tests of this module."""
  workdir = str(tmp_path_factory.mktemp("cnn"))
  return workdir, train.train_and_evaluate(configlib.load("cnn"), workdir)


def test_cnn_default_reaches_98_percent_on_digits(cnn_default):
  workdir, summary = cnn_default
  assert summary["test"]["accuracy"] >= 0.98
  assert summary["steps"] == 1320 and summary["device_count"] == 1


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


def test_same_config_same_numbers(tmp_path):
  a = train.train_and_evaluate(_short_cnn(), str(tmp_path / "a"))
  b = train.train_and_evaluate(_short_cnn(), str(tmp_path / "b"))
  assert a["test"] == b["test"]
  c = train.train_and_evaluate(_short_cnn(seed=1), str(tmp_path / "c"))
  assert c["test"] != a["test"]


def test_eval_batch_size_does_not_change_metrics(tmp_path):
  a = train.train_and_evaluate(_short_cnn(), str(tmp_path / "a"))
  b = train.train_and_evaluate(_short_cnn(eval_batch_size=64), str(tmp_path / "b"))
  np.testing.assert_allclose(b["test"]["accuracy"], a["test"]["accuracy"], atol=1e-7)
  np.testing.assert_allclose(b["test"]["loss"], a["test"]["loss"], rtol=1e-5)


def _wait_for_checkpoint(proc, workdir, step):
  ckpts = os.path.join(workdir, "checkpoints")
  while proc.poll() is None:
    if os.path.isdir(ckpts) and any(d.isdigit() and int(d) >= step for d in os.listdir(ckpts)):
      return
    time.sleep(0.05)
  raise AssertionError(f"run ended before checkpoint {step}: {proc.stderr.read()}")


def test_killed_run_resumes_to_the_same_numbers(tmp_path):
  args = ["--config=configs/cnn.py", "--config.num_steps=240", "--config.checkpoint_every=30",
          "--config.eval_every=60", "--config.log_every=7"]
  ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
  assert cli(*args, f"--workdir={ref}").returncode == 0
  env = dict(os.environ, M2M_NO_PROGRESS="1", XLA_FLAGS=xla_flags(1))
  for kill_after in (60, 150):  # killed twice, each time just after a checkpoint landed
    proc = subprocess.Popen([sys.executable, "-m", "m2m_jax.main", *args, f"--workdir={run}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(proc, run, kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  finished = cli(*args, f"--workdir={run}")
  assert finished.returncode == 0, finished.stderr
  with open(os.path.join(ref, "summary.json")) as f, open(os.path.join(run, "summary.json")) as g:
    a, b = json.load(f), json.load(g)
  assert b["resumed_from_step"] >= 150 and a["test"] == b["test"]
  with open(os.path.join(ref, "metrics.jsonl")) as f, open(os.path.join(run, "metrics.jsonl")) as g:
    assert f.read() == g.read()


def _nan_algorithm(nan_from_step: int):
  """A one-parameter algorithm whose loss becomes NaN from step ``nan_from_step`` (0-based)."""

  def train_step(state, batch, rng):
    loss = jnp.where(state["t"] >= nan_from_step, jnp.nan, state["w"])
    return {"w": state["w"] * 0.9, "t": state["t"] + 1}, {"loss": loss}

  return types.SimpleNamespace(
      init=lambda config, rng, batch: {"w": jnp.ones(()), "t": jnp.zeros((), jnp.int32)},
      train_step=train_step,
      eval_step=lambda state, batch: {"loss": jnp.full(batch["y"].shape, state["w"])})


def test_nan_loss_stops_with_its_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  monkeypatch.setattr(registry, "get", lambda name: _nan_algorithm(nan_from_step=26))
  config = _short_cnn(checkpoint_every=10, log_every=4)
  with pytest.raises(TrainingDiverged, match=r"NaN or inf at step 27; .*checkpoint \(step 20\)"):
    train.train_and_evaluate(config, str(tmp_path))
  assert sorted(map(int, os.listdir(tmp_path / "checkpoints"))) == [10, 20]


def test_bfloat16_computes_in_bf16_and_keeps_float32_parameters(tmp_path):
  config = _short_cnn(dtype="bfloat16", num_steps=200)
  config.num_classes = 10
  batch = {"x": np.zeros((2, 16, 16, 1), np.float32), "y": np.array([0, 9], np.int32)}
  state = classifier.init(config, jax.random.key(0), batch)
  assert {p.dtype for p in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
  assert state.apply_fn({"params": state.params}, batch["x"]).dtype == jnp.bfloat16
  summary = train.train_and_evaluate(_short_cnn(dtype="bfloat16", num_steps=200), str(tmp_path))
  assert summary["dtype"] == "bfloat16" and summary["test"]["accuracy"] >= 0.9


def test_eight_devices_match_one_device(cnn_default, tmp_path):
  """Same config on 8 CPU devices: accuracy within 0.5 points of the 1-device run."""
  result = cli("--config=configs/cnn.py", f"--workdir={tmp_path}", devices=8)
  assert result.returncode == 0, result.stderr
  with open(tmp_path / "summary.json") as f:
    eight = json.load(f)
  assert eight["device_count"] == 8
  assert abs(eight["test"]["accuracy"] - cnn_default[1]["test"]["accuracy"]) <= 0.005
