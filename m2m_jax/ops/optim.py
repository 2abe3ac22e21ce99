"""Optimizers and learning-rate schedules built from a config (optax)."""

import ml_collections
import optax


def schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """The learning rate as a function of the step, over ``config.num_steps`` steps."""
  lr, steps = config.learning_rate, max(int(config.num_steps), 1)
  if config.schedule == "constant":
    return optax.constant_schedule(lr)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, steps)
  return optax.warmup_cosine_decay_schedule(0.0, lr, config.warmup_steps, steps)


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """``config.optimizer`` over ``schedule(config)``: adam, adamw, sgd or momentum (0.9)."""
  lr = schedule(config)
  if config.optimizer == "adam":
    return optax.adam(lr)
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=config.weight_decay)
  if config.optimizer == "momentum":
    return optax.sgd(lr, momentum=0.9)
  return optax.sgd(lr)
