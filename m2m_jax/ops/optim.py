"""Optimizers and learning-rate schedules built from a config (optax)."""

import ml_collections
import optax

from m2m_jax.errors import ConfigError


def schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """The learning rate as a function of the step, over ``config.num_steps`` steps."""
  lr, steps = config.learning_rate, max(int(config.num_steps), 1)
  if config.schedule == "constant":
    return optax.constant_schedule(lr)
  if config.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, steps)
  if not 0 <= config.warmup_steps < steps:
    raise ConfigError(f"warmup_steps {config.warmup_steps} must lie in [0, num_steps = {steps}) "
                      "for the warmup_cosine schedule.")
  return optax.warmup_cosine_decay_schedule(0.0, lr, config.warmup_steps, steps)


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """``config.optimizer`` over ``schedule(config)``: adam, adamw, sgd or momentum (0.9).

  ``config.weight_decay`` is decoupled for adamw (Loshchilov and Hutter) and an L2 penalty
  ``wd * w`` added to the gradient for sgd and momentum (the ResNet recipe); adam takes none.
  """
  lr, wd = schedule(config), config.weight_decay
  if config.optimizer == "adam":
    return optax.adam(lr)
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=wd)
  sgd = optax.sgd(lr, momentum=0.9 if config.optimizer == "momentum" else None)
  return optax.chain(optax.add_decayed_weights(wd), sgd) if wd else sgd
