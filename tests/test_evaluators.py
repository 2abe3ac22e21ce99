"""Named evaluators (``config.evals``): cadences, splits, rows, the judge prepared before
training, and clear refusals."""

import json
import os

import pytest

from m2m_jax import checkpoint, configlib, evaluators, train
from m2m_jax.algorithms import sample_quality
from m2m_jax.errors import ConfigError


def _rows(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_each_evaluator_runs_at_its_cadence_and_after_training(tmp_path):
  config = configlib.tiny(configlib.load("cnn"), steps=6)
  config.eval_every = 4  # evals.test follows it (every = 0)
  config.evals.fit = evaluators.spec("metrics", split="train", every=3)
  summary = train.train_and_evaluate(config, str(tmp_path))
  rows = _rows(tmp_path)
  assert [r["step"] for r in rows if r["split"] == "test"] == [4, 6]
  assert [r["step"] for r in rows if r["split"] == "train_eval"] == [3, 6]
  final = {r["split"]: r for r in rows if r["step"] == 6}
  assert final["train_eval"] == {"step": 6, "split": "train_eval", **summary["train_eval"]}
  assert set(summary["train_eval"]) == set(summary["test"]) == {"accuracy", "loss"}
  assert summary["train_eval"] != summary["test"]  # 64 training examples, 32 test ones

  # A finished run evaluated again: the final rows are written once more, not twice.
  again = train.train_and_evaluate(config, str(tmp_path))
  assert again["train_eval"] == summary["train_eval"] and _rows(tmp_path) == rows


def test_cadence_changes_on_resume_are_allowed(tmp_path):
  config = configlib.tiny(configlib.load("mlp"))
  train.train_and_evaluate(config, str(tmp_path))
  config.evals.test.every = 1
  assert train.train_and_evaluate(config, str(tmp_path))["resumed_from_step"] == 4
  config.evals.test.split = "train"
  with pytest.raises(ConfigError, match=r"evals.test.split = 'test' there, 'train' now"):
    train.train_and_evaluate(config, str(tmp_path))


def test_the_judge_is_trained_before_the_first_step(tmp_path, monkeypatch):
  events = []
  monkeypatch.setattr(sample_quality, "prepare", lambda config, dataset: events.append("judge"))
  save = checkpoint.Checkpointer.save
  monkeypatch.setattr(checkpoint.Checkpointer, "save",
                      lambda self, step, tree: (events.append(step), save(self, step, tree)))
  monkeypatch.setattr(sample_quality, "evaluate", lambda config, dataset, samples: {"fd": 1.0})
  config = configlib.tiny(configlib.load("gan"))
  config.fd.num_samples = 4
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert events == ["judge", 2, 4] and summary["test"]["fd"] == 1.0


@pytest.mark.parametrize("name,field,value,message", [
    ("cnn", "kind", "fid", r"unknown evaluator kind \(evals.test.kind\) 'fid'; choose one of: "
                           "metrics, samples, zeroshot."),
    ("cnn", "split", "valid", r"unknown evaluator split \(evals.test.split\) 'valid'; choose one "
                              "of: test, train."),
    ("cnn", "every", -2, r"evals.test.every must be a number of steps, 0 \(eval_every\) or -1 "
                         r"\(only after training\); got -2."),
    ("cnn", "kind", "samples", "evaluator 'test' is of kind 'samples', which algorithm "
                               r"'classifier' does not run \(it has no sample_metrics\)."),
    ("cnn", "kind", "zeroshot", "evaluator 'test' is of kind 'zeroshot', which algorithm "
                                r"'classifier' does not run \(it has no zeroshot_metrics\)."),
])
def test_bad_evaluators_are_refused(name, field, value, message, tmp_path):
  config = configlib.tiny(configlib.load(name))
  config.evals.test[field] = value
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
