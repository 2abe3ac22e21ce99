"""Faster R-CNN's training and inference steps, m2m_jax against torchvision (CPU).

Both run torchvision's ``fasterrcnn_resnet50_fpn`` configuration, the seed's detector: a
ResNet-50 with frozen BatchNorm and every layer trained, an FPN of 256 channels (P2-P6), the RPN
and the two-MLP box head of 1024, torchvision's detector defaults (``detector_config()``:
2000 / 2000 proposals a training image, 1000 / 1000 at test, 256 RPN and 512 box-head samples
an image, per-class NMS, 100 detections), on ``--batch-size`` random images of
``--image-size`` pixels with ``--boxes`` random boxes each of 20 classes (VOC's count). The
torchvision model is built with ``min_size = max_size = image size``, so its transform keeps
the images' size; m2m_jax's starts from the same weights, converted by ``from_torchvision``.

- Training step: SGD with momentum 0.9 and weight decay 5e-4 (the ``seed`` preset's recipe),
  at a learning rate of 1e-6, so that the weights, and with them the proposals torchvision
  keeps, stay where they started while the clock runs (at the preset's 5e-3 random weights on
  random images drift within a few steps to degenerate boxes, and torchvision's steps get
  cheaper as its proposals vanish), on the sum of the four losses; in JAX the algorithm's
  ``train_step`` jitted with the state donated, as the shared loop runs it; in PyTorch
  ``model(images, targets)``, ``backward``, ``step``.
- Inference step: the detections of the batch; ``detect`` jitted against ``model.eval()``
  under ``torch.no_grad()``.

The box head of m2m_jax runs on a static number of RoIs an image (``box_batch_size_per_image``
in training, sampled and filler; ``rpn_post_nms_top_n_test`` at test, every proposal slot);
torchvision's on those that survive its filters and NMS, which the table reports beside it (on
random weights and images, far fewer than the slots). JAX compiles on its first call (timed
apart); steady state is the best of ``--repeats`` runs of
``--steps`` steps, the frameworks interleaved. torchvision needs its compiled ``nms`` and
``roi_align`` (a torchvision wheel built for the installed torch).

  python bench/detection.py [--image-size 320] [--batch-size 2] [--json detection.json]
"""

import argparse
import functools
import os
import tempfile
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch

from m2m_jax import configlib, registry, report
from m2m_jax.algorithms import faster_rcnn

from train_step import best_seconds, environment, seconds  # bench/, the script's directory

NUM_CLASSES = 20  # VOC's
LEARNING_RATE = 1e-6


def torchvision_model(image_size: int) -> torch.nn.Module:
  """fasterrcnn_resnet50_fpn's configuration with random weights, frozen BatchNorm and every
  backbone layer trained, for images of ``image_size``."""
  import torchvision
  from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
  settings = faster_rcnn.detector_config().to_dict()
  del settings["anchor_sizes"], settings["aspect_ratios"]  # torchvision's defaults, the same
  torch.manual_seed(0)
  resnet = torchvision.models.resnet50(norm_layer=torchvision.ops.FrozenBatchNorm2d)
  backbone = _resnet_fpn_extractor(resnet, trainable_layers=5)
  return torchvision.models.detection.FasterRCNN(
      backbone, NUM_CLASSES + 1, min_size=image_size, max_size=image_size, **settings)


def random_batch(batch_size: int, image_size: int, boxes: int) -> dict:
  """Images (B, S, S, 3) uniform in [0, 1] and ``boxes`` boxes an image, (y0, x0, y1, x1)
  relative as tfds lays them, of 0.1 to 0.5 of the side, with labels in 0 .. 19."""
  rng = np.random.default_rng(0)
  size = rng.uniform(0.1, 0.5, (batch_size, boxes, 2))
  corner = rng.uniform(0, 1 - size)
  return {"x": rng.random((batch_size, image_size, image_size, 3), dtype=np.float32),
          "boxes": np.concatenate([corner, corner + size], -1).astype(np.float32),
          "boxes_mask": np.ones((batch_size, boxes), bool),
          "labels": rng.integers(0, NUM_CLASSES, (batch_size, boxes), dtype=np.int32)}


class Jax:
  """m2m_jax's training and inference steps (calling one runs n steps)."""

  def __init__(self, weights: str, batch: dict):
    self.config = c = configlib.load("faster_rcnn", "seed")
    c.pretrained, c.num_classes, c.batch_size = weights, NUM_CLASSES, len(batch["x"])
    c.learning_rate = LEARNING_RATE
    self.algorithm = registry.get(c.algorithm)
    self.batch = {k: jnp.asarray(v) for k, v in batch.items()}
    self.state = self.algorithm.init(c, jax.random.key(0), self.batch)
    self.num_params = sum(p.size for p in jax.tree.leaves(self.state.params))
    self.step = jax.jit(functools.partial(self.algorithm.train_step, c), donate_argnums=0)
    self.detect = jax.jit(functools.partial(self.algorithm.detect, c))
    self.rng = jax.random.key(1)

  def rois(self, step: str) -> int:
    """The box head's RoIs an image, a static count: sampled (with filler) in training, every
    proposal slot at test."""
    d = self.config.detector
    return d.box_batch_size_per_image if step == "train" else d.rpn_post_nms_top_n_test

  def train(self, n: int) -> None:
    for _ in range(n):
      self.state, metrics = self.step(self.state, self.batch, self.rng)
    jax.block_until_ready((self.state, metrics))

  def infer(self, n: int) -> None:
    for _ in range(n):
      found = self.detect(self.state, self.batch["x"])
    jax.block_until_ready(found)


class Torch:
  """torchvision's training and inference steps (calling one runs n steps)."""

  def __init__(self, model: torch.nn.Module, batch: dict):
    self.model = model
    self.optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9,
                                     weight_decay=5e-4)
    self.num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    s = batch["x"].shape[1]
    self.images = list(torch.from_numpy(batch["x"].transpose(0, 3, 1, 2).copy()))
    xyxy = torch.from_numpy(batch["boxes"][..., [1, 0, 3, 2]] * s)
    self.targets = [{"boxes": b, "labels": torch.from_numpy(l).long() + 1}
                    for b, l in zip(xyxy, batch["labels"])]
    self.rois = 0  # RoIs an image in the box head's last call
    model.roi_heads.box_head.register_forward_hook(
        lambda module, inputs, output: setattr(self, "rois", len(output) / len(self.images)))

  def train(self, n: int) -> None:
    self.model.train()
    for _ in range(n):
      self.optimizer.zero_grad()
      loss = sum(self.model(self.images, self.targets).values())
      loss.backward()
      self.optimizer.step()

  def infer(self, n: int) -> None:
    self.model.eval()
    with torch.no_grad():
      for _ in range(n):
        self.model(self.images)


def bench(args: argparse.Namespace) -> list[dict]:
  """Each step's compile / first-step seconds and steady images per second."""
  batch = random_batch(args.batch_size, args.image_size, args.boxes)
  model = torchvision_model(args.image_size)
  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "frcnn.pt")
    torch.save(model.state_dict(), weights)
    ours = Jax(weights, batch)
  theirs = Torch(model, batch)
  rows = []
  for step in ("train", "infer"):
    runs = getattr(ours, step), getattr(theirs, step)
    compile_s, first_s = seconds(runs[0], 1), seconds(runs[1], 1)
    jax_s, torch_s = best_seconds(runs, args.steps, args.repeats)
    jax_rate, torch_rate = (args.steps * args.batch_size / t for t in (jax_s, torch_s))
    rows.append({"model": f"faster_rcnn_r50_fpn_{step}", "step": step,
                 "image_size": args.image_size, "batch_size": args.batch_size,
                 "params": ours.num_params, "torch_params": theirs.num_params,
                 "steps": args.steps, "repeats": args.repeats,
                 "jax_rois_per_image": ours.rois(step), "torch_rois_per_image": theirs.rois,
                 "jax_images_per_s": jax_rate, "torch_images_per_s": torch_rate,
                 "ratio_jax_over_torch": jax_rate / torch_rate, "jax_compile_s": compile_s,
                 "torch_first_step_s": first_s})
  return rows


def table(rows: list[dict]) -> str:
  head = (f"{'step':<7}{'image':>6}{'batch':>6}{'JAX img/s':>11}{'torch img/s':>13}"
          f"{'JAX/torch':>10}{'JAX compile s':>15}{'RoIs JAX / torch':>18}")
  return "\n".join([head, "-" * len(head)] + [
      f"{r['step']:<7}{r['image_size']:>6}{r['batch_size']:>6}{r['jax_images_per_s']:>11.2f}"
      f"{r['torch_images_per_s']:>13.2f}{r['ratio_jax_over_torch']:>10.2f}"
      f"{r['jax_compile_s']:>15.1f}{r['jax_rois_per_image']:>11} / "
      f"{r['torch_rois_per_image']:<5.0f}" for r in rows])


def main(argv: Sequence[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--image-size", type=int, default=320, help="a multiple of 32")
  p.add_argument("--batch-size", type=int, default=2)
  p.add_argument("--boxes", type=int, default=4, help="true boxes an image")
  p.add_argument("--steps", type=int, default=3, help="steps per repeat")
  p.add_argument("--repeats", type=int, default=3, help="best of this many")
  p.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                 help="torch.set_num_threads (default: every core)")
  p.add_argument("--json", metavar="PATH", help="also write the results here")
  args = p.parse_args(argv)
  torch.set_num_threads(args.torch_threads)
  import torchvision
  if not torchvision.extension._has_ops():
    raise SystemExit(f"torchvision {torchvision.__version__} cannot load its compiled nms and "
                     f"roi_align beside torch {torch.__version__}; install the torchvision built "
                     f"for this torch (torch 2.14.1 with torchvision 0.29.1, for example).")
  env = {**environment(), "torchvision": torchvision.__version__}
  print(f"jax {env['jax']}, torch {env['torch']} on {env['torch_threads']} threads, "
        f"{env['cpu_count']} cores, load average {env['load_average_1min']:.2f}")
  rows = bench(args)
  print(table(rows))
  results = {"environment": {**env, "load_average_1min_after": os.getloadavg()[0]},
             "results": rows}
  if args.json:
    report.write_json(args.json, results)
  return results


if __name__ == "__main__":
  main()
