"""The one training loop: ``train_and_evaluate(config, workdir) -> summary``.

mesh -> data -> ``algorithm.init`` -> restore the latest checkpoint -> loop {jitted
``algorithm.train_step`` on a batch sharded over ``'data'``; log, run the evaluators of
``config.evals`` and checkpoint at their cadences} -> every evaluator -> figures ->
``summary.json``.

The loop knows nothing of any one algorithm (see :mod:`m2m_jax.registry` for the contract).
Batch ``step`` holds the examples ``data.batch_indices(step, ...)`` and its randomness is
``fold_in(key, step)``, so a run killed at any point and restarted ends bit-for-bit where an
uninterrupted run ends: the checkpoint holds the state and the metric accumulator, and rows of
``metrics.jsonl`` written after it are dropped and written again.
"""

import functools
import os
import time
import types
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from m2m_jax import checkpoint, configlib, data, evaluators, parallel, registry, report
from m2m_jax import workdir as workdir_lib
from m2m_jax.data import transforms
from m2m_jax.errors import ConfigError, TrainingDiverged
from m2m_jax.ops import optim


@flax.struct.dataclass
class Accumulator:
  """Train metrics summed since the last log point, and the first step whose metrics were not finite."""

  sums: dict
  count: jnp.ndarray
  bad_step: jnp.ndarray

  @classmethod
  def zeros(cls, metrics_shape: dict) -> "Accumulator":
    return cls({k: jnp.zeros((), jnp.float32) for k in metrics_shape},
               jnp.zeros((), jnp.int32), -jnp.ones((), jnp.int32))

  def add(self, metrics: dict, step: jnp.ndarray) -> "Accumulator":
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
    bad = jnp.where((self.bad_step < 0) & ~finite, step, self.bad_step)
    sums = {k: self.sums[k] + jnp.mean(metrics[k]).astype(jnp.float32) for k in self.sums}
    return Accumulator(sums, self.count + 1, bad)


def resolve(config: ml_collections.ConfigDict, dataset: data.Dataset,
            num_devices: int = 1) -> ml_collections.ConfigDict:
  """A copy of ``config`` with its derived fields set.

  ``batch_size = 0`` becomes the whole training set, rounded down to a multiple of
  ``num_devices`` (at most ``num_devices - 1`` examples sit out each step); ``num_steps = 0``
  is derived from ``num_epochs`` (both 0: no training step, the initial, pretrained state is
  evaluated); ``num_classes`` (and for text, ``vocab_size`` and
  ``eot_id``) come from the dataset.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  if config.batch_size == 0:
    config.batch_size = len(dataset.train) // num_devices * num_devices
  if config.num_steps <= 0 and config.num_epochs > 0:
    steps_per_epoch = len(dataset.train) // config.batch_size
    config.num_steps = max(1, round(config.num_epochs * steps_per_epoch))
  config.num_classes = dataset.num_classes or 0
  if dataset.tokenizer is not None:
    config.vocab_size, config.eot_id = dataset.tokenizer.vocab_size, dataset.tokenizer.eot_id
  if config.profile_steps and config.profile_steps[1] > config.num_steps:
    raise ConfigError(f"profile_steps {tuple(config.profile_steps)} end past the run's last "
                      f"step, {config.num_steps}.")
  return config


def evaluate(algorithm, config: ml_collections.ConfigDict, eval_step, state, split: data.Split,
             mesh) -> tuple[dict, dict]:
  """Runs the jitted ``eval_step(state, batch)`` over a whole split in batches of
  ``config.eval_batch_size``, padded to a multiple of the device count.

  Returns:
    (outputs, metrics): the per-example outputs concatenated over the split (padding dropped)
    and the split's metrics from ``algorithm.summarize(config, outputs)`` (default: means of
    float outputs).
  """
  n, chunks = len(split), []
  batch_size = -(-config.eval_batch_size // mesh.size) * mesh.size
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    valid = idx < n
    out = parallel.to_host(eval_step(state, parallel.to_global(
        split[parallel.host_slice(np.where(valid, idx, 0))], mesh)))
    chunks.append({k: np.asarray(v)[valid] for k, v in out.items()})
  outputs = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
  if hasattr(algorithm, "summarize"):
    return outputs, algorithm.summarize(config, outputs)
  return outputs, {k: float(v.mean()) for k, v in outputs.items()
                   if np.issubdtype(v.dtype, np.floating)}


def run_evaluators(algorithm, eval_step, config: ml_collections.ConfigDict, state,
                   dataset: data.Dataset, mesh, names) -> tuple[dict, dict | None]:
  """Runs the evaluators ``names`` of ``config.evals`` (:mod:`m2m_jax.evaluators`).

  Returns:
    (rows, outputs): each metrics.jsonl row's merged metrics (``{'test': {...}}``), and the
    per-example outputs of the last ``metrics`` evaluator of the test split (None if none ran).
  """
  rows, outputs = {}, None
  for name in names:
    entry = config.evals[name]
    if entry.kind == "metrics":
      out, metrics = evaluate(algorithm, config, eval_step, state, getattr(dataset, entry.split),
                              mesh)
      if entry.split == "test":
        outputs = out
    else:
      metrics = getattr(algorithm, evaluators.HOOKS[entry.kind])(config, state, dataset)
    rows.setdefault(evaluators.row(entry.split), {}).update(metrics)
  return rows, outputs


def _num_params(state: Any) -> int:
  """The leaves under every field or key named ``params`` (a GAN's two players; not an EMA
  copy, not the optimizer's moments), or every leaf of a state without one (centroids, trees)."""
  leaves = jax.tree_util.tree_leaves_with_path(state)
  named = [x for path, x in leaves
           if any(getattr(k, "name", getattr(k, "key", None)) == "params" for k in path)]
  return int(sum(np.size(x) for x in named or [x for _, x in leaves]))


# The loop's own settings: how often it logs, evaluates and saves, and the evaluation batch.
# The steps never see them, so changing them (allowed on resume) reuses the compiled steps.
LOOP_FIELDS = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
               "eval_batch_size", "evals", "divergence_factor", "profile_steps")


def step_config(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """The config the steps see: ``config`` less ``LOOP_FIELDS``, frozen (hashable)."""
  return ml_collections.FrozenConfigDict(
      {k: v for k, v in config.to_dict().items() if k not in LOOP_FIELDS})


def programs(algorithm, config: ml_collections.ConfigDict, mesh) -> types.SimpleNamespace:
  """The loop's jitted programs of ``algorithm``'s steps for ``config`` on ``mesh``.

  ``metrics(state, batch, rng)`` is ``train_step(config, state, transformed batch, rng)``, the
  batch transformed by ``config.transforms`` (:mod:`m2m_jax.data.transforms`) drawing from
  ``rng``; ``train(state, acc, batch, rng, step)`` runs it with
  ``fold_in(rng, step)`` and adds its metrics to the accumulator; ``eval(state, batch)`` is
  ``eval_step(config, state, batch)`` on the batch transformed by ``config.eval_transforms``;
  ``transform(batch, rng)`` is the training transform alone (``None`` without one). The steps
  are given :func:`step_config`: their config values are constants of the compiled program,
  never fields of the state. Made once for equal step configs, so another run in this process
  (a resumed run, a notebook's second run) reuses their traces and compiled code wherever its
  state and batches have the same structure and shapes.
  """
  return _programs(algorithm.train_step, algorithm.eval_step, step_config(config), mesh)


@functools.lru_cache(maxsize=8)
def _programs(train_step: Callable, eval_step: Callable, config: ml_collections.FrozenConfigDict,
              mesh) -> types.SimpleNamespace:
  repl = parallel.replicated(mesh)
  train_pp = transforms.parse(config.get("transforms", ""))
  eval_pp = transforms.parse(config.get("eval_transforms", ""), "eval_transforms")
  num_classes = config.get("num_classes", 0)

  def transform(batch, rng):
    return train_pp(rng, batch, num_classes)

  def train_on(state, batch, rng):
    return train_step(config, state, transform(batch, rng) if train_pp else batch, rng)

  metrics = jax.jit(train_on)  # traced once: by the loop's eval_shape, reused inside step_fn

  def step_fn(state, acc, batch, rng, step):
    state, step_metrics = metrics(state, batch, jax.random.fold_in(rng, step))
    return state, acc.add(step_metrics, step)

  def eval_on(state, batch):
    return eval_step(config, state, eval_pp(jax.random.key(0), batch) if eval_pp else batch)

  return types.SimpleNamespace(
      train=jax.jit(step_fn, donate_argnums=(0, 1), out_shardings=(repl, repl)),
      metrics=metrics, eval=jax.jit(eval_on),
      transform=jax.jit(transform) if train_pp else None)


def clear_compiled() -> None:
  """Forgets every program compiled in this process: the loop's, the models' initialisers and
  jax's own caches (a long-lived process, e.g. a test worker, that compiled thousands)."""
  from m2m_jax.algorithms import nets
  _programs.cache_clear()
  nets.clear_compiled()
  jax.clear_caches()


def first_batch(config: ml_collections.ConfigDict, dataset: data.Dataset) -> np.ndarray:
  """The indices of the training examples of step 0, which ``algorithm.init`` is given (a
  resolved ``config``: see :func:`resolve`)."""
  return data.batch_indices(0, num_examples=len(dataset.train), batch_size=config.batch_size,
                            seed=config.seed)


def _initial(algorithm, config: ml_collections.ConfigDict, dataset: data.Dataset, mesh):
  """``(state, accumulator, metrics_shape, train_rng)`` before step 0, replicated over
  ``mesh``: the state from ``algorithm.init`` on batch 0 as step 0 transforms it (key
  ``split(key(seed))[0]``), a zero accumulator, and the key of training (``split(key(seed))[1]``,
  folded with each step)."""
  first = first_batch(config, dataset)
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  compiled = programs(algorithm, config, mesh)
  examples = dataset.train[first]
  if compiled.transform:
    examples = compiled.transform(examples, jax.random.fold_in(train_rng, 0))
  state = parallel.replicate(algorithm.init(config, init_rng, examples), mesh)
  batch = parallel.to_global(dataset.train[parallel.host_slice(first)], mesh)
  metrics_shape = compiled.metrics.eval_shape(state, batch, train_rng)[1]
  return (state, parallel.replicate(Accumulator.zeros(metrics_shape), mesh), metrics_shape,
          train_rng)


def load_state(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """The trained state of ``config`` from the newest checkpoint in ``workdir`` (the state that
  ``train_and_evaluate(config, workdir)`` left there), replicated over all devices.

  For using a trained model, e.g. a classifier's logits:
  ``state = load_state(config, workdir); state.apply_fn({'params': state.params}, x)``.
  """
  mesh = parallel.make_mesh()
  configlib.validate(config, jax.device_count())
  algorithm = registry.get(config.algorithm)
  dataset = data.load(config.dataset, **config.data)
  config = resolve(config, dataset, jax.device_count())
  checkpoint.check_same_config(workdir, config)
  state, acc, _, _ = _initial(algorithm, config, dataset, mesh)
  ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
  try:
    found = ckpt.restore_latest(_saved(state, acc, np.float32(np.nan)))
    if found is None:
      raise ConfigError(f"workdir {workdir!r} holds no checkpoint to load; train there first.")
    return found[1]["state"]
  finally:
    ckpt.close()


def _saved(state, acc, first_loss: np.float32) -> dict:
  """What a checkpoint holds: the state, the metrics accumulated since the last log, and the
  first training loss logged (NaN until then), which the divergence check compares with."""
  return {"state": state, "acc": acc, "first_loss": first_loss}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains ``config.algorithm`` on ``config.dataset``, writing everything under ``workdir``.

  Returns:
    The summary also written to ``workdir/summary.json``: held-out metrics (``'test'``),
    steps, wall time, examples per second, device kind and count.
  """
  wall_start = time.time()
  parallel.maybe_initialize_distributed()
  mesh = parallel.make_mesh()
  configlib.validate(config, jax.device_count())
  algorithm = registry.get(config.algorithm)
  dataset = data.load(config.dataset, **config.data)
  config = resolve(config, dataset, jax.device_count())
  lead = jax.process_index() == 0
  workdir_lib.prepare(workdir)
  with workdir_lib.locked(workdir, lead):
    return _train_and_evaluate(config, workdir, algorithm, dataset, mesh, wall_start)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, algorithm,
                        dataset: data.Dataset, mesh, wall_start: float) -> dict:
  """The body of :func:`train_and_evaluate`, in a workdir it holds the lock of."""
  total, batch_size, lead = config.num_steps, config.batch_size, jax.process_index() == 0
  checkpoint.check_same_config(workdir, config)
  if lead:
    report.write_json(os.path.join(workdir, "config.json"), config.to_dict())
  log = report.MetricsLog(os.path.join(workdir, "metrics.jsonl"))
  tensorboard_dir = os.path.join(workdir, "tensorboard")

  def indices(step: int) -> np.ndarray:
    return data.batch_indices(step, num_examples=len(dataset.train), batch_size=batch_size,
                              seed=config.seed)

  def global_batch(step: int) -> dict:
    return parallel.to_global(dataset.train[parallel.host_slice(indices(step))], mesh)

  state, acc, metrics_shape, train_rng = _initial(algorithm, config, dataset, mesh)

  evaluators.prepare(config, algorithm, dataset)
  ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints)
  first_loss = np.float32(np.nan)  # the first training loss logged, kept in each checkpoint
  start, found = 0, ckpt.restore_latest(_saved(state, acc, first_loss), at_most=total)
  if found:
    start, saved = found
    state, acc, first_loss = saved["state"], saved["acc"], saved["first_loss"]
  if lead:  # rows logged after the checkpoint are written again; so are a finished run's
    log.truncate_after(start, drop_evaluations_at_end=start == total)  # final evaluations
    log.events = report.Events(
        tensorboard_dir, start, kept=log.read(),
        learning_rate=optim.schedule(config) if getattr(algorithm, "SCHEDULED", False) else None)
    log.events.text("config", config.to_json_best_effort(indent=2), start)
  first_traced, last_traced = config.profile_steps or (0, 0)
  tracing = False

  compiled = programs(algorithm, config, mesh)
  eval_step = compiled.eval
  last_saved = start

  def diverged(what: str, hint: str = "") -> TrainingDiverged:
    if not last_saved:
      return TrainingDiverged(f"{what}; stopped; no checkpoint was saved before it{hint}.")
    return TrainingDiverged(f"{what}; stopped, keeping the last good checkpoint (step "
                            f"{last_saved}) in {workdir}/checkpoints{hint}.")

  def check_finite(acc_host) -> None:
    if int(acc_host.bad_step) >= 0:
      raise diverged(f"training metrics became NaN or inf at step {int(acc_host.bad_step) + 1}")

  def check_loss(step: int, loss: float | None) -> None:
    """Stops a loss that grew past ``divergence_factor`` times the first one logged."""
    factor = config.divergence_factor
    if factor and loss is not None and first_loss > 0 and loss > factor * first_loss:
      raise diverged(f"the training loss {loss:.4g} at step {step} is over {factor:g} times the "
                     f"first one logged ({float(first_loss):.4g})",
                     " (config.divergence_factor; 0 never stops)")

  cadences = evaluators.cadences(config)
  desc = f"{config.algorithm}:{config.model_name or '-'} on {config.dataset}"
  bar = report.progress(total, start, desc)
  compile_time, timed_from = 0.0, None
  sync_each_step = parallel.sync_every_step(mesh)
  try:  # the progress bar and the checkpoint manager close even when training stops early
    batches = parallel.prefetch(global_batch, range(start, total))
    for step, batch in zip(range(start, total), batches):
      if lead and step + 1 == first_traced:
        jax.profiler.start_trace(tensorboard_dir)
        tracing = True
      t = time.time()
      state, acc = compiled.train(state, acc, batch, train_rng, np.int32(step))
      if sync_each_step or timed_from is None:
        jax.block_until_ready(acc)
      if timed_from is None:
        compile_time, timed_from = time.time() - t, (time.time(), step + 1)
      done = step + 1
      if tracing and done == last_traced:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        tracing = False
      at_log = done % config.log_every == 0 or done == total
      at_ckpt = done % config.checkpoint_every == 0 or done == total
      if at_log or at_ckpt:
        acc_host = parallel.to_host(acc)
        check_finite(acc_host)
      if at_log:
        train_metrics = {k: float(v) / int(acc_host.count) for k, v in acc_host.sums.items()}
        if lead:
          log.write(done, "train", train_metrics)
        if np.isnan(first_loss) and "loss" in train_metrics:
          first_loss = np.float32(train_metrics["loss"])
        check_loss(done, train_metrics.get("loss"))
        bar.set_postfix({k: f"{v:.4g}" for k, v in train_metrics.items()}, refresh=False)
        acc = parallel.replicate(Accumulator.zeros(metrics_shape), mesh)
      due = [name for name, every in cadences.items() if done % every == 0 and done != total]
      if due:
        rows, _ = run_evaluators(algorithm, eval_step, config, state, dataset, mesh, due)
        for split, metrics in rows.items():
          if lead:
            log.write(done, split, metrics)
      if at_ckpt:  # last, so that everything logged up to `done` is committed with it
        if lead:
          log.events.flush()
        ckpt.save(done, _saved(state, acc, first_loss))
        last_saved = done
      bar.update(1)
    jax.block_until_ready(state)
    train_end = time.time()
  finally:
    if tracing:
      jax.profiler.stop_trace()
    if lead:
      log.events.flush()
    bar.close()
    ckpt.close()

  final, outputs = run_evaluators(algorithm, eval_step, config, state, dataset, mesh,
                                  list(config.evals))
  if outputs is None and hasattr(algorithm, "figures"):  # every process takes part
    outputs, _ = evaluate(algorithm, config, eval_step, state, dataset.test, mesh)
  timed_steps = total - timed_from[1] if timed_from else 0
  timed_seconds = train_end - timed_from[0] if timed_from else 0.0
  summary = {
      "algorithm": config.algorithm,
      "model_name": config.model_name,
      "dataset": config.dataset,
      "test": final.get("test", {}),
      **{split: metrics for split, metrics in final.items() if split != "test"},
      "steps": total,
      "resumed_from_step": start,
      "num_params": _num_params(state),
      "wall_time_s": round(time.time() - wall_start, 2),
      "compile_time_s": round(compile_time, 2),
      "examples_per_sec": round(timed_steps * batch_size / timed_seconds, 1) if timed_steps else None,
      "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "process_count": jax.process_count(),
      "dtype": config.dtype,
  }
  if lead:
    for split, metrics in final.items():
      log.write(total, split, metrics)
    figdir = os.path.join(workdir, "figures")
    report.plot_curves(log.read(), os.path.join(figdir, "curves.png"))
    if hasattr(algorithm, "figures"):
      algorithm.figures(config, state, outputs, dataset, figdir)
    log.events.figures(figdir, total)
    log.events.close()
    report.write_json(os.path.join(workdir, "summary.json"), summary)
  return summary
