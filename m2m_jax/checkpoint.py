"""Checkpoints with orbax: save every N steps and at the end, keep the last K, restore the latest.

A checkpoint belongs to a config: ``config.json`` beside ``checkpoints/`` records it, and a
workdir whose checkpoint came from a different config is refused rather than silently resumed.
"""

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from m2m_jax.configlib import RESUMABLE_FIELDS
from m2m_jax.errors import ConfigError


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def check_same_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir that holds checkpoints of a config differing in a non-cadence field."""
  path = os.path.join(workdir, "config.json")
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not (os.path.exists(path) and os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir)):
    return
  with open(path) as f:
    old = _flatten(json.load(f))
  new = _flatten(json.loads(config.to_json()))
  for key in sorted(set(old) | set(new)):
    cadence = key in RESUMABLE_FIELDS or (key.startswith("evals.") and key.endswith(".every"))
    if cadence or old.get(key) == new.get(key):
      continue
    raise ConfigError(
        f"workdir {workdir!r} holds a checkpoint of a different config ({key} = "
        f"{old.get(key)!r} there, {new.get(key)!r} now); use another --workdir or delete it.")


class Checkpointer:
  """Saves and restores a pytree under ``<workdir>/checkpoints/<step>``, keeping the last ``keep``."""

  def __init__(self, workdir: str, keep: int):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self.manager.latest_step()

  def save(self, step: int, tree) -> None:
    """Saves ``tree`` as step ``step`` (asynchronously; a partial save is never restored)."""
    self.manager.save(step, args=ocp.args.StandardSave(tree))

  def restore(self, step: int, like):
    """Restores step ``step`` with the structure, dtypes and shardings of ``like``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
