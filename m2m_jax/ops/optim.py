"""Optimizers and learning-rate schedules built from a config (optax).

A recipe is a chain, read from the config:

``clip_by_global_norm(grad_clip_norm)`` (when > 0), then ``config.optimizer`` (adam, adamw, sgd
or momentum 0.9) on ``schedule(config)``. ``weight_decay`` is decoupled for adamw (Loshchilov
and Hutter) and applied only where ``decay_mask`` says (not to biases, norm scales or
embeddings); for sgd and momentum it is an L2 penalty ``wd * w`` added to every gradient (the
ResNet recipe); adam takes none. ``per_part`` gives parts of a model their own recipes through
``optax.multi_transform`` (a frozen backbone, a slower encoder). ``with_ema`` adds an
exponential moving average of the parameters to a recipe, kept in the optimizer state.
``cross_entropy`` is the classification loss, with label smoothing.

``optimizer(config)`` returns the same transformation object for the same settings, so that two
runs of one config in a process build equal training states, whose jitted steps are traced and
compiled once (a TrainState holds its optimizer as a static field, compared by equality).
"""

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from m2m_jax.errors import ConfigError, choose

# The config fields a recipe is built from (configlib.base has each), with the value a config
# written before the field existed means.
FIELDS = {"optimizer": "adam", "learning_rate": 1e-3, "schedule": "constant", "num_steps": 1,
          "warmup_steps": 0, "weight_decay": 0.0, "grad_clip_norm": 0.0, "decay_every": 0,
          "decay_factor": 0.1}
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear", "step")
OPTIMIZERS = ("adam", "adamw", "sgd", "momentum")
# Parameters whose path contains one of these names are never decayed, nor any vector.
NO_DECAY = ("embedding", "pos_embed", "cls_token")


def schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """The learning rate as a function of the step over ``config.num_steps`` steps.

  ``warmup_steps`` rise linearly from 0 to ``learning_rate`` (any schedule); then ``constant``,
  ``cosine`` (to 0), ``linear`` (to 0) or ``step`` (times ``decay_factor`` every
  ``decay_every`` steps, PyTorch's StepLR). ``warmup_cosine`` is ``cosine`` and names the
  warmup it is usually given.
  """
  c = {f: config.get(f, default) for f, default in FIELDS.items()}
  lr, steps, warmup = c["learning_rate"], max(int(c["num_steps"]), 1), int(c["warmup_steps"])
  name = c["schedule"]
  choose("schedule", name, SCHEDULES)
  if not 0 <= warmup < steps:
    raise ConfigError(f"warmup_steps {warmup} must lie in [0, num_steps = {steps}).")
  if name in ("cosine", "warmup_cosine"):
    if not warmup:
      return optax.cosine_decay_schedule(lr, steps)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps)
  if name == "constant":
    decay = optax.constant_schedule(lr)
  elif name == "linear":
    decay = optax.linear_schedule(lr, 0.0, steps - warmup)
  else:
    if c["decay_every"] <= 0:
      raise ConfigError(f"the step schedule needs decay_every > 0; got {c['decay_every']}.")
    decay = optax.exponential_decay(lr, int(c["decay_every"]), c["decay_factor"], staircase=True)
  if not warmup:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def _names(path) -> tuple[str, ...]:
  """A pytree path as names: ``('Dense_0', 'kernel')``."""
  return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def decay_mask(params: Any) -> Any:
  """True for the leaves weight decay applies to: matrices and kernels, not biases, norm
  scales, embeddings or tokens (by name: ``NO_DECAY``)."""
  def decays(path, leaf):
    return leaf.ndim > 1 and not any(n in name.lower() for name in _names(path) for n in NO_DECAY)
  return jax.tree_util.tree_map_with_path(decays, params)


def optimizer(config: ml_collections.ConfigDict, b1: float = 0.9) -> optax.GradientTransformation:
  """The recipe of ``config`` (see the module docstring); ``b1`` is Adam's first-moment decay
  (0.5 in DCGAN)."""
  return _optimizer(tuple((f, config.get(f, default)) for f, default in FIELDS.items()), b1)


@functools.lru_cache(maxsize=64)
def _optimizer(fields: tuple, b1: float) -> optax.GradientTransformation:
  config = ml_collections.ConfigDict(dict(fields))
  lr, wd = schedule(config), config.weight_decay
  name = config.optimizer
  choose("optimizer", name, OPTIMIZERS)
  if name == "adam":
    tx = optax.adam(lr, b1=b1)
  elif name == "adamw":
    tx = optax.adamw(lr, b1=b1, weight_decay=wd, mask=decay_mask)
  else:
    tx = optax.sgd(lr, momentum=0.9 if name == "momentum" else None)
    tx = optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx
  if not config.grad_clip_norm:
    return tx
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)


def per_part(config: ml_collections.ConfigDict, label: Callable[[tuple[str, ...]], str],
             parts: Mapping[str, Mapping[str, Any] | None]) -> optax.GradientTransformation:
  """One recipe per part of the parameters (``optax.multi_transform``).

  ``label`` maps a parameter's path (a tuple of names) to a part; ``parts`` maps each part to
  the config fields it overrides (``{}`` keeps the config's recipe) or to None, which freezes
  it. E.g. a backbone at a tenth of the learning rate:
  ``per_part(config, lambda path: path[0], {"backbone": {"learning_rate": 1e-4}, "head": {}})``.
  """
  transforms = {}
  for part, overrides in parts.items():
    if overrides is None:
      transforms[part] = optax.set_to_zero()
      continue
    unknown = set(overrides) - set(FIELDS)
    if unknown:
      raise ConfigError(f"part {part!r} overrides {sorted(unknown)}; a part takes {list(FIELDS)}.")
    transforms[part] = optimizer(ml_collections.ConfigDict({**config.to_dict(), **overrides}))

  def labels(params):
    def name(path, _):
      part = label(_names(path))
      if part not in transforms:
        raise ConfigError(f"parameter {'/'.join(_names(path))} is in part {part!r}; the parts "
                          f"are {list(transforms)}.")
      return part
    return jax.tree_util.tree_map_with_path(name, params)
  return optax.multi_transform(transforms, labels)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy of logits (..., K) against integer labels (...) or
  target distributions (..., K) (e.g. mixed up by :func:`m2m_jax.data.transforms.mixup`).

  With ``label_smoothing = a > 0`` the target becomes ``(1 - a) target + a / K`` (Szegedy et
  al. 2016), so the loss is ``(1 - a) CE + a mean_k(-log p_k)``; PyTorch's
  ``cross_entropy(..., label_smoothing=a)``.
  """
  if not 0 <= label_smoothing < 1:
    raise ValueError(f"label_smoothing must lie in [0, 1); got {label_smoothing}.")
  soft = labels.ndim == logits.ndim
  if not label_smoothing and not soft:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  targets = labels if soft else jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
  targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


class EmaState(NamedTuple):
  count: jax.Array  # updates seen
  ema: Any          # the average of the parameters


def ema_decay_at(count: jax.Array, decay: float) -> jax.Array:
  """The decay of the ``count``-th update: ``min(decay, (1 + count) / (10 + count))``; the
  warm-up keeps a short run's average from remembering the random initialisation."""
  return jnp.minimum(decay, (1.0 + count) / (10.0 + count))


def params_ema(decay: float) -> optax.GradientTransformation:
  """Last in a chain: keeps ``ema <- d ema + (1 - d) params'``, where ``params' = params +
  updates`` are the parameters the chain's updates lead to and ``d = ema_decay_at(n, decay)`` at
  the n-th update (n = 1, 2, ...). The average starts at the initial parameters; the updates
  pass through unchanged."""

  def init_fn(params):
    return EmaState(jnp.zeros([], jnp.int32), params)

  def update_fn(updates, state, params):
    count = optax.safe_increment(state.count)
    d = ema_decay_at(count, decay)
    ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema,
                       optax.apply_updates(params, updates))
    return updates, EmaState(count, ema)

  return optax.GradientTransformation(init_fn, update_fn)


@functools.lru_cache(maxsize=64)
def with_ema(tx: optax.GradientTransformation, decay: float) -> optax.GradientTransformation:
  """``tx`` followed by :func:`params_ema`: the same object for the same arguments (see the
  module docstring). Read the average with :func:`ema_params`."""
  return optax.chain(tx, params_ema(decay))


def ema_params(opt_state: Any) -> Any:
  """The parameters' average kept by :func:`params_ema` in ``opt_state``."""
  return optax.tree_utils.tree_get(opt_state, "ema")
