"""Runs that survive faults: each case below is a fault done to a finished tiny run, then the
same run started again. README's reliability table lists these cases and what happens.

Checkpoints: the newest one is verified on restore (its manifest against the state, a CRC-32
of every packed array against the bytes read); one that is unreadable, incomplete or corrupt is
skipped with a warning naming it, and the previous one is restored, so the restarted run ends
exactly as the uninterrupted one did. When none restores, or ``config.json`` cannot be read, the
run is refused in one sentence.
"""

import glob
import json
import os
import shutil

import numpy as np
import pytest

from m2m_jax import checkpoint, configlib, train
from m2m_jax.errors import CheckpointError


def _config():
  config = configlib.tiny(configlib.load("mlp"))
  config.checkpoint_every, config.keep_checkpoints = 1, 3  # checkpoints 2, 3 and 4 are kept
  return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished tiny run (checkpoints 2, 3, 4) and its summary."""
  workdir = str(tmp_path_factory.mktemp("finished"))
  return workdir, train.train_and_evaluate(_config(), workdir)


def _data_file(step_dir: str) -> str:
  """The largest of the checkpoint's data files: the one holding the packed arrays."""
  return max(glob.glob(os.path.join(step_dir, "arrays", "**", "d", "*"), recursive=True),
             key=os.path.getsize)


def _truncate(path: str, fraction: float) -> None:
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(int(size * fraction))


def _scribble(path: str) -> None:
  """Writes 64 random bytes into the middle of ``path``."""
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(max(size // 2 - 32, 0))
    f.write(np.random.default_rng(0).bytes(64))


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
    "a data file truncated to 0 bytes": (lambda d: _truncate(_data_file(d), 0.0), "OUT_OF_RANGE"),
    "a data file truncated to half": (lambda d: _truncate(_data_file(d), 0.5), "OUT_OF_RANGE"),
    "64 random bytes written into a data file": (lambda d: _scribble(_data_file(d)),
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
    _scribble(_data_file(os.path.join(workdir, "checkpoints", str(step))))
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
