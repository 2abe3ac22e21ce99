"""TensorBoard events and profiler traces: what TensorBoard reads back of a run is what its
metrics.jsonl holds, with the learning rate, the config and the figures; a resumed run's events
read as an uninterrupted run's."""

import glob
import json
import os
import shutil

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from m2m_jax import configlib, data, train
from m2m_jax.errors import ConfigError
from m2m_jax.ops import optim


def _config():
  config = configlib.tiny(configlib.load("mlp"), steps=6)
  config.schedule, config.warmup_steps = "cosine", 2  # a learning rate that moves
  return config


def _events(workdir) -> EventAccumulator:
  events = EventAccumulator(os.path.join(workdir, "tensorboard"),
                            size_guidance={"scalars": 0, "images": 0, "tensors": 0})
  events.Reload()
  return events


def _scalars(events: EventAccumulator) -> dict:
  return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
          for tag in events.Tags()["scalars"]}


def _jsonl_scalars(workdir) -> dict:
  """metrics.jsonl as TensorBoard's tags: ``<split>/<metric>`` -> [(step, value)]."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for row in map(json.loads, f):
      for name, value in row.items():
        if name not in ("step", "split") and isinstance(value, (int, float)):
          out.setdefault(f"{row['split']}/{name}", []).append((row["step"], value))
  return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("tensorboard"))
  train.train_and_evaluate(_config(), workdir)
  return workdir


def test_events_hold_the_metrics_learning_rate_config_and_figures(trained):
  events = _events(trained)
  scalars = _scalars(events)
  rate = scalars.pop("train/learning_rate")
  expected = _jsonl_scalars(trained)
  assert scalars.keys() == expected.keys() and {"train/loss", "test/accuracy"} <= set(expected)
  for tag, points in expected.items():
    assert [s for s, _ in scalars[tag]] == [s for s, _ in points], tag
    np.testing.assert_allclose([v for _, v in scalars[tag]], [v for _, v in points], rtol=1e-6)
  config = _config()
  schedule = optim.schedule(train.resolve(config, data.load(config.dataset, **config.data)))
  assert [s for s, _ in rate] == list(range(1, 7))
  np.testing.assert_allclose([v for _, v in rate], [float(schedule(s - 1)) for s in range(1, 7)],
                             rtol=1e-6)
  assert rate[0][1] == pytest.approx(0.0) and rate[2][1] > rate[5][1]  # warmup, then decay
  (text,) = events.Tensors("config/text_summary")
  shown = text.tensor_proto.string_val[0].decode()
  with open(os.path.join(trained, "config.json")) as f:
    assert json.loads(shown) == json.load(f)
  pngs = sorted(os.path.basename(p)[:-4] for p in glob.glob(f"{trained}/figures/*.png"))
  assert "curves" in pngs
  assert events.Tags()["images"] == [f"figures/{name}" for name in pngs]
  (curves,) = events.Images("figures/curves")
  assert curves.step == 6 and curves.width > 100 and curves.height > 100


def test_a_resumed_run_reads_in_tensorboard_as_the_uninterrupted_one(trained, tmp_path):
  """The later checkpoints are removed, as if the run had been killed after its first: the
  resumed run's file hides what the first logged past it, as metrics.jsonl drops those rows."""
  shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
  steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert steps[0] == 2
  for step in steps[1:]:
    shutil.rmtree(tmp_path / "checkpoints" / str(step))
  summary = train.train_and_evaluate(_config(), str(tmp_path))
  assert summary["resumed_from_step"] == 2
  assert len(glob.glob(f"{tmp_path}/tensorboard/events.out.tfevents.*")) == 2
  assert _scalars(_events(tmp_path)) == _scalars(_events(trained))
  assert _jsonl_scalars(tmp_path) == _jsonl_scalars(trained)


def test_profile_steps_write_a_trace_for_the_profile_plugin(tmp_path):
  config = _config()
  config.profile_steps = (3, 4)
  train.train_and_evaluate(config, str(tmp_path))
  (trace,) = glob.glob(f"{tmp_path}/tensorboard/plugins/profile/*/*.xplane.pb")
  assert os.path.getsize(trace) > 1000


@pytest.mark.parametrize("steps,message", [
    ((4, 3), "profile_steps must be (first, last) with 1 <= first <= last, e.g. (10, 12), or () "
             "for no trace; got (4, 3)."),
    ((0, 2), "got (0, 2)."),
    ((3,), "got (3,)."),
    ((5, 7), "profile_steps (5, 7) end past the run's last step, 6."),
])
def test_bad_profile_steps_are_refused(steps, message, tmp_path):
  config = _config()
  config.profile_steps = steps
  with pytest.raises(ConfigError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  assert message in str(error.value)
