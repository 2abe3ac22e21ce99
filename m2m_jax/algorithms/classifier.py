"""Supervised classification with any flax model from :mod:`m2m_jax.models` and an optax optimizer.

Loss: mean softmax cross-entropy, ``L = -1/B sum_i log softmax(f(x_i))_{y_i}``, computed in
float32 whatever the compute dtype. With ``config.augment_shift = s > 0`` each training image is
translated by up to s pixels (a fresh draw every step, from the step's key). Models with BatchNorm keep their statistics in
``state.batch_stats``; under jit the batch mean spans every device, so they stay in sync.
"""

import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from m2m_jax import models, report
from m2m_jax.errors import ConfigError
from m2m_jax.ops import augment, optim


class State(train_state.TrainState):
  """flax's TrainState plus BatchNorm statistics (an empty dict for models without them)."""

  batch_stats: Any = None
  augment_shift: int = flax.struct.field(pytree_node=False, default=0)


def validate(config: ml_collections.ConfigDict) -> None:
  if not config.model_name:
    raise ConfigError("the classifier needs config.model_name (e.g. 'cnn' or 'mlp').")


def build_model(config: ml_collections.ConfigDict):
  """The flax module named by ``config.model_name``, with ``config.model`` as arguments."""
  kwargs = dict(config.model)
  kwargs.setdefault("num_classes", config.num_classes)
  return models.get(config.model_name)(**kwargs, dtype=jnp.dtype(config.dtype))


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> State:
  """Initialises parameters from ``batch['x']`` of shape (B, ...) and the optimizer state."""
  if not config.num_classes:
    raise ConfigError(f"dataset {config.dataset!r} has no class labels; the classifier needs them.")
  labels = np.asarray(batch["y"])
  if labels.min() < 0 or labels.max() >= config.num_classes:
    raise ConfigError(f"labels must lie in [0, {config.num_classes}); the first batch holds "
                      f"{labels.min()}..{labels.max()}.")
  model = build_model(config)
  variables = model.init(rng, jnp.asarray(batch["x"][:1]), train=False)
  return State.create(apply_fn=model.apply, params=variables["params"],
                      tx=optim.optimizer(config), batch_stats=variables.get("batch_stats", {}),
                      augment_shift=config.get("augment_shift", 0))


def _logits(state: State, params, x: jax.Array, train: bool):
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
    if train:
      logits, updates = state.apply_fn(variables, x, train=True, mutable=["batch_stats"])
      return logits.astype(jnp.float32), updates["batch_stats"]
  return state.apply_fn(variables, x, train=train).astype(jnp.float32), state.batch_stats


def train_step(state: State, batch: dict, rng: jax.Array) -> tuple[State, dict]:
  """One optimizer step on the mean cross-entropy of ``batch`` = {'x': (B, ...), 'y': (B,)}."""
  x = batch["x"]
  if state.augment_shift:
    x = augment.random_shift(rng, x, state.augment_shift)

  def loss_fn(params):
    logits, batch_stats = _logits(state, params, x, train=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
  return state, {"loss": loss, "accuracy": accuracy}


def eval_step(state: State, batch: dict) -> dict:
  """Per-example ``loss``, ``accuracy`` (0/1), ``pred`` and ``label``, each of shape (B,)."""
  logits, _ = _logits(state, state.params, batch["x"], train=False)
  pred = jnp.argmax(logits, -1)
  return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]),
          "accuracy": (pred == batch["y"]).astype(jnp.float32),
          "pred": pred, "label": batch["y"]}


def figures(state: State, outputs: dict, dataset, outdir: str) -> None:
  """The confusion matrix and (for images) the first 32 misclassified test examples."""
  report.plot_confusion(outputs["label"], outputs["pred"], dataset.num_classes,
                        os.path.join(outdir, "confusion.png"), dataset.name)
  wrong = np.flatnonzero(outputs["pred"] != outputs["label"])[:32]
  x = dataset.test[wrong]["x"] if len(wrong) else None
  if x is not None and x.ndim == 4:
    titles = [f"true {t}, pred {p}" for t, p in zip(outputs["label"][wrong], outputs["pred"][wrong])]
    report.plot_images(x, titles, os.path.join(outdir, "misclassified.png"))
