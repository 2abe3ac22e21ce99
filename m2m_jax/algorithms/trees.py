"""What the tree algorithms (decision tree, random forest, AdaBoost, gradient boosting) share
in the shared loop.

Every step sees the whole training set (``config.batch_size = 0``) and grows one tree, or one
boosting round, so ``config.num_steps`` is the number of trees (rounds). ``init`` bins the
training set once with the estimator's own checks; the bins travel in the state, and each step
bins its batch with them. Nothing per-sample is kept between steps: the loop may hand the
training set over in another order each step, so boosting weights and raw scores are recomputed
from the rounds grown so far.
"""

import os
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import fitted
from m2m_jax.classic import decision_tree as dt
from m2m_jax.errors import ConfigError


@flax.struct.dataclass
class State:
  """model: the estimator's params; bins: the training set's :class:`~decision_tree.Bins`;
  rounds: () int32 trees or boosting rounds grown; options (static): the estimator's static
  keyword arguments as sorted (name, value) pairs."""

  model: Any
  bins: dt.Bins
  rounds: jax.Array
  options: tuple = flax.struct.field(pytree_node=False, default=())

  @property
  def kwargs(self) -> dict:
    return dict(self.options)


def validate(config: ml_collections.ConfigDict, rounds: int | None = None) -> None:
  """The whole training set in every step, and (for ensembles, ``rounds`` = n_estimators) one
  step per tree or round. The configs tie ``num_steps`` to ``model.n_estimators`` by reference,
  so overriding either moves both."""
  if config.batch_size != 0:
    raise ConfigError(f"{config.algorithm} grows each tree on the whole training set: set "
                      f"batch_size=0, not {config.batch_size}.")
  if rounds is not None and (not isinstance(rounds, int) or rounds < 1):
    raise ConfigError(f"n_estimators={rounds!r} must be an integer >= 1.")
  expected = 1 if rounds is None else rounds
  if config.num_steps != expected:
    what = "one step" if rounds is None else f"one step per round: n_estimators={rounds}"
    raise ConfigError(f"{config.algorithm} trains in {what}, so num_steps must be {expected}, "
                      f"not {config.num_steps}.")


def task(config: ml_collections.ConfigDict) -> str:
  return "classification" if config.num_classes else "regression"


def training_set(config: ml_collections.ConfigDict, batch: dict) -> tuple[np.ndarray, np.ndarray]:
  """The first batch (the whole training set) as X (n, d) and y (n,)."""
  x = fitted.flat(np.asarray(batch["x"]))
  return x, np.asarray(batch["y"])


def init_state(model: Any, bins: dt.Bins, options: dict, config) -> State:
  """The state before the first step. Classes are the dataset's 0..C-1, present or not."""
  if "classes" in options and config.num_classes:
    options = dict(options, classes=tuple(range(config.num_classes)))
  return State(model, bins, jnp.zeros((), jnp.int32), tuple(sorted(options.items())))


def batch_arrays(state: State, batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
  """X (n, d) float32, its bins (n, d) and y (n,) of a loop batch."""
  x = fitted.flat(batch["x"]).astype(jnp.float32)
  return x, dt.apply_bins(state.bins, x), batch["y"]


def eval_outputs(batch: dict, predict: Callable, predict_proba: Callable | None) -> dict:
  """Per example: ``prob`` (B, C) and ``label`` when the model classifies (``predict_proba``
  given), else ``prediction`` and ``target`` (B,). Both functions map X (B, d) to arrays."""
  x = fitted.flat(batch["x"])
  if predict_proba is not None:
    return {"prob": predict_proba(x), "label": batch["y"]}
  return {"prediction": predict(x), "target": batch["y"]}


def summarize(config: ml_collections.ConfigDict, outputs: dict) -> dict:
  """Accuracy and log-loss of a classifier's outputs, or R^2, MSE and RMSE of a regressor's."""
  if "prob" in outputs:
    return fitted.classification_metrics(outputs)
  return fitted.regression_metrics(outputs)


def training_metrics(x: jax.Array, y: jax.Array, predict: Callable,
                     predict_proba: Callable | None) -> dict:
  """Accuracy (``predict_proba`` given) or R^2 of the model so far on the training batch."""
  if predict_proba is not None:
    return {"train_accuracy": jnp.mean(jnp.argmax(predict_proba(x), 1) == y)}
  prediction = predict(x)
  return {"train_r2": 1 - jnp.sum((y - prediction) ** 2) / jnp.sum((y - jnp.mean(y)) ** 2)}


def figures(outputs: dict, dataset, outdir: str, name: str, predict: Callable,
            importances: jax.Array, staged: tuple[str, np.ndarray] | None = None) -> None:
  """Confusion matrix and decision regions (the plane of the training set's two leading
  principal axes when it has more than two features), or predicted against true; the feature
  importances; and, for ensembles, the staged test score ``staged = (label, (T,) scores)``.
  ``predict`` maps X (m, d) to class indices or values."""
  if "prob" in outputs:
    report.plot_confusion(outputs["label"], outputs["prob"].argmax(1), outputs["prob"].shape[1],
                          os.path.join(outdir, "confusion.png"), f"{name} on {dataset.name}")
    train = dataset.train[np.arange(len(dataset.train))]
    report.plot_decision_regions(
        jax.jit(predict), fitted.flat(train["x"]), train["y"],
        os.path.join(outdir, "decision_regions.png"),
        f"{name} on {dataset.name} (training points)")
  else:
    r2 = fitted.regression_metrics(outputs)["r2"]
    report.plot_regression(outputs["target"], outputs["prediction"],
                           os.path.join(outdir, "fit.png"), f"{name}: test R^2 {r2:.3f}")
  plot_importances(np.asarray(importances), os.path.join(outdir, "importances.png"),
                   f"{name}: feature importances")
  if staged is not None:
    label, scores = staged
    fig, ax = report.figure(figsize=(5, 3.5))
    ax.plot(np.arange(1, len(scores) + 1), scores)
    ax.set(xlabel="trees" if "tree" in label else "rounds", ylabel=f"{label} (test split)")
    ax.set_title(name, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, "staged.png"), dpi=110)


def plot_importances(importances: np.ndarray, path: str, title: str, top: int = 20) -> None:
  """A bar chart of the ``top`` largest importances (d,), largest first."""
  order = np.argsort(-importances, kind="stable")[:top]
  fig, ax = report.figure(figsize=(5, 0.25 * len(order) + 1.2))
  ax.barh(np.arange(len(order))[::-1], importances[order])
  ax.set_yticks(np.arange(len(order))[::-1], [f"feature {j}" for j in order])
  ax.set(xlabel="share of the impurity decrease", title=title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
