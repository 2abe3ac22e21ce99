"""The command line: one clear sentence and a non-zero exit for every bad value, no traceback."""

import json
import shutil
import subprocess

import pytest

from conftest import cli
from m2m_jax import configlib, registry

KMEANS = "--config=kmeans"  # by name; test_train.py and conftest give files


def _refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr
  for fragment in fragments:
    assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("override,fragments", [
    ("--config.algorithm=svm", [f"unknown algorithm 'svm'; choose one of: "
                                f"{', '.join(sorted(registry.ALGORITHMS))}."]),
    ("--config.dataset=mnist6k", ["unknown dataset 'mnist6k'; choose one of:", "mnist5k"]),
    ("--config.optimizer=adagrad", ["unknown optimizer 'adagrad'; choose one of: adam, adamw, momentum, sgd."]),
    ("--config.model.variant=online", ["unknown k-means variant 'online'; choose one of: lloyd, minibatch."]),
])
def test_unknown_values_are_named_with_the_choices(tmp_path, override, fragments):
  _refused(cli(KMEANS, override, f"--workdir={tmp_path}"), "error: ", *fragments)


def test_unknown_preset_is_named(tmp_path):
  _refused(cli("--config=kmeans:huge", f"--workdir={tmp_path}"),
           "unknown preset 'huge'; choose one of: default, iris, minibatch, seed.")


def test_batch_that_does_not_divide_over_devices(tmp_path):
  _refused(cli(KMEANS, "--config.batch_size=1199", f"--workdir={tmp_path}", devices=8),
           "batch_size 1199 does not divide over the 8 devices; use a multiple of 8.")


def test_workdir_of_another_config_is_refused_and_cadence_changes_are_not(tmp_path):
  first = cli(KMEANS, f"--workdir={tmp_path}")
  assert first.returncode == 0, first.stderr
  assert json.loads(first.stdout.strip().splitlines()[-1])["test"]["ari"] == 1.0
  _refused(cli(KMEANS, "--config.model.n_clusters=3", f"--workdir={tmp_path}"),
           f"workdir '{tmp_path}' holds a checkpoint of a different config "
           "(model.n_clusters = 4 there, 3 now)")
  longer = cli(KMEANS, "--config.num_steps=30", "--config.log_every=5", f"--workdir={tmp_path}")
  assert longer.returncode == 0, longer.stderr
  with open(tmp_path / "summary.json") as f:
    summary = json.load(f)
  assert (summary["resumed_from_step"], summary["steps"]) == (20, 30)


def test_console_script_takes_the_same_flags(tmp_path):
  script = shutil.which("m2m-train")
  assert script, "the m2m-train console script is not installed"
  result = subprocess.run([script, KMEANS, f"--workdir={tmp_path}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert (tmp_path / "summary.json").exists()


def test_every_tfds_preset_takes_download_and_data_dir_from_the_command_line():
  for name in configlib.config_names():
    for preset, make in configlib.config_module(name).PRESETS.items():
      config = make()
      if config.dataset.startswith("tfds:"):
        assert {"data_dir", "download"} <= set(config.data), f"{name}:{preset}"


def test_the_command_line_prints_the_sentence_without_a_traceback(tmp_path):
  _refused(cli(KMEANS, "--config.n_clusters=3", f"--workdir={tmp_path}"),
           "error: unknown config field 'n_clusters'; did you mean ")
