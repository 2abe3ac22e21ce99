"""Named evaluators, big_vision's pattern: ``config.evals = {name: {kind, split, every}}``.

Each evaluator is a function of ``(config, state, dataset)`` that returns metrics, run by the
loop at its cadence and after training:

- ``metrics``: the algorithm's ``eval_step`` over the whole split in batches, then its
  ``summarize`` (default: the mean of every floating-point output). Every config has one,
  ``evals.test``.
- ``samples``: the quality of generated samples, the algorithm's ``sample_metrics(config,
  state, dataset)`` (:mod:`m2m_jax.algorithms.sample_quality`: a Fréchet distance in a judge's
  features). The judge is an artifact: :func:`prepare` trains it, or finds it cached, before
  the first training step, so that no training runs inside an evaluation.
- ``zeroshot``: the algorithm's ``zeroshot_metrics(config, state, dataset)``: a classifier
  whose weights are the text embeddings of the class names (CLIP).

``split`` is the split read (``test`` or ``train``); ``every`` the cadence in steps (0: the
config's ``eval_every``; -1: only after training). Every evaluator also runs after the last
step. The metrics of one split at one step form one row of ``metrics.jsonl``: ``split`` is
``test`` for the test split and ``train_eval`` for the training split (``train`` rows are the
training metrics), and the summary's ``test`` holds the final metrics of every test-split
evaluator.
"""

from typing import Any

import ml_collections

from m2m_jax.errors import ConfigError, choose

KINDS = ("metrics", "samples", "zeroshot")
# The kinds other than ``metrics``: the algorithm function each calls.
HOOKS = {"samples": "sample_metrics", "zeroshot": "zeroshot_metrics"}
SPLITS = ("test", "train")


def spec(kind: str, split: str = "test", every: int = 0) -> ml_collections.ConfigDict:
  """One entry of ``config.evals``."""
  return ml_collections.ConfigDict({"kind": kind, "split": split, "every": every})


def default_config() -> ml_collections.ConfigDict:
  """``config.evals`` of every config: the test split's metrics at ``eval_every``."""
  return ml_collections.ConfigDict({"test": spec("metrics")})


def validate(config: ml_collections.ConfigDict, algorithm: Any) -> None:
  """Refuses an unknown kind or split, a bad cadence, or a kind the algorithm cannot run."""
  for name, entry in config.evals.items():
    choose(f"evaluator kind (evals.{name}.kind)", entry.kind, KINDS)
    choose(f"evaluator split (evals.{name}.split)", entry.split, SPLITS)
    if entry.every < -1:
      raise ConfigError(f"evals.{name}.every must be a number of steps, 0 (eval_every) or -1 "
                        f"(only after training); got {entry.every}.")
    if entry.kind in HOOKS and not hasattr(algorithm, HOOKS[entry.kind]):
      raise ConfigError(f"evaluator {name!r} is of kind {entry.kind!r}, which algorithm "
                        f"{config.algorithm!r} does not run (it has no {HOOKS[entry.kind]}).")


def row(split: str) -> str:
  """The ``split`` of the metrics.jsonl rows of an evaluator on ``split``."""
  return "test" if split == "test" else f"{split}_eval"


def cadences(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Each evaluator's cadence in steps during training (``every``, or ``eval_every`` for 0);
  those that run only after training are left out."""
  return {name: entry.every or config.eval_every for name, entry in config.evals.items()
          if entry.every != -1}


def prepare(config: ml_collections.ConfigDict, algorithm: Any, dataset: Any) -> None:
  """Makes the artifacts the evaluators need before training starts (a judge)."""
  if any(entry.kind == "samples" for entry in config.evals.values()):
    from m2m_jax.algorithms import sample_quality
    sample_quality.prepare(config, dataset)
