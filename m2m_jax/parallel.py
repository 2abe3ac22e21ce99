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


def maybe_initialize_distributed() -> None:
  """Calls ``jax.distributed.initialize()`` when the environment describes several processes.

  Cloud TPU pods and SLURM jobs are detected by JAX itself; otherwise set
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
  """
  if int(os.environ.get("JAX_NUM_PROCESSES", "1")) > 1 or "SLURM_NTASKS" in os.environ or \
      os.environ.get("TPU_WORKER_HOSTNAMES", "localhost").count(",") > 0:
    if not jax.distributed.is_initialized():
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
