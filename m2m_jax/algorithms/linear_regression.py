"""Linear regression (least squares, ridge, lasso, elastic net) fitted in one loop step.

The step runs :func:`m2m_jax.classic.linear_regression.solve` on the whole training set with
``config.model`` as its hyperparameters (``alpha``, ``l1_ratio``, ``solver``, ...; see that
module for the objective and the solvers). Test metrics: R^2, MSE and RMSE.
"""

import os

import jax
import ml_collections
import numpy as np

from m2m_jax import report
from m2m_jax.algorithms import fitted
from m2m_jax.classic import linear_regression as lr
from m2m_jax.errors import ConfigError

validate = fitted.validate


def summarize(config: ml_collections.ConfigDict, outputs: dict) -> dict:
  """R^2, MSE and RMSE of the test predictions."""
  return fitted.regression_metrics(outputs)


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> fitted.Fitted:
  """Checks the data {'x': (N, ...), 'y': (N,) float} and hyperparameters; unfitted params."""
  del rng
  if config.num_classes:
    raise ConfigError(f"dataset {config.dataset!r} has class labels; linear regression needs a "
                      "real-valued target (e.g. 'diabetes').")
  hyper = fitted.hyper(config)
  fit_intercept = hyper.pop("fit_intercept", True)
  x, y, solver = lr.check(fitted.flat(np.asarray(batch["x"])), batch["y"], **hyper)
  options = dict(hyper, solver=solver, fit_intercept=fit_intercept)
  return fitted.Fitted(fitted.unfitted(lr.solve, x, y, **options), tuple(sorted(options.items())))


def train_step(config: ml_collections.ConfigDict, state: fitted.Fitted,
               batch: dict, rng: jax.Array) -> tuple[fitted.Fitted, dict]:
  """Fits on the batch; metrics: scikit-learn's training objective and the training R^2."""
  x = fitted.flat(batch["x"])
  params = lr.solve(x, batch["y"], key=rng, **state.kwargs)
  return state.replace(params=params), {"loss": lr.objective(params, x, batch["y"]),
                                        "r2": lr.score(params, x, batch["y"])}


def eval_step(config: ml_collections.ConfigDict, state: fitted.Fitted, batch: dict) -> dict:
  """Per example: ``prediction`` and ``target``, each (B,)."""
  return {"prediction": lr.predict(state.params, fitted.flat(batch["x"])), "target": batch["y"]}


def figures(config: ml_collections.ConfigDict, state: fitted.Fitted,
            outputs: dict, dataset, outdir: str) -> None:
  """Predicted vs true test values, residuals, and the coefficients."""
  r2 = fitted.regression_metrics(outputs)["r2"]
  report.plot_regression(outputs["target"], outputs["prediction"],
                         os.path.join(outdir, "fit.png"), f"{dataset.name}: test R^2 {r2:.3f}",
                         coef=np.asarray(state.params.coef_))
