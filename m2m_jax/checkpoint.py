"""Checkpoints with orbax: save every N steps and at the end, keep the last K, restore the
newest one that verifies.

A checkpoint is one orbax step directory, ``checkpoints/<step>``, holding two items:

- ``arrays``: the pytree's leaves packed into one flat array per dtype (orbax writes each array
  at a fixed cost of about 2 ms, and a diffusion state has some 600 leaves);
- ``manifest``: JSON naming each leaf's path, dtype and shape, and the CRC-32 of each packed
  array.

A save is committed (written, then renamed into place by orbax) before ``save`` returns, so a
run killed at any moment after it restarts from it. A restore checks the manifest against the
state it restores into and the checksums against the bytes it read; a checkpoint that is
unreadable, incomplete or corrupt is skipped, and the previous one is tried; once one restores,
each one skipped is named in a one-line warning and deleted. The checkpoints hold replicated state (data parallelism): every process packs its
own copy, and process 0 writes it.

A checkpoint belongs to a config: ``config.json`` beside ``checkpoints/`` records it, and a
workdir whose checkpoint came from a different config is refused rather than silently resumed.
"""

import json
import os
import shutil
import zlib
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from m2m_jax.configlib import RESUMABLE_FIELDS
from m2m_jax.errors import CheckpointError, ConfigError


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_same_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir that holds checkpoints of a config differing in a non-cadence field, or
  whose ``config.json`` cannot be read."""
  path = os.path.join(workdir, "config.json")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not (os.path.exists(path) and os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir)):
    return
  try:
    with open(path) as f:
      old = json.load(f)
    if not isinstance(old, dict):
      raise ValueError(f"it holds a {type(old).__name__}, not a config")
    old = _flatten(old)
  except (OSError, ValueError) as e:
    raise CheckpointError(
        f"{path} cannot be read ({type(e).__name__}: {e}), so the checkpoints beside it cannot be "
        f"matched to a config; restore the file, or use another --workdir.") from None
  new = _flatten(json.loads(config.to_json()))
  for key in sorted(set(old) | set(new)):
    cadence = key in RESUMABLE_FIELDS or (key.startswith("evals.") and key.endswith(".every"))
    if cadence or old.get(key) == new.get(key):
      continue
    raise ConfigError(
        f"workdir {workdir!r} holds a checkpoint of a different config ({key} = "
        f"{old.get(key)!r} there, {new.get(key)!r} now); use another --workdir or delete it.")


def _local(x) -> np.ndarray:
  """This process's copy of a replicated leaf, as NumPy."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)
  return np.asarray(x)


def _crc(a: np.ndarray) -> int:
  return zlib.crc32(np.ascontiguousarray(a).view(np.uint8))


def pack(tree) -> tuple[dict[str, np.ndarray], dict]:
  """``tree``'s leaves as one flat array per dtype, and the manifest that unpacks them."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  host = [_local(x) for _, x in leaves]
  arrays = {}
  for dtype in sorted({a.dtype.name for a in host}):
    arrays[dtype] = np.concatenate([a.ravel() for a in host if a.dtype.name == dtype])
  manifest = {
      "leaves": [{"path": jax.tree_util.keystr(p), "dtype": a.dtype.name, "shape": list(a.shape)}
                 for (p, _), a in zip(leaves, host)],
      "crc32": {dtype: _crc(a) for dtype, a in arrays.items()}}
  return arrays, manifest


def unpack(arrays: dict[str, np.ndarray], manifest: dict, like) -> Any:
  """The tree packed by :func:`pack`, checked against its manifest and laid out as ``like``
  (structure, dtypes, shapes and shardings). Raises ValueError naming the first mismatch."""
  for dtype, crc in manifest["crc32"].items():
    if dtype not in arrays or _crc(arrays[dtype]) != crc:
      raise ValueError(f"the {dtype} array fails its checksum")
  leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
  expected = [{"path": jax.tree_util.keystr(p), "dtype": np.dtype(x.dtype).name,
               "shape": list(np.shape(x))} for p, x in leaves]
  if expected != manifest["leaves"]:
    raise ValueError("its arrays are not those of this run's state")
  offsets = dict.fromkeys(arrays, 0)
  out = []
  for (_, x), spec in zip(leaves, expected):
    size, start = int(np.prod(spec["shape"])), offsets[spec["dtype"]]
    offsets[spec["dtype"]] = start + size
    value = arrays[spec["dtype"]][start:start + size].reshape(spec["shape"])
    out.append(jax.make_array_from_callback(value.shape, x.sharding, lambda idx, v=value: v[idx])
               if isinstance(x, jax.Array) else value)
  if any(offsets[d] != a.size for d, a in arrays.items()):
    raise ValueError("its arrays are longer than this run's state")
  return jax.tree_util.tree_unflatten(treedef, out)


class Checkpointer:
  """Saves and restores a pytree under ``<workdir>/checkpoints/<step>``, keeping the last ``keep``."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("arrays", "manifest"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False))

  def save(self, step: int, tree) -> None:
    """Saves ``tree`` as step ``step``, committed when this returns."""
    arrays, manifest = pack(tree)
    self.manager.save(step, args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(arrays), manifest=ocp.args.JsonSave(manifest)))

  def restore(self, step: int, like):
    """Restores step ``step`` laid out as ``like``; ValueError or an orbax error if it is
    unreadable, incomplete or corrupt."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        arrays=ocp.args.StandardRestore(), manifest=ocp.args.JsonRestore()))
    arrays = {k: np.asarray(v) for k, v in restored["arrays"].items()}
    return unpack(arrays, restored["manifest"], like)

  def restore_latest(self, like, at_most: int | None = None) -> tuple[int, Any] | None:
    """``(step, tree)`` of the newest checkpoint (of a step <= ``at_most``) that restores and
    verifies; each newer one, which does not, is named in a one-line warning and deleted, so
    that training can save that step again. None when there is no checkpoint; raises
    :class:`CheckpointError` when there are checkpoints and none restores (deleting nothing)."""
    steps = sorted((s for s in self.manager.all_steps() if at_most is None or s <= at_most),
                   reverse=True)
    failed = {}
    for step in steps:
      try:
        tree = self.restore(step, like)
      except Exception as e:  # noqa: BLE001  (any failure to read a checkpoint skips it)
        failed[step] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        continue
      for bad, reason in failed.items():
        logging.warning("checkpoint %d in %s cannot be restored (%s); deleted it and restored "
                        "checkpoint %d instead.", bad, self.directory, reason, step)
        shutil.rmtree(os.path.join(self.directory, str(bad)))
      if failed:
        self.manager.reload()
      return step, tree
    if failed:
      raise CheckpointError(
          f"no checkpoint in {self.directory} can be restored "
          f"({'; '.join(f'{s}: {r}' for s, r in failed.items())}); delete that directory to "
          f"train from the start.")
    return None

  def close(self) -> None:
    """Releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
