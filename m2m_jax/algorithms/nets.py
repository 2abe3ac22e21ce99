"""What every algorithm that trains a flax model with optax shares: the state and the apply.

``State`` is flax's ``TrainState`` plus the BatchNorm statistics (an empty dict for models
without BatchNorm). ``apply`` runs the model in train or eval mode and returns the statistics
that a train step carries on. Under ``jit`` over a batch sharded on ``'data'`` a BatchNorm's
batch mean spans every device, so the statistics stay identical on all of them.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax.training import train_state

from m2m_jax import models
from m2m_jax.ops import optim


class State(train_state.TrainState):
  """flax's TrainState plus BatchNorm statistics (an empty dict for models without them)."""

  batch_stats: Any = None


def build_model(config: ml_collections.ConfigDict, **defaults):
  """The flax module named by ``config.model_name``, built from ``config.model`` (``defaults``
  fill arguments the config leaves out) in the compute dtype ``config.dtype``.

  Equal arguments give the same module object. A state holds ``model.apply`` as a static
  field, and bound methods compare by the identity of their object: with one object, two runs
  of a config in a process have equal states, and their jitted steps are traced once.
  """
  kwargs = {**defaults, **config.model, "dtype": jnp.dtype(config.dtype)}
  hashable = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return _module(config.model_name, tuple(sorted(hashable.items())))


@functools.lru_cache(maxsize=16)
def _module(name: str, kwargs: tuple):
  return models.get(name)(**dict(kwargs))


def init_variables(model, rng: jax.Array, *args, **kwargs) -> dict:
  """``model.init(rng, *args, **kwargs)`` compiled as one program. Called op by op, init
  compiles every initializer and every layer's first call separately: hundreds of small XLA
  programs, tens of seconds for a U-Net on a CPU. The values are the same. The program is made
  once for equal modules and keyword arguments, so a second run in a process reuses it."""
  return _jitted_init(model, tuple(sorted(kwargs.items())))(rng, *args)


@functools.lru_cache(maxsize=16)
def _jitted_init(model, kwargs: tuple):
  return jax.jit(functools.partial(model.init, **dict(kwargs)))


def clear_compiled() -> None:
  """Forgets the initialisers compiled by :func:`init_variables`."""
  _jitted_init.cache_clear()


def create(config: ml_collections.ConfigDict, model, rng: jax.Array, x: jax.Array,
           state_class=State, **fields) -> State:
  """Initialises ``model`` on ``x[:1]`` and the optimizer of ``config``; ``fields`` are extra
  fields of ``state_class``."""
  variables = init_variables(model, rng, jnp.asarray(x[:1]), train=False)
  return state_class.create(apply_fn=model.apply, params=variables["params"],
                            tx=optim.optimizer(config),
                            batch_stats=variables.get("batch_stats", {}), **fields)


def apply(state: State, params, x: jax.Array, train: bool, rng: jax.Array | None = None,
          **kwargs) -> tuple[Any, Any]:
  """``(model output, batch_stats)``: in train mode BatchNorm normalises by the batch and the
  returned statistics are updated; in eval mode it uses the running ones, returned unchanged.

  ``rng`` feeds the model's ``'dropout'`` stream (dropout, stochastic depth) in train mode; the
  loop gives each step its own key, a pure function of (seed, step), so a resumed run draws the
  same masks. A model without dropout ignores it.
  """
  variables = {"params": params}
  if train and rng is not None:
    kwargs["rngs"] = {"dropout": rng}
  if not state.batch_stats:
    return state.apply_fn(variables, x, train=train, **kwargs), state.batch_stats
  variables["batch_stats"] = state.batch_stats
  if not train:
    return state.apply_fn(variables, x, train=False, **kwargs), state.batch_stats
  out, updates = state.apply_fn(variables, x, train=True, mutable=["batch_stats"], **kwargs)
  return out, updates["batch_stats"]
