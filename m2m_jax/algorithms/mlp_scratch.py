"""An MLP classifier with hand-derived backpropagation and a hand-written Adam, in jax.numpy only.

No ``jax.grad``, no optax, no flax layers: the forward pass, the chain rule and Adam's update
equations are written out (the original NumPy ``simplenn`` notebook, made correct and jittable).
Layer ``l`` maps its input ``X_l`` (B, d_l) to ``Z_l = X_l W_l + b_l`` (B, d_{l+1}); hidden layers
apply ``act``, the last returns logits. With ``G_l = dL/dZ_l`` the chain rule gives::

  dL/dW_l = X_l^T G_l      dL/db_l = sum_i G_l[i]      dL/dX_l = G_l W_l^T
  G_{l-1} = (G_l W_l^T) * act'(Z_{l-1})

The loss is the mean softmax cross-entropy, whose gradient with respect to the logits is
``(softmax - onehot) / B`` (see :func:`softmax_cross_entropy`).
"""

from typing import Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax.algorithms import classifier
from m2m_jax.errors import ConfigError, DataError, choose
from m2m_jax.ops import optim

SCHEDULED = True  # its learning rate follows optim.schedule(config); logged to TensorBoard

Params = list[tuple[jax.Array, jax.Array]]


def _relu(z: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jnp.maximum(z, 0.0), (z > 0).astype(z.dtype)


def _sigmoid(z: jax.Array) -> tuple[jax.Array, jax.Array]:
  s = 0.5 * (1.0 + jnp.tanh(0.5 * z))  # = 1 / (1 + e^{-z}), without overflow
  return s, s * (1.0 - s)


def _tanh(z: jax.Array) -> tuple[jax.Array, jax.Array]:
  t = jnp.tanh(z)
  return t, 1.0 - t * t


# Each activation returns (act(z), act'(z)).
ACTIVATIONS: dict[str, Callable] = {"relu": _relu, "sigmoid": _sigmoid, "tanh": _tanh}


def init_params(key: jax.Array, sizes: Sequence[int]) -> Params:
  """He-normal weights ``W_l ~ N(0, 2 / d_l)`` (d_l, d_{l+1}) and zero biases (d_{l+1},).

  Args:
    sizes: layer widths ``(d_0, ..., d_L)``: input features, hidden widths, classes.
  """
  keys = jax.random.split(key, len(sizes) - 1)
  return [(jax.random.normal(k, (n_in, n_out), jnp.float32) * jnp.sqrt(2.0 / n_in),
           jnp.zeros((n_out,), jnp.float32))
          for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]


def forward(params: Params, x: jax.Array, activation: str = "relu") -> tuple[jax.Array, tuple]:
  """x: (B, ...) -> (logits (B, d_L), cache).

  ``cache = (inputs, slopes)``: ``inputs[l]`` is layer l's input X_l (B, d_l) and ``slopes[l]``
  is ``act'(Z_l)`` (B, d_{l+1}) for every hidden layer, all that :func:`backward` needs.
  """
  h = x.reshape(x.shape[0], -1).astype(jnp.float32)
  inputs, slopes = [], []
  for w, b in params[:-1]:
    inputs.append(h)
    h, slope = ACTIVATIONS[activation](h @ w + b)
    slopes.append(slope)
  w, b = params[-1]
  inputs.append(h)
  return h @ w + b, (inputs, slopes)


def backward(params: Params, cache: tuple, dlogits: jax.Array) -> Params:
  """Gradients ``[(dL/dW_l (d_l, d_{l+1}), dL/db_l (d_{l+1},))]`` from dL/dZ_L (B, d_L)."""
  inputs, slopes = cache
  grads, g = [], dlogits
  for layer in reversed(range(len(params))):
    grads.append((inputs[layer].T @ g, g.sum(0)))
    if layer:
      g = (g @ params[layer][0].T) * slopes[layer - 1]
  return grads[::-1]


def softmax_cross_entropy(logits: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-example loss ``-log softmax(z)_y`` (B,) and the gradient of its mean, (B, C).

  ``log softmax(z) = z - max z - log sum exp(z - max z)`` never overflows. Softmax and
  cross-entropy are differentiated together: ``dL/dz = (softmax(z) - onehot(y)) / B``. The
  original differentiated them apart, a full C x C softmax Jacobian per example times
  ``-y / clip(p)``: equal in exact arithmetic, but C times the work and wrong once ``p`` is
  clipped; its MSE gradient ``2 (p - y) / B`` was also off by the output width C (the loss
  averages over B * C entries).
  """
  z = logits - logits.max(-1, keepdims=True)
  neg_log_p = jnp.log(jnp.exp(z).sum(-1, keepdims=True)) - z
  onehot = (y[:, None] == jnp.arange(logits.shape[-1])).astype(logits.dtype)
  return (onehot * neg_log_p).sum(-1), (jnp.exp(-neg_log_p) - onehot) / logits.shape[0]


@flax.struct.dataclass
class Adam:
  """Adam's moments ``mu``, ``nu`` (shaped like the parameters) and the steps taken ``count``."""

  mu: Params
  nu: Params
  count: jax.Array


def adam_init(params: Params) -> Adam:
  """Zero moments and a zero step count."""
  return Adam(jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params),
              jnp.zeros((), jnp.int32))


def adam_update(grads: Params, state: Adam, params: Params, lr: jax.Array | float,
                b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> tuple[Params, Adam]:
  """One Adam step (Kingma & Ba, as ``optax.adam``), at step ``t = count + 1``::

    mu <- b1 mu + (1 - b1) g             nu <- b2 nu + (1 - b2) g^2
    mu_hat = mu / (1 - b1^t)             nu_hat = nu / (1 - b2^t)
    theta <- theta - lr mu_hat / (sqrt(nu_hat) + eps)
  """
  mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
  nu = jax.tree.map(lambda g, v: (1 - b2) * g ** 2 + b2 * v, grads, state.nu)
  t = state.count + 1
  c1, c2 = 1 - b1 ** t, 1 - b2 ** t
  params = jax.tree.map(lambda p, m, v: p - lr * ((m / c1) / (jnp.sqrt(v / c2) + eps)),
                        params, mu, nu)
  return params, Adam(mu, nu, t)


@flax.struct.dataclass
class State:
  """Parameters and Adam state; the widths are the parameters' shapes."""

  params: Params
  adam: Adam


def validate(config: ml_collections.ConfigDict) -> None:
  """Adam only, float32 only, positive integer hidden widths, a known activation."""
  if config.optimizer != "adam":
    raise ConfigError(f"mlp_scratch implements Adam only, got optimizer {config.optimizer!r}.")
  if config.dtype != "float32":
    raise ConfigError(f"mlp_scratch computes in float32 only, got dtype {config.dtype!r}.")
  hidden = config.model.get("hidden", ())
  if not all(isinstance(n, int) and n > 0 for n in hidden):
    raise ConfigError(f"model.hidden must be positive integer widths, got {hidden!r}.")
  choose("activation", config.model.get("activation", "relu"), ACTIVATIONS)


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> State:
  """Sizes ``(prod(x.shape[1:]), *config.model.hidden, config.num_classes)``.

  The labels of ``batch`` (the first training batch) are checked to lie in [0, num_classes).
  """
  if not config.num_classes:
    raise ConfigError(f"dataset {config.dataset!r} has no class labels; mlp_scratch needs them.")
  y = np.asarray(batch["y"])
  if y.min() < 0 or y.max() >= config.num_classes:
    raise DataError(f"labels must lie in [0, {config.num_classes}), got {y.min()}..{y.max()}.")
  sizes = (int(np.prod(batch["x"].shape[1:])), *config.model.get("hidden", ()), config.num_classes)
  params = init_params(rng, sizes)
  return State(params, adam_init(params))


def _loss(config: ml_collections.ConfigDict, state: State,
          batch: dict) -> tuple[jax.Array, tuple, jax.Array, jax.Array]:
  """(logits, cache, per-example losses, dL/dlogits) of ``batch``."""
  logits, cache = forward(state.params, batch["x"], config.model.get("activation", "relu"))
  losses, dlogits = softmax_cross_entropy(logits, batch["y"])
  return logits, cache, losses, dlogits


def train_step(config: ml_collections.ConfigDict, state: State,
               batch: dict, rng: jax.Array) -> tuple[State, dict]:
  """One Adam step on the mean cross-entropy of ``batch`` = {'x': (B, ...), 'y': (B,)}."""
  del rng
  logits, cache, losses, dlogits = _loss(config, state, batch)
  grads = backward(state.params, cache, dlogits)
  learning_rate = optim.schedule(config)(state.adam.count)
  params, adam = adam_update(grads, state.adam, state.params, learning_rate)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["y"])
  return state.replace(params=params, adam=adam), {"loss": losses.mean(), "accuracy": accuracy}


def eval_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> dict:
  """Per-example ``loss``, ``accuracy`` (0/1), ``pred`` and ``label``, each of shape (B,)."""
  logits, _, losses, _ = _loss(config, state, batch)
  pred = jnp.argmax(logits, -1)
  return {"loss": losses, "accuracy": (pred == batch["y"]).astype(jnp.float32),
          "pred": pred, "label": batch["y"]}


def figures(config: ml_collections.ConfigDict, state: State,
            outputs: dict, dataset, outdir: str) -> None:
  """The classifier's figures: confusion matrix and misclassified examples."""
  classifier.figures(config, state, outputs, dataset, outdir)
