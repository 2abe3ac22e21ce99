"""The device mesh, shardings, and feeding host batches to it (single- or multi-host).

One mesh axis, ``'data'``: the batch is split over every device of every host and the state is
replicated, so a jitted step computes the same numbers on 1 CPU, 8 TPU cores or many hosts.
"""

import os
from concurrent import futures
from typing import Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from m2m_jax.errors import ConfigError


def maybe_initialize_distributed() -> None:
  """Calls ``jax.distributed.initialize()`` when the environment describes several processes.

  Cloud TPU pods and SLURM jobs are detected by JAX itself; otherwise set
  ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID``. JAX 0.10.2 reads only the first of these, so the other two are passed on
  here. On CPU the processes run their collectives over gloo (TCP), the default of
  ``jax_cpu_collectives_implementation``.
  """
  if jax.distributed.is_initialized():
    return
  num_processes = int(os.environ.get("JAX_NUM_PROCESSES", "1"))
  if num_processes > 1:
    if "JAX_COORDINATOR_ADDRESS" not in os.environ or \
        not os.environ.get("JAX_PROCESS_ID", "").isdigit():
      raise ConfigError(f"JAX_NUM_PROCESSES={num_processes} needs JAX_COORDINATOR_ADDRESS "
                        f"(host:port of process 0) and JAX_PROCESS_ID (0 to {num_processes - 1}).")
    jax.distributed.initialize(num_processes=num_processes,
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif "SLURM_NTASKS" in os.environ or \
      os.environ.get("TPU_WORKER_HOSTNAMES", "localhost").count(",") > 0:
    jax.distributed.initialize()


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices of all processes, axis ``'data'``."""
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


def sync_every_step(mesh: Mesh) -> bool:
  """Whether the loop must wait for each step before dispatching the next.

  On the CPU backend with several devices (``--xla_force_host_platform_device_count``), XLA
  (jaxlib 0.10.2) deadlocks in the all-reduce rendezvous when many multi-device steps are queued
  by async dispatch; one step in flight at a time avoids it. GPUs and TPUs run fully async.
  """
  return mesh.size > 1 and mesh.devices.flat[0].platform == "cpu"


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
  """A copy of a pytree on every device of ``mesh``, each leaf in buffers of its own (so that
  a state holding one array twice can be donated), built from each host's own copy without
  the cross-host equality check of ``jax.device_put``."""
  sharding = replicated(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda _: x)

  return jax.tree.map(put, tree)


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """The leading (batch) dimension is split over the ``'data'`` axis."""
  return NamedSharding(mesh, P("data"))


def host_slice(global_indices: np.ndarray) -> np.ndarray:
  """This process's contiguous share of a global batch's indices."""
  per_host = len(global_indices) // jax.process_count()
  start = jax.process_index() * per_host
  return global_indices[start:start + per_host]


def to_global(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's local numpy batch into one global array sharded over ``'data'``."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def to_host(tree):
  """Fetches a (possibly multi-host sharded) pytree of arrays as numpy arrays on every host."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def prefetch(make: Callable[[int], dict], steps: range, depth: int = 2) -> Iterator[dict]:
  """Yields ``make(step)`` for each step, computing up to ``depth`` ahead in a thread."""
  with futures.ThreadPoolExecutor(1) as pool:
    pending = [pool.submit(make, s) for s in steps[:depth]]
    for i in range(len(steps)):
      if i + depth < len(steps):
        pending.append(pool.submit(make, steps[i + depth]))
      yield pending.pop(0).result()
