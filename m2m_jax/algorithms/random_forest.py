"""A random forest through the shared loop: one tree per step.

``config.model`` holds :func:`m2m_jax.classic.random_forest.fit`'s hyperparameters
(``n_estimators``, ``criterion``, ``max_depth``, ``min_samples_leaf``, ``max_features``,
``bootstrap``, ``max_bins``); ``config.num_steps`` equals ``n_estimators``. Step t grows tree t
on a bootstrap resample drawn with the step's key (:func:`random_forest.grow_tree`) and puts it
in slot t, so the forest predicts after any step and a resumed run grows the same trees.
Classification when the dataset has classes, else regression. Test metrics: accuracy and
log-loss, or R^2, MSE and RMSE. (The out-of-bag score is :func:`random_forest.fit`'s: the loop
may hand over the training set in a new order each step, so which rows a tree left out is not
kept.)
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax.algorithms import fitted, trees
from m2m_jax.classic import decision_tree as dt
from m2m_jax.classic import random_forest as rf
from m2m_jax.classic import validation

summarize = trees.summarize


def validate(config: ml_collections.ConfigDict) -> None:
  trees.validate(config, config.model.n_estimators)


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> trees.State:
  """Checks the training set and hyperparameters; bins X; every slot empty."""
  del rng
  h = fitted.hyper(config)
  task = trees.task(config)
  x, y = trees.training_set(config, batch)
  x, y = validation.check_X_y(x, y, classification=task == "classification")
  n, d = x.shape
  criterion = dt.check_task_criterion(task, h["criterion"])
  depth, leaf = dt.check_depth(h["max_depth"]), dt.check_min_samples_leaf(h["min_samples_leaf"], n)
  features = dt.resolve_max_features(
      rf.DEFAULT_MAX_FEATURES[task] if h["max_features"] is None else h["max_features"], d)
  bins = dt.bin_features(x, h["max_bins"])
  dt.check_growth(n, d, bins.max_bins, (config.num_classes or 3) + 1, depth, leaf)
  model = rf.init(bins, n, config.num_classes or (), n_estimators=h["n_estimators"],
                  criterion=criterion, max_depth=depth, min_samples_leaf=leaf,
                  offset=float(jnp.mean(y)) if task == "regression" else 0.0)
  options = dict(task=task, n_classes=config.num_classes or 0, criterion=criterion,
                 max_depth=depth, min_samples_leaf=leaf,
                 max_features=None if features == d else features, bootstrap=bool(h["bootstrap"]))
  return trees.init_state(model, bins, options, config)


def train_step(config: ml_collections.ConfigDict, state: trees.State,
               batch: dict, rng: jax.Array) -> tuple[trees.State, dict]:
  """Grows tree ``state.rounds``; metric: the forest's training accuracy or R^2 so far."""
  x, xb, y = trees.batch_arrays(state, batch)
  model = state.model
  target = y if model.task == "classification" else y - model.offset_
  model = rf.set_tree(model, state.rounds, rf.grow_tree(xb, target, state.bins, rng,
                                                        **state.kwargs))
  metrics = trees.training_metrics(x, y, *_predictors(model))
  return state.replace(model=model, rounds=state.rounds + 1), metrics


def _predictors(model: rf.Forest):
  proba = None if model.task == "regression" else (lambda x: rf.predict_proba(model, x))
  return (lambda x: rf.predict(model, x)), proba


def eval_step(config: ml_collections.ConfigDict, state: trees.State, batch: dict) -> dict:
  return trees.eval_outputs(batch, *_predictors(state.model))


def staged_score(model: rf.Forest, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """(T,) test accuracy or R^2 of the first t + 1 trees, for each t."""
  scores = []
  for t in range(model.n_estimators):
    weight = (jnp.arange(model.n_estimators) <= t) * model.tree_weight_
    scores.append(float(rf.score(model.replace(tree_weight_=weight), x, y)))
  return np.asarray(scores)


def figures(config: ml_collections.ConfigDict, state: trees.State,
            outputs: dict, dataset, outdir: str) -> None:
  model = state.model
  test = dataset.test[np.arange(len(dataset.test))]
  label = "accuracy" if model.task == "classification" else "R^2"
  staged = staged_score(model, fitted.flat(test["x"]), test["y"])
  name = f"random forest ({model.n_estimators} trees of depth {model.trees.depth})"
  trees.figures(outputs, dataset, outdir, name, _predictors(model)[0],
                rf.feature_importances(model), (f"{label} against trees", staged))
