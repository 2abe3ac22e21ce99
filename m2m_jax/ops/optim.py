"""Optimizers and learning-rate schedules built from a config (optax).

``optimizer(config)`` returns the same transformation object for the same settings, so that two
runs of one config in a process build equal training states, whose jitted steps are traced and
compiled once (a TrainState holds its optimizer as a static field, compared by equality).
"""

import functools

import ml_collections
import optax

from m2m_jax.errors import ConfigError

# The config fields an optimizer is built from.
FIELDS = ("optimizer", "learning_rate", "schedule", "num_steps", "warmup_steps", "weight_decay")


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


def optimizer(config: ml_collections.ConfigDict, b1: float = 0.9) -> optax.GradientTransformation:
  """``config.optimizer`` over ``schedule(config)``: adam, adamw, sgd or momentum (0.9).

  ``b1`` is Adam's first-moment decay (0.5 in DCGAN). ``config.weight_decay`` is decoupled for
  adamw (Loshchilov and Hutter) and an L2 penalty ``wd * w`` added to the gradient for sgd and
  momentum (the ResNet recipe); adam takes none.
  """
  return _optimizer(tuple((f, config[f]) for f in FIELDS), b1)


@functools.lru_cache(maxsize=64)
def _optimizer(fields: tuple, b1: float) -> optax.GradientTransformation:
  config = ml_collections.ConfigDict(dict(fields))
  lr, wd = schedule(config), config.weight_decay
  if config.optimizer == "adam":
    return optax.adam(lr, b1=b1)
  if config.optimizer == "adamw":
    return optax.adamw(lr, b1=b1, weight_decay=wd)
  sgd = optax.sgd(lr, momentum=0.9 if config.optimizer == "momentum" else None)
  return optax.chain(optax.add_decayed_weights(wd), sgd) if wd else sgd
