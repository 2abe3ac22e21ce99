"""Runs that survive mistakes and faults. README's reliability table lists these cases and what
happens in each.

Checkpoints (a fault done to a finished tiny run, then the same run started again): the newest
one is verified on restore (its manifest against the state, a CRC-32
of every packed array against the bytes read); one that is unreadable, incomplete or corrupt is
skipped with a warning naming it, and the previous one is restored, so the restarted run ends
exactly as the uninterrupted one did. When none restores, or ``config.json`` cannot be read, the
run is refused in one sentence.

The command line: every mistake in the flags (an unknown field, with the closest one; a value
of the wrong type; a missing flag; a config file that is missing or has a syntax error) is
explained in one sentence, and values out of range are refused before the first step.
"""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, checkpoint_data_file, scribble, xla_flags
from m2m_jax import checkpoint, configlib, train
from m2m_jax.classic import (adaboost, bagging, decision_tree, gradient_boosting, knn,
                             logistic_regression, random_forest)
from m2m_jax.errors import CheckpointError, ConfigError, DataError, TrainingDiverged


KMEANS = f"--config={os.path.join(ROOT, 'configs', 'kmeans.py')}"


def _config():
  config = configlib.tiny(configlib.load("mlp"))
  config.checkpoint_every, config.keep_checkpoints = 1, 3  # checkpoints 2, 3 and 4 are kept
  return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished tiny run (checkpoints 2, 3, 4) and its summary."""
  workdir = str(tmp_path_factory.mktemp("finished"))
  return workdir, train.train_and_evaluate(_config(), workdir)


def _truncate(path: str, fraction: float) -> None:
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(int(size * fraction))


def _remove(*parts: str):
  def fault(step_dir: str) -> None:
    for path in glob.glob(os.path.join(step_dir, *parts)):
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  return fault


def _empty(step_dir: str) -> None:
  shutil.rmtree(step_dir)
  os.makedirs(step_dir)


# Each fault done to the newest checkpoint, and what the warning gives as the reason.
CHECKPOINT_FAULTS = {
    "_METADATA removed": (_remove("arrays", "_METADATA"), "_METADATA) does not exist"),
    "manifest.ocdbt removed": (_remove("arrays", "manifest.ocdbt"), "NOT_FOUND"),
    "a data file truncated to 0 bytes": (lambda d: _truncate(checkpoint_data_file(d), 0.0), "OUT_OF_RANGE"),
    "a data file truncated to half": (lambda d: _truncate(checkpoint_data_file(d), 0.5), "OUT_OF_RANGE"),
    "64 random bytes written into a data file": (lambda d: scribble(checkpoint_data_file(d)),
                                                 "the float32 array fails its checksum"),
    "the manifest removed": (_remove("manifest"), 'Item "manifest" was not found'),
    "the checkpoint directory emptied": (_empty, 'Item "arrays" was not found'),
}


@pytest.mark.parametrize("fault", CHECKPOINT_FAULTS)
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(fault, finished, tmp_path,
                                                                     caplog):
  source, summary = finished
  workdir = str(tmp_path / "run")
  shutil.copytree(source, workdir)
  damage, reason = CHECKPOINT_FAULTS[fault]
  damage(os.path.join(workdir, "checkpoints", "4"))
  again = train.train_and_evaluate(_config(), workdir)
  assert again["resumed_from_step"] == 3
  assert again["test"] == summary["test"]
  warnings = [r.getMessage() for r in caplog.records if "cannot be restored" in r.getMessage()]
  assert len(warnings) == 1 and warnings[0].startswith("checkpoint 4 in "), warnings
  assert reason in warnings[0], warnings
  assert warnings[0].endswith("deleted it and restored checkpoint 3 instead."), warnings
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "3", "4"]


def test_no_checkpoint_that_restores_is_refused_in_one_sentence(finished, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished[0], workdir)
  for step in (2, 3, 4):
    scribble(checkpoint_data_file(os.path.join(workdir, "checkpoints", str(step))))
  with pytest.raises(CheckpointError, match=r"^no checkpoint in .* can be restored \(4: ") as e:
    train.train_and_evaluate(_config(), workdir)
  assert "\n" not in str(e.value) and str(e.value).endswith("to train from the start.")


@pytest.mark.parametrize("content", ["", "{", "[1, 2]\n"])
def test_an_unreadable_config_json_is_refused_in_one_sentence(content, finished, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished[0], workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(content)
  with pytest.raises(CheckpointError, match="config.json cannot be read") as e:
    train.train_and_evaluate(_config(), workdir)
  assert "\n" not in str(e.value)


def test_pack_and_unpack_keep_every_leaf():
  tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.int32(7), np.ones(4)],
          "c": np.zeros((0, 2), np.float32)}
  arrays, manifest = checkpoint.pack(tree)
  assert sorted(arrays) == ["float32", "float64", "int32"] and arrays["float32"].size == 6
  json.dumps(manifest)  # JSON as it is written
  back = checkpoint.unpack(arrays, manifest, tree)
  np.testing.assert_array_equal(back["a"], tree["a"])
  np.testing.assert_array_equal(back["b"][1], tree["b"][1])
  assert back["c"].shape == (0, 2) and int(back["b"][0]) == 7
  other = {**tree, "a": np.zeros((3, 2), np.float32)}  # another layout of the same sizes
  with pytest.raises(ValueError, match="not those of this run's state"):
    checkpoint.unpack(arrays, manifest, other)
  arrays["float32"][3] += 1
  with pytest.raises(ValueError, match="float32 array fails its checksum"):
    checkpoint.unpack(arrays, manifest, tree)


def _parse(*args: str):
  """The flags of ``args`` parsed as main.py parses them (its flag definitions, on a FlagValues
  of their own, and ``sys.argv``, where config_flags finds the overrides), in this process:
  (argv, the config, loaded), or the exception that parsing or loading raised."""
  from absl import flags
  from ml_collections import config_flags

  from m2m_jax import main
  values = flags.FlagValues()
  config = config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=values)
  argv = ["m2m-train", *args]
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(sys, "argv", argv)
    values(main.named_configs(argv))
    config.value.keys()
  return argv, config.value


def _explained(*args: str) -> str:
  """What the CLI says about the mistake in ``args`` (parsed by :func:`_parse`)."""
  from m2m_jax import main
  with pytest.raises(Exception) as error:
    _parse(*args)
  message = main.explain(error.value, ["m2m-train", *args])
  assert message and "\n" not in message and message.endswith((".", "?", "...")), message
  return message


@pytest.mark.parametrize("args,expected", [
    (["--config.nonexistent=1"], "unknown config field 'nonexistent'. The fields of the config "
                                 "are: algorithm, batch_size,"),
    (["--config.batch_sze=32"], "unknown config field 'batch_sze'; did you mean batch_size?"),
    (["--config.data.foo=1"], "unknown config field 'data.foo'. The fields of data are: "),
    (["--config.model.n_clusters.x=1"], "config field model.n_clusters is a value, not a group"),
    (["--config.batch_size=abc"], "--config.batch_size=abc: batch_size takes an integer, such as "),
    (["--config.batch_size=1.5"], "--config.batch_size=1.5: batch_size takes an integer"),
    (["--config.learning_rate=fast"], "learning_rate takes a number"),
    (["--config.model=3"], "--config.model is a group of fields, not a value; set one of them"),
])
def test_a_bad_override_is_explained_in_one_sentence(args, expected):
  assert expected in _explained(KMEANS, "--workdir=w", *args)


@pytest.mark.parametrize("override,expected", [
    ("--config.model.features=abc", "--config.model.features=abc: model.features takes a tuple "
                                    "of integers, such as (32, 64)."),
    ("--config.model.features=(8,1.5)", "model.features takes a tuple of integers"),
    ("--config.model.features=(8,16,32)", None),
])
def test_a_tuple_of_another_kind_is_refused_in_one_sentence(override, expected):
  """config_flags reads ``abc`` for a tuple field as ``('abc',)``: main.py compares the kinds
  of its values with the default's before anything is built."""
  from m2m_jax import main
  argv, config = _parse(f"--config={os.path.join(ROOT, 'configs', 'cnn.py')}", "--workdir=w",
                        override)
  message = main.mistyped(config, argv)
  assert message == expected if expected is None else expected in message


def test_missing_flags_and_config_files_are_explained_in_one_sentence(tmp_path):
  assert _explained(KMEANS) == ("--workdir is required: the directory for checkpoints, "
                                "metrics and figures.")
  assert _explained("--workdir=w") == ("--config is required: a config name or file, e.g. cnn, "
                                       "cnn:mnist5k or configs/cnn.py.")
  assert _explained("--config=cnnn:mnist5k", "--workdir=w") == (
      f"no config 'cnnn'; choose one of: {', '.join(configlib.config_names())}.")
  missing = os.path.join(ROOT, "configs", "missing.py")
  assert _explained(f"--config={missing}", "--workdir=w").startswith(
      f"config file '{missing}' cannot be read ([Errno 2] No such file or directory")
  bad = tmp_path / "bad.py"
  bad.write_text("def get_config():\n  return dict(\n    x = = 1)\n")
  assert _explained(f"--config={bad}", "--workdir=w") == (
      f"{bad}, line 3: invalid syntax (a syntax error in the config file).")



@pytest.mark.parametrize("field,value,message", [
    ("learning_rate", -1.0, "learning_rate must be a positive, finite number, got -1.0."),
    ("learning_rate", float("nan"), "learning_rate must be a positive, finite number, got nan."),
    ("learning_rate", 0.0, "learning_rate must be a positive, finite number, got 0.0."),
    ("warmup_steps", -1, "warmup_steps -1 must lie in [0, num_steps = 4)."),
    ("warmup_steps", 4, "warmup_steps 4 must lie in [0, num_steps = 4)."),
    ("weight_decay", 1.5, "weight_decay must lie in [0, 1)"),
    ("weight_decay", -0.1, "weight_decay must lie in [0, 1)"),
    ("divergence_factor", -1.0, "divergence_factor must be >= 0"),
])
def test_values_out_of_range_are_refused_before_training(field, value, message, tmp_path):
  config = _config()
  config.optimizer = "adamw"
  config[field] = value
  with pytest.raises(ConfigError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  assert message in str(error.value) and "\n" not in str(error.value)
  assert not os.path.exists(tmp_path / "checkpoints")


def test_a_loss_that_grows_a_hundredfold_stops_the_run(tmp_path):
  """Adam at a learning rate of 1e6 (the 'finished at chance with loss 6.9e5' run) stops at the
  first logged loss over 100 times the first one, keeping the last checkpoint; with
  divergence_factor 0 it runs to the end."""
  config = _config()
  config.learning_rate = 1e6
  with pytest.raises(TrainingDiverged, match=r"^the training loss \S+ at step 2 is over 100 times "
                                             r"the first one logged \(\S+\); stopped, keeping the "
                                             r"last good checkpoint \(step 1\)") as error:
    train.train_and_evaluate(config, str(tmp_path / "a"))
  assert str(error.value).endswith("(config.divergence_factor; 0 never stops).")
  config.divergence_factor = 0.0
  assert train.train_and_evaluate(config, str(tmp_path / "b"))["steps"] == 4


def test_a_workdir_in_use_is_refused_naming_the_process_and_a_dead_ones_lock_is_taken_over(
    tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  with subprocess.Popen(["sleep", "60"]) as running:
    (workdir / ".lock").write_text(f"{socket.gethostname()} {running.pid}")
    with pytest.raises(ConfigError, match=rf"^workdir '{workdir}' is in use by process "
                                          rf"{running.pid} on {socket.gethostname()}; wait"):
      train.train_and_evaluate(_config(), str(workdir))
    running.kill()
  assert not (workdir / "checkpoints").exists()  # nothing written by the refused run
  dead = subprocess.Popen(["true"])
  dead.wait()
  (workdir / ".lock").write_text(f"{socket.gethostname()} {dead.pid}")
  assert train.train_and_evaluate(_config(), str(workdir))["steps"] == 4
  assert not (workdir / ".lock").exists()  # released at the end


def test_a_lock_whose_pid_was_reused_is_taken_over(tmp_path):
  """A killed run's pid may later belong to another process: the lock records its owner's start
  time, so a live process of that pid started at another time does not hold the workdir."""
  from m2m_jax import workdir as workdir_lib
  host, pid, start = workdir_lib._me()
  assert start.isdigit()  # Linux: the start time is known
  (tmp_path / ".lock").write_text(f"{host} {pid} {int(start) - 1}")  # this pid, an older start
  with workdir_lib.locked(str(tmp_path)):
    assert (tmp_path / ".lock").read_text() == f"{host} {pid} {start}"
  (tmp_path / ".lock").write_text(f"{host} {pid} {start}")  # the same process: still in use
  with pytest.raises(ConfigError, match=f"is in use by process {pid}"):
    with workdir_lib.locked(str(tmp_path)):
      pass


def test_two_runs_at_once_one_trains_and_the_other_is_refused(tmp_path):
  """The lock is taken before anything is written: while one run holds it, another run into
  the same workdir is refused, and the first one's files are untouched."""
  from m2m_jax import workdir as workdir_lib
  with workdir_lib.locked(str(tmp_path)):
    with pytest.raises(ConfigError, match=f"is in use by process {os.getpid()}"):
      train.train_and_evaluate(_config(), str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["figures"]


def test_a_workdir_that_is_a_file_is_refused_in_one_sentence(tmp_path):
  path = tmp_path / "file"
  path.write_text("")
  for workdir in (path, path / "below"):
    with pytest.raises(ConfigError, match=rf"^workdir '{workdir}' cannot be used \(") as error:
      train.train_and_evaluate(_config(), str(workdir))
    assert "\n" not in str(error.value)


CLASSIFIERS = {
    "knn": (knn, dict(n_neighbors=3)),
    "logistic_regression": (logistic_regression, {}),
    "decision_tree": (decision_tree, dict(max_depth=2)),
    "random_forest": (random_forest, dict(n_estimators=2, max_depth=2)),
    "adaboost": (adaboost, dict(n_estimators=2)),
    "gradient_boosting": (gradient_boosting, dict(n_estimators=2, min_samples_leaf=2)),
    "bagging": (bagging, dict(base=decision_tree, n_estimators=2, max_depth=2)),
}


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_labels_come_back_as_given_or_are_refused(name):
  """Negative labels come back unchanged; labels that int32 (JAX's integer type) would wrap,
  2**40 and 2**31 + 5, are refused in one sentence instead of predicting a wrapped class."""
  module, hyper = CLASSIFIERS[name]
  X = np.linspace(-1, 1, 40, dtype=np.float32).reshape(20, 2)
  side = X[:, 0] > 0
  y = np.where(side, -7, -2)
  assert set(np.asarray(module.predict(module.fit(X, y, **hyper), X)).tolist()) == {-7, -2}
  for big in (2**40, 2**31 + 5):
    with pytest.raises(DataError, match=rf"^class label {big} does not keep its value as int32"):
      module.fit(X, np.where(side, big, 0).astype(np.int64), **hyper)


RUN_TINY_CNN = """
import sys
from m2m_jax import configlib, train
config = configlib.tiny(configlib.load("cnn"))
config.keep_checkpoints = 4
train.train_and_evaluate(config, sys.argv[1])
"""


def _tiny_cnn():
  config = configlib.tiny(configlib.load("cnn"))
  config.keep_checkpoints = 4
  return config


def _on_eight_devices(workdir: str) -> None:
  env = dict(os.environ, M2M_NO_PROGRESS="1", XLA_FLAGS=xla_flags(8))
  subprocess.run([sys.executable, "-c", RUN_TINY_CNN, workdir], cwd=ROOT, env=env, check=True,
                 capture_output=True, timeout=300)


def _summary(workdir) -> dict:
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def test_a_run_resumes_on_another_device_count(tmp_path):
  """A run that saved checkpoint 2 on 8 devices resumes on 1, and the reverse; each ends where
  the uninterrupted run on 1 device ends, to the tolerance of 8 devices against 1 (their
  reductions add in another order)."""
  one = train.train_and_evaluate(_tiny_cnn(), str(tmp_path / "one"))["test"]
  eight = str(tmp_path / "eight")
  _on_eight_devices(eight)
  shutil.rmtree(os.path.join(eight, "checkpoints", "4"))  # as if killed after checkpoint 2
  resumed = train.train_and_evaluate(_tiny_cnn(), eight)
  assert resumed["resumed_from_step"] == 2 and resumed["device_count"] == 1
  reverse = str(tmp_path / "reverse")
  shutil.copytree(str(tmp_path / "one"), reverse)
  shutil.rmtree(os.path.join(reverse, "checkpoints", "4"))
  _on_eight_devices(reverse)
  assert _summary(reverse)["resumed_from_step"] == 2 and _summary(reverse)["device_count"] == 8
  for other in (resumed["test"], _summary(reverse)["test"]):
    for key, value in one.items():
      np.testing.assert_allclose(other[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
