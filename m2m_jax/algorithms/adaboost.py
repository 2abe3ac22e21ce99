"""AdaBoost (SAMME) through the shared loop: one boosting round per step.

``config.model`` holds :func:`m2m_jax.classic.adaboost.fit`'s hyperparameters
(``n_estimators``, ``learning_rate``, ``max_depth``, ``criterion``, ``max_bins``);
``config.num_steps`` equals ``n_estimators``. Each step recomputes the boosting weights from the
rounds so far (:func:`adaboost.sample_weights`) and adds one round, so a run killed between
steps resumes to the same ensemble. Test metrics: accuracy and log-loss.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax.algorithms import fitted, trees
from m2m_jax.classic import adaboost
from m2m_jax.classic import decision_tree as dt
from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError

summarize = trees.summarize


def validate(config: ml_collections.ConfigDict) -> None:
  trees.validate(config, config.model.n_estimators)


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> trees.State:
  """Checks the training set and hyperparameters; bins X; no round grown yet."""
  del rng
  if not config.num_classes:
    raise ConfigError(f"AdaBoost classifies; dataset {config.dataset!r} has no classes.")
  x, y = trees.training_set(config, batch)
  x, _ = validation.check_X_y(x, y, classification=True)
  hyper = fitted.hyper(config)
  bins = dt.bin_features(x, hyper.pop("max_bins"))
  dt.check_growth(x.shape[0], x.shape[1], bins.max_bins, config.num_classes + 1,
                  dt.check_depth(hyper["max_depth"]), 1)
  return trees.init_state(adaboost.init(bins, x.shape[0], config.num_classes, **hyper), bins,
                          {}, config)


def train_step(config: ml_collections.ConfigDict, state: trees.State,
               batch: dict, rng: jax.Array) -> tuple[trees.State, dict]:
  """Adds round ``state.rounds``; metrics: its weighted error and alpha, the training accuracy."""
  del rng
  x, xb, y = trees.batch_arrays(state, batch)
  w = adaboost.sample_weights(state.model, xb, y, jnp.ones(x.shape[0]))
  model = adaboost.boost_round(state.model, xb, y, w, state.rounds, state.bins)
  at = jnp.minimum(state.rounds, model.alpha_.shape[0] - 1)
  metrics = trees.training_metrics(x, y, *_predictors(model))
  metrics.update(weighted_error=model.errors_[at], alpha=model.alpha_[at],
                 rounds_kept=model.n_rounds_.astype(jnp.float32))
  return state.replace(model=model, rounds=state.rounds + 1), metrics


def _predictors(model: adaboost.AdaBoost):
  return (lambda x: adaboost.predict(model, x)), (lambda x: adaboost.predict_proba(model, x))


def eval_step(config: ml_collections.ConfigDict, state: trees.State, batch: dict) -> dict:
  return trees.eval_outputs(batch, *_predictors(state.model))


def figures(config: ml_collections.ConfigDict, state: trees.State,
            outputs: dict, dataset, outdir: str) -> None:
  model = state.model
  test = dataset.test[np.arange(len(dataset.test))]
  staged = adaboost.staged_score(model, fitted.flat(test["x"]), test["y"])
  name = f"AdaBoost ({int(model.n_rounds_)} rounds of depth-{model.trees.depth} trees)"
  trees.figures(outputs, dataset, outdir, name, _predictors(model)[0],
                adaboost.feature_importances(model), ("test accuracy", np.asarray(staged)))
