"""GAN (Goodfellow et al., 2014) with the DCGAN networks: two players, two optimizers, one step.

The discriminator D (logits l, D = sigmoid(l)) and the generator G play
``min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))]``. Each loop step draws z ~ N(0, I) for the
batch and makes two updates, in the PyTorch DCGAN tutorial's order:

1. the discriminator, on its binary cross-entropy ``-log D(x) - log(1 - D(G(z)))`` over the
   real batch and a batch of fakes (two separate BatchNorm batches; G's output held fixed);
2. the generator, against the discriminator just updated, on the NON-SATURATING loss
   ``-log D(G(z))`` (``config.generator_loss = 'saturating'`` uses the minimax game's own
   ``log(1 - D(G(z)))``, whose gradient vanishes while D rejects the fakes; for comparison).

Each player has its own TrainState (parameters, optimizer state, BatchNorm statistics), and an
update changes its own player only: D's statistics of the pass inside the generator's update are
dropped. Images in [0, 1] are scaled to [-1, 1] for the networks (G ends in tanh) and samples
are mapped back.

Samples over training are part of the state, so they survive a checkpoint and a resumption:
a fixed noise batch ``fixed_z`` and ``snapshots``, the generator's images of it at K evenly
spaced steps (step 0, the untrained generator, through the last), each written by the train
step whose update reaches that step (``jax.lax.cond``), with the step it was taken at. A run
resumed with a larger ``num_steps`` keeps the snapshots it has and fills the rows of the new
schedule from then on; figures label each row with its own step.

Evaluation (deterministic, independent of batching; BatchNorm in inference mode): per test
image, D's probability of it being real, D's probability on a generated image whose noise is
drawn from a key hashed from the test image (``ops.keys.image_keys``), and the two players'
losses on that pair. D's running BatchNorm statistics average its real and its fake training
batches, which it normalises apart, so in inference mode its probabilities sit on another scale
than in training (often both low): compare ``d_real`` with ``d_fake``, not either with 1/2.
``sample_metrics`` judges ``config.fd.num_samples`` samples with
:mod:`m2m_jax.algorithms.sample_quality` (digits FD, confidence, class coverage).
"""

import os
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from m2m_jax import report
from m2m_jax.algorithms import nets, sample_quality
from m2m_jax.errors import ConfigError, DataError, choose
from m2m_jax.ops import optim
from m2m_jax.ops.images import to_image, to_model
from m2m_jax.ops.keys import EVAL_KEY, SAMPLE_KEY, image_keys

SCHEDULED = True  # its learning rate follows optim.schedule(config); logged to TensorBoard

SAMPLE_BATCH = 500


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """``-log D(x) - log(1 - D(G(z)))`` per pair: logits (B,) of real and of fake images -> (B,).

  ``-log sigmoid(l) = softplus(-l)`` and ``-log(1 - sigmoid(l)) = softplus(l)``, computed
  stably from the logits. At D = 1/2 (logits 0) it is 2 log 2.
  """
  return (optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits))
          + optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)))


def non_saturating_loss(fake_logits: jax.Array) -> jax.Array:
  """The generator's ``-log D(G(z)) = softplus(-l)``: logits (B,) -> (B,). Its gradient in l,
  ``-(1 - D)``, is near -1 when D rejects the fake (D -> 0): strong when G is worst."""
  return -jax.nn.log_sigmoid(fake_logits)


def saturating_loss(fake_logits: jax.Array) -> jax.Array:
  """The minimax game's generator loss ``log(1 - D(G(z))) = -softplus(l)``: logits (B,) -> (B,).
  Its gradient in l, ``-D``, vanishes when D rejects the fake (D -> 0): weak when G is worst."""
  return jax.nn.log_sigmoid(-fake_logits)


GENERATOR_LOSSES = {"non_saturating": non_saturating_loss, "saturating": saturating_loss}


@flax.struct.dataclass
class State:
  """Both players and the samples over training.

  Attributes:
    generator, discriminator: each a TrainState with its own optimizer and BatchNorm statistics.
    fixed_z: (n, latent_dim) the noise of the snapshots.
    snapshots: (K, n, H, W, C) images in [0, 1] of G(fixed_z) at the K snapshot steps.
    snapshot_steps: (K,) int32, the step each snapshot was taken at (-1: not yet taken), at
      the K steps of ``snapshot_schedule(config.num_steps, config.snapshots)``.
  """

  generator: nets.State
  discriminator: nets.State
  fixed_z: jax.Array
  snapshots: jax.Array
  snapshot_steps: jax.Array

  @property
  def step(self) -> jax.Array:
    """Loop steps done (each updates both players once)."""
    return self.generator.step


def snapshot_schedule(num_steps: int, k: int) -> tuple[int, ...]:
  """K evenly spaced steps from 0 to ``num_steps`` (fewer when they would repeat)."""
  return tuple(sorted({int(s) for s in np.round(np.linspace(0, num_steps, k))}))


def validate(config: ml_collections.ConfigDict) -> None:
  if config.model_name != "dcgan":
    raise ConfigError(f"gan trains the model 'dcgan'; got model_name {config.model_name!r}.")
  choose("generator_loss", config.generator_loss, GENERATOR_LOSSES)
  if not 0 <= config.beta1 < 1:
    raise ConfigError(f"beta1 (Adam's first-moment decay) must lie in [0, 1); got {config.beta1}.")
  if config.snapshots < 2 or config.snapshot_samples < 1:
    raise ConfigError(f"snapshots must be at least 2 (the first and the last step) and "
                      f"snapshot_samples at least 1; got {config.snapshots} and "
                      f"{config.snapshot_samples}.")


def init(config: ml_collections.ConfigDict, rng: jax.Array, batch: dict) -> State:
  """Both players for the images of ``batch['x']`` (B, S, S, C), and the step-0 snapshot."""
  x = np.asarray(batch["x"])
  if x.ndim != 4 or x.shape[1] != x.shape[2]:
    raise DataError(f"gan needs square images of shape (B, S, S, C); dataset {config.dataset!r} "
                    f"gives shape {x.shape}.")
  model = nets.build_model(config, size=x.shape[1], channels=x.shape[-1])
  g_key, d_key, z_key = jax.random.split(rng, 3)
  z = jax.random.normal(z_key, (config.snapshot_samples, model.latent_dim))

  def player(key, inputs, method):
    variables = nets.init_variables(model, key, inputs, train=False, method=method)
    return nets.State.create(apply_fn=model.apply, params=variables["params"],
                             tx=optim.optimizer(config, b1=config.beta1),
                             batch_stats=variables.get("batch_stats", {}))

  schedule = snapshot_schedule(config.num_steps, config.snapshots)
  state = State(generator=player(g_key, z[:1], "generate"),
                discriminator=player(d_key, to_model(jnp.asarray(x[:1])), "discriminate"),
                fixed_z=z,
                snapshots=jnp.zeros((len(schedule), *z.shape[:1], *x.shape[1:]), jnp.float32),
                snapshot_steps=-jnp.ones(len(schedule), jnp.int32))
  return _take_snapshot(state, 0, schedule)


def generate(g: nets.State, params, z: jax.Array, train: bool) -> tuple[jax.Array, Any]:
  """``(G(z) (B, S, S, C) in [-1, 1], G's BatchNorm statistics)`` for z (B, latent_dim)."""
  return nets.apply(g, params, z, train, method="generate")


def discriminate(d: nets.State, params, x: jax.Array, train: bool) -> tuple[jax.Array, Any]:
  """``(logits (B,), D's BatchNorm statistics)`` for images x (B, S, S, C) in [-1, 1]."""
  return nets.apply(d, params, x, train, method="discriminate")


def sample(state: State, z: jax.Array) -> jax.Array:
  """Images (B, S, S, C) in [0, 1] generated from z (B, latent_dim), BatchNorm in inference mode."""
  return to_image(generate(state.generator, state.generator.params, z, train=False)[0])


def discriminator_update(state: State, real: jax.Array, fake: jax.Array) -> tuple[State, dict]:
  """One optimizer step of D on ``discriminator_loss`` of real and fake images (B, S, S, C) in
  [-1, 1], each its own BatchNorm batch; the generator is untouched."""
  d = state.discriminator

  def loss_fn(params):
    real_logits, stats = discriminate(d, params, real, train=True)
    fake_logits, stats = discriminate(d.replace(batch_stats=stats), params, fake, train=True)
    return discriminator_loss(real_logits, fake_logits).mean(), (stats, real_logits, fake_logits)

  (loss, (stats, real_logits, fake_logits)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(d.params)
  metrics = {"loss": loss, "d_real": jax.nn.sigmoid(real_logits).mean(),
             "d_fake": jax.nn.sigmoid(fake_logits).mean()}
  return state.replace(discriminator=d.apply_gradients(grads=grads, batch_stats=stats)), metrics


def generator_update(state: State, z: jax.Array,
                     generator_loss: str = "non_saturating") -> tuple[State, dict]:
  """One optimizer step of G on its loss ``GENERATOR_LOSSES[generator_loss]`` of D(G(z)) for
  z (B, latent_dim); D (in training mode) is held fixed and untouched."""
  g, d = state.generator, state.discriminator

  def loss_fn(params):
    fake, stats = generate(g, params, z, train=True)
    logits = discriminate(d, d.params, fake, train=True)[0]
    return GENERATOR_LOSSES[generator_loss](logits).mean(), stats

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(g.params)
  g = g.apply_gradients(grads=grads, batch_stats=stats)
  return state.replace(generator=g), {"loss_g": loss}


def _take_snapshot(state: State, step, schedule: tuple[int, ...]) -> State:
  """Writes G(fixed_z) into the snapshot row of ``step`` when ``schedule`` holds it."""
  hits = jnp.asarray(schedule) == step

  def take(s: State) -> State:
    row = jnp.argmax(hits)
    return s.replace(snapshots=s.snapshots.at[row].set(sample(s, s.fixed_z)),
                     snapshot_steps=s.snapshot_steps.at[row].set(step))

  return jax.lax.cond(hits.any(), take, lambda s: s, state)


def train_step(config: ml_collections.ConfigDict, state: State,
               batch: dict, rng: jax.Array) -> tuple[State, dict]:
  """The discriminator's update, then the generator's, on one noise draw z ~ N(0, I) (B, latent);
  then the snapshot of the step reached, if it is one. Metrics: ``loss`` (D's), ``loss_g``,
  ``d_real`` and ``d_fake`` (D's mean probabilities on the real and the fake batch)."""
  real = to_model(batch["x"].astype(jnp.float32))
  z = jax.random.normal(rng, (real.shape[0], state.fixed_z.shape[1]))
  fake = generate(state.generator, state.generator.params, z, train=True)[0]
  state, d_metrics = discriminator_update(state, real, jax.lax.stop_gradient(fake))
  state, g_metrics = generator_update(state, z, config.generator_loss)
  schedule = snapshot_schedule(config.num_steps, config.snapshots)
  return _take_snapshot(state, state.step, schedule), {**d_metrics, **g_metrics}


def eval_noise(x: jax.Array, latent_dim: int) -> jax.Array:
  """Noise (B, latent_dim) for test images x (B, S, S, C): row i from ``fold_in(EVAL_KEY,
  hash(x_i))``, the same whatever batch the image sits in."""
  keys = image_keys(jax.random.key(EVAL_KEY), x)
  return jax.vmap(lambda k: jax.random.normal(k, (latent_dim,)))(keys)


def eval_step(config: ml_collections.ConfigDict, state: State, batch: dict) -> dict:
  """Per test image (B,): ``d_real`` = D(x), ``d_fake`` = D(G(z)) for its noise z, ``loss`` =
  D's loss and ``loss_g`` = G's loss on that pair (BatchNorm in inference mode)."""
  x = batch["x"].astype(jnp.float32)
  g, d = state.generator, state.discriminator
  fake = generate(g, g.params, eval_noise(x, state.fixed_z.shape[1]), train=False)[0]
  real_logits = discriminate(d, d.params, to_model(x), train=False)[0]
  fake_logits = discriminate(d, d.params, fake, train=False)[0]
  return {"loss": discriminator_loss(real_logits, fake_logits),
          "loss_g": GENERATOR_LOSSES[config.generator_loss](fake_logits),
          "d_real": jax.nn.sigmoid(real_logits), "d_fake": jax.nn.sigmoid(fake_logits)}


_sample = jax.jit(sample)


def draw(state: State, n: int, key: jax.Array) -> np.ndarray:
  """``n`` samples (n, S, S, C) in [0, 1], batch i from the noise N(0, I) of
  ``fold_in(key, i)`` (:func:`sample_quality.draw`)."""
  latent = state.fixed_z.shape[1]
  return sample_quality.draw(lambda k, b: _sample(state, jax.random.normal(k, (b, latent))), n,
                             key, SAMPLE_BATCH, "GAN samples")


def sample_metrics(config: ml_collections.ConfigDict, state: State, dataset) -> dict:
  """``fd``, ``confidence`` and ``classes`` of ``config.fd.num_samples`` samples (and the
  real-vs-real ``fd_real``), from :func:`sample_quality.evaluate`."""
  n = sample_quality.num_samples(config, dataset)
  if not n:
    return {}
  return sample_quality.evaluate(config, dataset, {"": draw(state, n, jax.random.key(SAMPLE_KEY))})


def figures(config: ml_collections.ConfigDict, state: State,
            outputs: dict, dataset, outdir: str, n: int = 64) -> None:
  """``samples_over_training.png`` (one row of G(fixed_z) per snapshot step, top to bottom),
  ``samples.png`` (``n`` samples beside ``n`` test images spread over the split, 8 to a row as
  the seed's grid) and
  ``discriminator.png`` (histograms of D's probabilities on test images and on fakes)."""
  taken = np.asarray(state.snapshot_steps) >= 0
  snaps, steps = np.asarray(state.snapshots)[taken], np.asarray(state.snapshot_steps)[taken]
  size = (0.5 * snaps.shape[1] + 1, 0.6 * len(steps) + 0.4)
  fig, axes = report.figure(len(steps), 1, figsize=size, squeeze=False)
  for ax, row, step in zip(axes[:, 0], snaps, steps):
    report.show_grid(ax, row, cols=len(row))
    ax.set_ylabel(f"step {step}", rotation=0, ha="right", va="center", fontsize=8)
  axes[0, 0].set_title("G(fixed z) over training")
  fig.tight_layout()
  fig.savefig(os.path.join(outdir, "samples_over_training.png"), dpi=110)

  real = dataset.test[np.unique(np.linspace(0, len(dataset.test) - 1, n).astype(int))]["x"]
  fig, axes = report.figure(1, 2, figsize=(9, 4.8))
  for ax, images, title in zip(axes, (draw(state, n, jax.random.key(SAMPLE_KEY)), real),
                               ("generated", "real (test split)")):
    report.show_grid(ax, images, cols=8)
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(os.path.join(outdir, "samples.png"), dpi=110)

  fig, ax = report.figure(figsize=(5, 3.4))
  bins = np.linspace(0, 1, 41)
  for key, name in (("d_real", "test images"), ("d_fake", "generated")):
    ax.hist(outputs[key], bins, alpha=0.6, label=f"{name} (mean {outputs[key].mean():.2f})")
  ax.set(xlabel="D(x): probability of real", ylabel="images", title="the discriminator at the end")
  ax.legend(fontsize=8, loc="upper center")
  fig.tight_layout()
  fig.savefig(os.path.join(outdir, "discriminator.png"), dpi=110)
