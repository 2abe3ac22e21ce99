"""Supervised classification with any flax model from :mod:`m2m_jax.models` and an optax optimizer.

Loss: mean softmax cross-entropy, ``L = -1/B sum_i log softmax(f(x_i))_{y_i}``, computed in
float32 whatever the compute dtype; with ``config.label_smoothing = a > 0`` the training loss
smooths the one-hot targets to ``(1 - a) onehot + a / K`` (the test loss stays plain).
Augmentation (random shifts ``crop(pad=s)``, flips, mixup) is ``config.transforms``
(:mod:`m2m_jax.data.transforms`); after mixup the labels are distributions (B, K), and the
training accuracy counts the class each mixes in most. Models with BatchNorm (the ResNets) keep
their statistics in ``state.batch_stats`` (see :mod:`m2m_jax.algorithms.nets`).
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from m2m_jax import report
from m2m_jax.algorithms import nets
from m2m_jax.errors import ConfigError
from m2m_jax.ops import keys, optim

SCHEDULED = True  # its learning rate follows optim.schedule(config); logged to TensorBoard

TAKES_TRANSFORMS = True  # its own draws (dropout) come from fold_in(rng, STEP_KEY_OFFSET)


def validate(config: ml_collections.ConfigDict) -> None:
  if not config.model_name:
    raise ConfigError("the classifier needs config.model_name (e.g. 'cnn' or 'mlp').")
  if not 0 <= config.get("label_smoothing", 0.0) < 1:
    raise ConfigError(f"label_smoothing must lie in [0, 1); got {config.label_smoothing}.")


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> nets.State:
  """Initialises parameters from ``batch['x']`` of shape (B, ...) and the optimizer state."""
  if not config.num_classes:
    raise ConfigError(f"dataset {config.dataset!r} has no class labels; the classifier needs them.")
  labels = np.asarray(batch["y"])
  if labels.min() < 0 or labels.max() >= config.num_classes:
    raise ConfigError(f"labels must lie in [0, {config.num_classes}); the first batch holds "
                      f"{labels.min()}..{labels.max()}.")
  model = nets.build_model(config, num_classes=config.num_classes)
  return nets.create(config, model, rng, batch["x"])


def _logits(state: nets.State, params, x: jax.Array, train: bool, rng: jax.Array | None = None):
  logits, batch_stats = nets.apply(state, params, x, train, rng)
  return logits.astype(jnp.float32), batch_stats


def train_step(config: ml_collections.ConfigDict, state: nets.State,
               batch: dict, rng: jax.Array) -> tuple[nets.State, dict]:
  """One optimizer step on the mean cross-entropy of ``batch`` = {'x': (B, ...), 'y': (B,) or
  (B, K) distributions}."""
  x, labels = batch["x"], batch["y"]

  def loss_fn(params):
    dropout_rng = jax.random.fold_in(rng, keys.STEP_KEY_OFFSET)
    logits, batch_stats = _logits(state, params, x, train=True, rng=dropout_rng)
    loss = optim.cross_entropy(logits, labels, config.get("label_smoothing", 0.0)).mean()
    return loss, (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  hard = jnp.argmax(labels, -1) if labels.ndim == logits.ndim else labels
  accuracy = jnp.mean(jnp.argmax(logits, -1) == hard)
  return state, {"loss": loss, "accuracy": accuracy}


def eval_step(config: ml_collections.ConfigDict, state: nets.State, batch: dict) -> dict:
  """Per-example ``loss``, ``accuracy`` (0/1), ``pred`` and ``label``, each of shape (B,)."""
  logits, _ = _logits(state, state.params, batch["x"], train=False)
  pred = jnp.argmax(logits, -1)
  return {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]),
          "accuracy": (pred == batch["y"]).astype(jnp.float32),
          "pred": pred, "label": batch["y"]}


def figures(config: ml_collections.ConfigDict, state: nets.State,
            outputs: dict, dataset, outdir: str) -> None:
  """The confusion matrix and (for images) the first 32 misclassified test examples."""
  report.plot_confusion(outputs["label"], outputs["pred"], dataset.num_classes,
                        os.path.join(outdir, "confusion.png"), dataset.name)
  wrong = np.flatnonzero(outputs["pred"] != outputs["label"])[:32]
  x = dataset.test[wrong]["x"] if len(wrong) else None
  if x is not None and x.ndim == 4:
    titles = [f"true {t}, pred {p}" for t, p in zip(outputs["label"][wrong], outputs["pred"][wrong])]
    report.plot_images(x, titles, os.path.join(outdir, "misclassified.png"))
