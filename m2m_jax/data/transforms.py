"""Per-example transforms of a batch, written in the config as one string.

A pipeline is a string of ops joined by ``|``, the way big_vision writes its preprocessing::

    config.transforms = "crop(pad=2)|flip_lr|normalize(0.5, 0.25)|mixup(0.2)"

``config.transforms`` runs inside the compiled training step, on the batch before
``train_step`` sees it, with the step's key ``fold_in(train key, step)``: op ``k`` of the
pipeline draws what it needs for the whole batch (a window, a coin) from ``fold_in(key, k)``
(op 0 from ``key`` itself), and example ``i`` takes row ``i`` of the draw. A transformed batch is
so a pure function of (seed, step, index): a resumed run sees the very batches an
uninterrupted one saw, on any number of devices, and an example's transform does not depend
on the other examples of its batch. ``config.eval_transforms`` (deterministic ops only) runs
inside the evaluation step. An algorithm takes transforms when it says so
(``TAKES_TRANSFORMS``): its ``train_step`` then draws its own randomness from keys folded with
``ops.keys.STEP_KEY_OFFSET`` or more, never from ``rng`` itself.

Images are ``(H, W, C)`` fields of an example (``x``, and e.g. a segmentation mask ``y`` when
an op names it in ``keys``). Boxes are ``boxes`` (N, 4) rows ``(y0, x0, y1, x1)`` relative to
the image (in [0, 1]) with a boolean ``boxes_mask`` (N,) (see :func:`m2m_jax.data.pad`): a
resize leaves them where they are, a flip mirrors them, a crop moves and clips them and masks
out those it leaves no area of.
"""

import ast
import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from m2m_jax.errors import ConfigError, DataError

Example = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Op:
  """One transform: ``apply(drawn_i, example) -> example`` on each example, given row ``i`` of
  ``draw(key, batch)`` (None for a deterministic op); a batch op (mixup) is
  ``batch_fn(key, batch, num_classes) -> batch`` instead."""

  apply: Callable[[Any, Example], Example] | None = None
  draw: Callable[[jax.Array, Example], Any] | None = None
  batch_fn: Callable[[jax.Array, Example, int], Example] | None = None


def _size(height: int, width: int | None) -> tuple[int, int]:
  return height, height if width is None else width


def _images(name: str, example: Example, keys: Sequence[str]) -> tuple[int, int]:
  """(H, W) of the image fields ``keys`` of one example, refusing a field that is no image."""
  for k in keys:
    if k not in example or example[k].ndim != 3:
      shape = example[k].shape if k in example else "missing"
      raise DataError(f"{name} transforms images (H, W, C), but field {k!r} of the examples is "
                      f"{shape}.")
  return tuple(example[keys[0]].shape[:2])


def resize(height: int, width: int | None = None, method: str = "bilinear",
           keys: Sequence[str] = ("x",)) -> Op:
  """Each image of ``keys`` (H, W, C) -> (height, width, C) (``jax.image.resize``, antialiased
  when shrinking); boxes are relative, so they stay."""
  size = _size(height, width)

  def apply(drawn, ex):
    _images("resize", ex, keys)
    return {**ex, **{k: jax.image.resize(ex[k], (*size, ex[k].shape[-1]), method).astype(
        ex[k].dtype) for k in keys}}
  return Op(apply)


def _move_boxes(ex: Example, offset: jax.Array, old: tuple[int, int], new: tuple[int, int],
                pad: int) -> Example:
  """Boxes of an image ``old`` pixels high and wide, padded by ``pad`` and cropped to a
  ``new``-sized window at ``offset`` (dy, dx), relative to the window; masked when no area
  is left."""
  if "boxes" not in ex:
    return ex
  shift = jnp.tile(offset.astype(jnp.float32) - pad, 2)
  boxes = jnp.clip((ex["boxes"] * jnp.array(old * 2, jnp.float32) - shift)
                   / jnp.array(new * 2, jnp.float32), 0, 1)
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return {**ex, "boxes": boxes, "boxes_mask": ex["boxes_mask"] & (area > 0)}


def _crop_at(ex: Example, keys, offset: jax.Array, size: tuple[int, int], pad: int) -> Example:
  out = dict(ex)
  for k in keys:
    image = jnp.pad(ex[k], ((pad, pad), (pad, pad), (0, 0)))
    out[k] = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (*size, image.shape[-1]))
  return _move_boxes(out, offset, ex[keys[0]].shape[:2], size, pad)


def crop(height: int | None = None, width: int | None = None, pad: int = 0,
         keys: Sequence[str] = ("x",)) -> Op:
  """A random (height, width) window of each image of ``keys`` zero-padded by ``pad`` pixels
  on every side, the same window for all of them (default size: the image's own, so that
  ``crop(pad=s)`` shifts the image by up to s pixels each way, zero filling)."""

  def window(example):
    h, w = _images("crop", example, keys)
    size = (height or h, width or height or w)
    if size[0] > h + 2 * pad or size[1] > w + 2 * pad:
      raise ConfigError(f"crop{size} is larger than the {h}x{w} image padded by {pad}.")
    return size, (h + 2 * pad - size[0], w + 2 * pad - size[1])

  def draw(key, batch):
    _, high = window(jax.tree.map(lambda a: a[0], batch))
    return jax.random.randint(key, (len(batch[keys[0]]), 2), 0, jnp.array(high) + 1)

  def apply(offset, ex):
    size, _ = window(ex)
    return _crop_at(ex, keys, offset, size, pad)
  return Op(apply, draw)


def center_crop(height: int, width: int | None = None, keys: Sequence[str] = ("x",)) -> Op:
  """The central (height, width) window of each image of ``keys``."""
  size = _size(height, width)

  def apply(drawn, ex):
    h, w = _images("center_crop", ex, keys)
    if size[0] > h or size[1] > w:
      raise ConfigError(f"center_crop{size} is larger than the {h}x{w} image.")
    return _crop_at(ex, keys, jnp.array([(h - size[0]) // 2, (w - size[1]) // 2]), size, 0)
  return Op(apply)


def flip_lr(p: float = 0.5, keys: Sequence[str] = ("x",)) -> Op:
  """Mirrors each image of ``keys`` left-right with probability ``p``, and its boxes with it
  (x0, x1 -> 1 - x1, 1 - x0)."""

  def draw(key, batch):
    return jax.random.bernoulli(key, p, (len(batch[keys[0]]),))

  def apply(flip, ex):
    _images("flip_lr", ex, keys)
    out = {**ex, **{k: jnp.where(flip, ex[k][:, ::-1], ex[k]) for k in keys}}
    if "boxes" in ex:
      y0, x0, y1, x1 = jnp.moveaxis(ex["boxes"], -1, 0)
      out["boxes"] = jnp.where(flip, jnp.stack([y0, 1 - x1, y1, 1 - x0], -1), ex["boxes"])
    return out
  return Op(apply, draw)


def normalize(mean: float | Sequence[float], std: float | Sequence[float]) -> Op:
  """``x -> (x - mean) / std``, with one value or one per channel."""
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
  return Op(lambda drawn, ex: {**ex, "x": ((ex["x"] - mean) / std).astype(ex["x"].dtype)})


def mixup(alpha: float) -> Op:
  """Batch op: ``x <- lam x + (1 - lam) x[perm]`` and the labels ``y`` (B,) become the
  distributions ``lam onehot(y) + (1 - lam) onehot(y[perm])`` (B, K), one ``lam ~ Beta(alpha,
  alpha)`` and one permutation of the batch a step (Zhang et al., 2018)."""
  if alpha <= 0:
    raise ConfigError(f"mixup needs alpha > 0, got {alpha}.")

  def batch_fn(key, batch, num_classes):
    lam_key, perm_key = jax.random.split(key)
    lam = jax.random.beta(lam_key, alpha, alpha)
    perm = jax.random.permutation(perm_key, batch["x"].shape[0])
    x = batch["x"]
    y = jax.nn.one_hot(batch["y"], num_classes) if batch["y"].ndim == 1 else batch["y"]
    return {**batch, "x": (lam * x + (1 - lam) * x[perm]).astype(x.dtype),
            "y": lam * y + (1 - lam) * y[perm]}
  return Op(batch_fn=batch_fn)


OPS = {"resize": resize, "crop": crop, "center_crop": center_crop, "flip_lr": flip_lr,
       "normalize": normalize, "mixup": mixup}
RANDOM_OPS = ("crop", "flip_lr", "mixup")


def _parse_op(text: str) -> tuple[str, tuple, dict]:
  """``'name(1, b=2)'`` or ``'name'`` -> (name, args, kwargs), literals only."""
  try:
    node = ast.parse(text.strip(), mode="eval").body
    if isinstance(node, ast.Name):
      return node.id, (), {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      return (node.func.id, tuple(ast.literal_eval(a) for a in node.args),
              {k.arg: ast.literal_eval(k.value) for k in node.keywords})
  except (SyntaxError, ValueError):
    pass
  raise ConfigError(f"cannot read transform {text.strip()!r}: write name or name(args), e.g. "
                    "'crop(pad=2)'.")


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """Parsed ops; ``pipeline(key, batch, num_classes)`` transforms a batch of examples (the
  number of classes for mixup's one-hot labels). False when empty."""

  ops: tuple[Op, ...]

  def __call__(self, key: jax.Array, batch: Example, num_classes: int = 0) -> Example:
    for k, op in enumerate(self.ops):
      op_key = key if k == 0 else jax.random.fold_in(key, k)
      if op.batch_fn:
        batch = op.batch_fn(op_key, batch, num_classes)
      elif op.draw:
        batch = jax.vmap(op.apply)(op.draw(op_key, batch), batch)
      else:
        batch = jax.vmap(functools.partial(op.apply, None))(batch)
    return batch

  def __bool__(self) -> bool:
    return bool(self.ops)


def parse(spec: str, field: str = "transforms") -> Pipeline:
  """The pipeline of ``spec`` (ops joined by ``|``; '' is the identity). Refuses an unknown op
  or bad arguments with a ConfigError naming ``field``; for ``eval_transforms`` also a random
  op."""
  ops = []
  for text in filter(str.strip, spec.split("|")):
    name, args, kwargs = _parse_op(text)
    if name not in OPS:
      raise ConfigError(f"unknown op {name!r} in {field} {spec!r}; choose from "
                        f"{', '.join(sorted(OPS))}.")
    if field == "eval_transforms" and name in RANDOM_OPS:
      raise ConfigError(f"{field} must be deterministic, but {name!r} is random; use it in "
                        "transforms, and e.g. center_crop for evaluation.")
    try:
      ops.append(OPS[name](*args, **kwargs))
    except TypeError as e:
      raise ConfigError(f"bad arguments to {name!r} in {field} {spec!r}: {e}.") from None
  return Pipeline(tuple(ops))
