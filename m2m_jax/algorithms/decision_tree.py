"""A CART decision tree in one loop step: the step grows the tree on the whole training set.

``config.model`` holds :func:`m2m_jax.classic.decision_tree.fit`'s hyperparameters
(``criterion``, ``max_depth``, ``min_samples_leaf``, ``min_impurity_decrease``,
``max_features``, ``max_bins``); classification when the dataset has classes, else regression.
Test metrics: accuracy and log-loss, or R^2, MSE and RMSE.
"""

import jax
import ml_collections

from m2m_jax.algorithms import fitted, trees
from m2m_jax.classic import decision_tree as dt

summarize = trees.summarize


def validate(config: ml_collections.ConfigDict) -> None:
  trees.validate(config)


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> trees.State:
  """Checks the training set and hyperparameters with ``decision_tree.check``; bins X."""
  x, y = trees.training_set(config, batch)
  x, y, w, bins, options = dt.check(x, y, task=trees.task(config), **fitted.hyper(config))
  state = trees.init_state(None, bins, options, config)
  return state.replace(model=fitted.unfitted(dt.solve, x, y, w, bins, rng, **state.kwargs))


def train_step(config: ml_collections.ConfigDict, state: trees.State,
               batch: dict, rng: jax.Array) -> tuple[trees.State, dict]:
  """Grows the tree; metric: the training accuracy or R^2."""
  x, _, y = trees.batch_arrays(state, batch)
  model = dt.solve(x, y, jax.numpy.ones(x.shape[0]), state.bins, rng, **state.kwargs)
  metrics = trees.training_metrics(x, y, *_predictors(model))
  return state.replace(model=model, rounds=state.rounds + 1), metrics


def _predictors(model: dt.DecisionTree):
  """(predict, predict_proba or None) of X alone."""
  proba = None if model.task == "regression" else (lambda x: dt.predict_proba(model, x))
  return (lambda x: dt.predict(model, x)), proba


def eval_step(config: ml_collections.ConfigDict, state: trees.State, batch: dict) -> dict:
  return trees.eval_outputs(batch, *_predictors(state.model))


def figures(config: ml_collections.ConfigDict, state: trees.State,
            outputs: dict, dataset, outdir: str) -> None:
  model = state.model
  name = f"decision tree (depth {model.tree.depth}, {model.criterion})"
  trees.figures(outputs, dataset, outdir, name, _predictors(model)[0],
                dt.feature_importances(model))
