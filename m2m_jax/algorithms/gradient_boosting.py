"""Gradient boosting through the shared loop: one boosting round (K trees) per step.

``config.model`` holds :func:`m2m_jax.classic.gradient_boosting.fit`'s hyperparameters
(``n_estimators``, ``learning_rate``, ``max_depth``, ``min_samples_leaf``,
``l2_regularization``, ``subsample``, ``max_bins``); ``config.num_steps`` equals
``n_estimators``. Log-loss classification when the dataset has classes, else squared-error
regression. Each step rebuilds the training raw scores from the rounds so far
(:func:`gradient_boosting.raw_scores_binned`) and adds one round, its subsample drawn from the
step's key, so a run killed between steps resumes to the same model.
Test metrics: accuracy and log-loss, or R^2, MSE and RMSE.
"""

import jax
import ml_collections
import numpy as np

from m2m_jax.algorithms import fitted, trees
from m2m_jax.classic import gradient_boosting as gb

summarize = trees.summarize


def validate(config: ml_collections.ConfigDict) -> None:
  trees.validate(config, config.model.n_estimators)


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> trees.State:
  """Checks the training set and hyperparameters with ``gradient_boosting.check``; bins X;
  the model starts at the baseline F_0 of the training targets."""
  del rng
  x, y = trees.training_set(config, batch)
  task = trees.task(config)
  x, y, bins, options = gb.check(x, y, task=task, **fitted.hyper(config))
  if task == "classification":
    options["classes"] = config.num_classes
  return trees.init_state(gb.init(bins, y, **options), bins, {}, config)


def train_step(config: ml_collections.ConfigDict, state: trees.State,
               batch: dict, rng: jax.Array) -> tuple[trees.State, dict]:
  """Adds round ``state.rounds``; metrics: the mean training loss after it, and the training
  accuracy or R^2."""
  x, xb, y = trees.batch_arrays(state, batch)
  model = gb.boost_round(state.model, xb, y, gb.raw_scores_binned(state.model, xb),
                         state.rounds, rng, state.bins)
  metrics = trees.training_metrics(x, y, *_predictors(model))
  metrics["loss"] = gb.loss(gb.raw_scores_binned(model, xb), y, model.task) / x.shape[0]
  return state.replace(model=model, rounds=state.rounds + 1), metrics


def _predictors(model: gb.GradientBoosting):
  proba = None if model.task == "regression" else (lambda x: gb.predict_proba(model, x))
  return (lambda x: gb.predict(model, x)), proba


def eval_step(config: ml_collections.ConfigDict, state: trees.State, batch: dict) -> dict:
  return trees.eval_outputs(batch, *_predictors(state.model))


def figures(config: ml_collections.ConfigDict, state: trees.State,
            outputs: dict, dataset, outdir: str) -> None:
  model = state.model
  test = dataset.test[np.arange(len(dataset.test))]
  staged = gb.staged_score(model, fitted.flat(test["x"]), test["y"])
  label = "accuracy" if model.task == "classification" else "R^2"
  name = (f"gradient boosting ({model.n_estimators} rounds, depth {model.trees.depth}, "
          f"learning rate {float(model.learning_rate):g})")
  trees.figures(outputs, dataset, outdir, name, _predictors(model)[0],
                gb.feature_importances(model), (label, np.asarray(staged)))
