"""k-nearest neighbours in one loop step: the step stores the whole training set.

Classification when the dataset has class labels, regression otherwise; ``config.model`` holds
:func:`m2m_jax.classic.knn.fit`'s hyperparameters (``n_neighbors``, ``weights``, ``metric``,
``p``, ``block_size``, ``train_block_size``). Test metrics: accuracy and log-loss, or R^2, MSE
and RMSE.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import fitted
from m2m_jax.classic import knn

validate = fitted.validate


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> fitted.Fitted:
  """Checks the data and hyperparameters with ``knn.fit`` itself (which only stores)."""
  del rng
  task = "classification" if config.num_classes else "regression"
  params = knn.fit(fitted.flat(np.asarray(batch["x"])), batch["y"], task=task,
                   **fitted.hyper(config))
  if task == "classification":
    params = params.replace(classes_=jnp.arange(config.num_classes))
  return fitted.Fitted(params)


def train_step(config: ml_collections.ConfigDict, state: fitted.Fitted,
               batch: dict, rng: jax.Array) -> tuple[fitted.Fitted, dict]:
  """Stores the batch; metric: the number of training points stored."""
  del rng
  x = fitted.flat(batch["x"]).astype(jnp.float32)
  params = state.params.replace(X_=x, y_=batch["y"].astype(state.params.y_.dtype))
  return state.replace(params=params), {"stored": jnp.float32(x.shape[0])}


def eval_step(config: ml_collections.ConfigDict, state: fitted.Fitted, batch: dict) -> dict:
  """Per example: ``prob`` (B, C) and ``label``, or ``prediction`` and ``target`` (B,)."""
  x = fitted.flat(batch["x"])
  if state.params.task == "classification":
    return {"prob": knn.predict_proba(state.params, x), "label": batch["y"]}
  return {"prediction": knn.predict(state.params, x), "target": batch["y"]}


def summarize(config: ml_collections.ConfigDict, outputs: dict) -> dict:
  if "prob" in outputs:
    return fitted.classification_metrics(outputs)
  return fitted.regression_metrics(outputs)


def figures(config: ml_collections.ConfigDict, state: fitted.Fitted,
            outputs: dict, dataset, outdir: str) -> None:
  """Classification: confusion matrix and decision regions (training points stored, on the
  plane of their two leading principal axes). Regression: predicted vs true, residuals."""
  params = state.params
  name = f"{params.n_neighbors}-NN ({params.metric}, {params.weights})"
  if params.task == "regression":
    r2 = fitted.regression_metrics(outputs)["r2"]
    report.plot_regression(outputs["target"], outputs["prediction"],
                           os.path.join(outdir, "fit.png"), f"{name}: test R^2 {r2:.3f}")
    return
  report.plot_confusion(outputs["label"], outputs["prob"].argmax(1), len(params.classes_),
                        os.path.join(outdir, "confusion.png"), f"{name} on {dataset.name}")
  if params.X_.shape[0] <= 20_000:  # the grid is 150^2 queries against every stored point
    report.plot_decision_regions(jax.jit(lambda q: knn.predict(params, q)),
                                 np.asarray(params.X_), np.asarray(params.y_),
                                 os.path.join(outdir, "decision_regions.png"),
                                 f"{name} on {dataset.name} (training points)")
