"""Logistic regression (binary or multinomial, L2 penalty) fitted in one loop step.

The step runs :func:`m2m_jax.classic.logistic_regression.solve` (L-BFGS or gradient descent on
the mean cross-entropy plus ||W||^2 / (2 C n)) on the whole training set, with ``config.model``
as its hyperparameters (``C``, ``penalty``, ``solver``, ``max_iter``, ``tol``,
``learning_rate``, ``fit_intercept``). Test metrics: accuracy and log-loss.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import fitted
from m2m_jax.classic import logistic_regression as logreg
from m2m_jax.classic import validation
from m2m_jax.errors import ConfigError

validate = fitted.validate


def summarize(config: ml_collections.ConfigDict, outputs: dict) -> dict:
  """Accuracy and mean log-loss of the test probabilities."""
  return fitted.classification_metrics(outputs)


def _params(state: fitted.Fitted, coef, intercept, steps) -> logreg.LogisticRegressionParams:
  return logreg.LogisticRegressionParams(coef, intercept, steps,
                                         tuple(range(state.kwargs["n_classes"])))


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> fitted.Fitted:
  """Checks the data {'x': (N, ...), 'y': (N,) class indices} and hyperparameters."""
  del rng
  if not config.num_classes:
    raise ConfigError(f"dataset {config.dataset!r} has no class labels; logistic regression "
                      "needs them.")
  h = fitted.hyper(config)
  logreg.check_hyper(h["C"], h["penalty"], h["solver"], h["max_iter"], h["tol"],
                     h["learning_rate"])
  x, y = validation.check_X_y(fitted.flat(np.asarray(batch["x"])), batch["y"], classification=True)
  options = {"l2": 0.0 if h["penalty"] is None else 1.0 / h["C"], "tol": h["tol"],
             "learning_rate": h["learning_rate"] or 0.0, "max_iter": h["max_iter"],
             "n_classes": config.num_classes, "solver": h["solver"],
             "fit_intercept": h["fit_intercept"]}
  state = fitted.Fitted(None, tuple(sorted(options.items())))
  return state.replace(params=_params(state, *fitted.unfitted(logreg.solve, x, y, **options)))


def train_step(config: ml_collections.ConfigDict, state: fitted.Fitted,
               batch: dict, rng: jax.Array) -> tuple[fitted.Fitted, dict]:
  """Fits on the batch; metrics: the training objective (log-loss + penalty), solver steps."""
  del rng
  x, y, kw = fitted.flat(batch["x"]), batch["y"], state.kwargs
  params = _params(state, *logreg.solve(x, y, **kw))
  loss = logreg.objective((params.coef_, params.intercept_), x, y, kw["l2"], kw["fit_intercept"])
  return state.replace(params=params), {
      "loss": loss, "accuracy": jnp.mean(logreg.predict(params, x) == y),
      "solver_steps": params.n_iter_.astype(jnp.float32)}


def eval_step(config: ml_collections.ConfigDict, state: fitted.Fitted, batch: dict) -> dict:
  """Per example: class probabilities ``prob`` (B, C) and the ``label`` (B,)."""
  return {"prob": logreg.predict_proba(state.params, fitted.flat(batch["x"])), "label": batch["y"]}


def figures(config: ml_collections.ConfigDict, state: fitted.Fitted,
            outputs: dict, dataset, outdir: str) -> None:
  """Confusion matrix of the test split, and the decision regions on the plane of the
  training data's two leading principal axes."""
  report.plot_confusion(outputs["label"], outputs["prob"].argmax(1), state.kwargs["n_classes"],
                        os.path.join(outdir, "confusion.png"), dataset.name)
  test = dataset.test[np.arange(len(dataset.test))]
  predict = jax.jit(lambda x: logreg.predict(state.params, x))
  report.plot_decision_regions(predict, test["x"], test["y"],
                               os.path.join(outdir, "decision_regions.png"),
                               f"logistic regression on {dataset.name} (test points)")
