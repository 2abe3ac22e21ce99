"""What the algorithms that fit a classic estimator in one loop step share.

Such an algorithm takes the whole training set as its one batch (``config.batch_size = 0``,
``config.num_steps = 1``): ``init`` checks the hyperparameters and the data with the
estimator's own checks, ``train_step`` runs its pure ``solve`` under jit on the batch (sharded
over the mesh like any other), and ``eval_step`` predicts the test split batch by batch.
"""

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax.errors import ConfigError


@flax.struct.dataclass
class Fitted:
  """params: the estimator's fitted pytree; options: its static solve options, as sorted
  (name, value) pairs (hashable, so that jit can key its cache on them)."""

  params: Any
  options: tuple = flax.struct.field(pytree_node=False, default=())

  @property
  def kwargs(self) -> dict:
    return dict(self.options)


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that would not fit on the whole training set in exactly one step."""
  if config.batch_size != 0:
    raise ConfigError(f"{config.algorithm} fits on the whole training set in one step: set "
                      f"batch_size=0 (the whole set), not {config.batch_size}.")
  if config.num_steps != 1:
    raise ConfigError(f"{config.algorithm} fits in one step: set num_steps=1, not "
                      f"{config.num_steps}.")


def flat(x: jax.Array) -> jax.Array:
  """(B, ...) -> (B, D): images become feature vectors."""
  return x.reshape(x.shape[0], -1)


def hyper(config: ml_collections.ConfigDict) -> dict:
  """``config.model`` as keyword arguments of the estimator."""
  return config.model.to_dict()


def unfitted(solve: Callable, *args, **kwargs) -> Any:
  """Zeros shaped like ``solve(*args, **kwargs)``'s result, without computing it."""
  shapes = jax.eval_shape(lambda *a: solve(*a, **kwargs), *args)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def regression_metrics(outputs: dict) -> dict:
  """R^2, mean squared error and its root from per-example ``prediction`` and ``target``."""
  target, residual = outputs["target"], outputs["target"] - outputs["prediction"]
  mse = float(np.mean(residual**2))
  ss_tot = float(np.sum((target - target.mean()) ** 2))
  return {"r2": 1.0 - float(np.sum(residual**2)) / ss_tot if ss_tot > 0 else float("nan"),
          "mse": mse, "rmse": mse**0.5}


def classification_metrics(outputs: dict) -> dict:
  """Accuracy from per-example ``prob`` (B, C) and ``label``, and the mean log-loss."""
  prob, label = outputs["prob"], outputs["label"]
  p_true = np.take_along_axis(prob, label[:, None].astype(np.int64), 1)[:, 0]
  return {"accuracy": float(np.mean(prob.argmax(1) == label)),
          "log_loss": float(-np.mean(np.log(np.clip(p_true, 1e-15, 1.0))))}
