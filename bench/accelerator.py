"""Training-step throughput and MFU of the ImageNet-shaped transformers (and Faster R-CNN's
ResNet-50-FPN) on an accelerator.

Runs the shared loop's compiled training step (``train.programs``: the config's transforms, its
AdamW recipe, the state donated) of ``vit:b16`` (ViT-B/16), ``swin:swin_t`` (Swin-T) and
``clip:coco`` (OpenAI's ViT-B/32 CLIP, configs/clip.py's ``coco`` preset, on one random
77-token caption an image) at 224x224, and ``faster_rcnn:voc2007`` (torchvision's
``fasterrcnn_resnet50_fpn``, 20 classes, at 512x512 with 4 random boxes an image), in bfloat16
(parameters float32) on a random batch (``--batch-size``: 128 an image model, 256 for CLIP, 8
for Faster R-CNN; global, over every device). For each it reports the compile seconds, images
per second (best of ``--repeats`` runs of ``--steps`` steps), and the model FLOPs utilisation:

    MFU = 3 x (forward FLOPs of one batch) / (seconds per step) / (the chip's peak bf16 FLOP/s)

with the forward FLOPs counted by XLA (``cost_analysis``) of the model's apply alone (CLIP's
both towers, not the loss's B x B logits), and the backward taken as twice the forward, the
usual convention (PaLM, appendix B); Faster R-CNN gets none (its box head's work is set by the
sampled proposals, not by one forward pass of the model). The peaks are dense bf16 figures from
the vendors' data sheets (``PEAK_BF16``); an unknown chip gets no MFU.

    python bench/accelerator.py --json accelerator.json          # on the GPU or TPU
    python bench/accelerator.py --quick                          # a CPU smoke run, tiny models
"""

import argparse
import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m2m_jax import configlib, parallel, registry, report, train

MODELS = {"vit_b16": ("vit", "b16"), "swin_t": ("swin", "swin_t"), "clip_b32": ("clip", "coco"),
          "frcnn_r50_fpn": ("faster_rcnn", "voc2007")}
BATCH_SIZE = {"clip_b32": 256, "frcnn_r50_fpn": 8}  # the default global batch where not 128
IMAGE_SIZE = {"faster_rcnn": (512, 64)}  # (full, quick) where not (224, 32)
DETECTION_CLASSES, DETECTION_BOXES = 20, 4  # VOC's classes; true boxes an image
CLIP_VOCAB, CLIP_CONTEXT = 49408, 77  # OpenAI's BPE (<eot> the last id) and context
# Dense bf16 peak FLOP/s by jax's device_kind (NVIDIA and Google data sheets).
PEAK_BF16 = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H200": 989e12,
             "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12,
             "NVIDIA L4": 121e12, "Tesla T4": 65e12, "TPU v2": 45e12, "TPU v3": 123e12,
             "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v6 lite": 918e12}


def bench_config(name: str, preset: str, batch_size: int, quick: bool):
  """The preset in bfloat16 at ``batch_size`` (``quick``: a tiny model of its family)."""
  config = configlib.load(name, preset)
  if name == "clip":  # what the coco_captions dataset would set
    config.vocab_size, config.eot_id = CLIP_VOCAB, CLIP_VOCAB - 1
  if quick:
    config = configlib.tiny(config)
    config.model = {k: v for k, v in config.model.items() if k != "variant"}
    config.model.update({"vit": dict(patch_size=8, width=8, depth=1, num_heads=2, mlp_dim=16),
                         "swin": dict(embed_dim=8, depths=(2,), num_heads=(2,),
                                      window_size=4),
                         "clip": dict(patch_size=8),
                         "faster_rcnn": {}}[name])  # tiny() caps the rest
    if name == "faster_rcnn":  # fewer proposals and samples than torchvision's thousands
      config.detector.update(rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20,
                             box_batch_size_per_image=16)
  config.dtype = "bfloat16"
  config.batch_size = batch_size
  return config


def random_batch(config, image_size: int, num_classes: int) -> dict:
  """Uniform pixels and labels; for CLIP also one caption an image (B, 1, CLIP_CONTEXT): random
  ids below <eot>, <eot> at a random position from 2 on, zeros after it."""
  rng = np.random.default_rng(0)
  b = config.batch_size
  batch = {"x": rng.random((b, image_size, image_size, 3), np.float32),
           "y": rng.integers(0, num_classes, b, dtype=np.int32)}
  if config.algorithm == "faster_rcnn":  # boxes (y0, x0, y1, x1) relative, as tfds lays them
    size = rng.uniform(0.1, 0.5, (b, DETECTION_BOXES, 2))
    corner = rng.uniform(0, 1 - size)
    return {"x": batch["x"], "boxes": np.concatenate([corner, corner + size], -1).astype(
                np.float32), "boxes_mask": np.ones((b, DETECTION_BOXES), bool),
            "labels": rng.integers(0, num_classes, (b, DETECTION_BOXES), dtype=np.int32)}
  if config.algorithm == "clip":
    position, eot = np.arange(CLIP_CONTEXT), rng.integers(2, CLIP_CONTEXT, (b, 1, 1))
    ids = rng.integers(0, config.eot_id, (b, 1, CLIP_CONTEXT))
    batch["tokens"] = np.where(position < eot, ids,
                               np.where(position == eot, config.eot_id, 0)).astype(np.int32)
  return batch


def forward_flops(state, batch: dict) -> float:
  """XLA's FLOP count of the model's forward pass on ``batch['x']`` (eval mode); CLIP's on the
  images and the first caption of each."""
  inputs = [jnp.asarray(batch["x"])]
  if "tokens" in batch:
    inputs.append(jnp.asarray(batch["tokens"][:, 0]))
  apply = jax.jit(lambda s, *a: s.apply_fn({"params": s.params, **({"batch_stats": s.batch_stats}
                                                                    if s.batch_stats else {})},
                                           *a, train=False))
  cost = apply.lower(state, *inputs).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def bench_model(name: str, preset: str, batch_size: int, steps: int, repeats: int,
                quick: bool) -> dict:
  config = bench_config(name, preset, batch_size, quick)
  image_size = IMAGE_SIZE.get(name, (224, 32))[quick]
  num_classes = DETECTION_CLASSES if name == "faster_rcnn" else 10 if quick else 1000
  config.num_classes = num_classes
  config.num_steps = steps * repeats + 1
  config.warmup_steps = 0  # the preset's warmup is longer than a benchmark
  algorithm = registry.get(config.algorithm)
  mesh = parallel.make_mesh()
  batch = random_batch(config, image_size, num_classes)
  state = parallel.replicate(algorithm.init(config, jax.random.key(0), batch), mesh)
  num_params = sum(p.size for p in jax.tree.leaves(state.params))
  flops = None if name == "faster_rcnn" else forward_flops(state, batch)
  compiled = train.programs(algorithm, config, mesh)
  batch = parallel.to_global(batch, mesh)
  rng = jax.random.key(1)
  acc = parallel.replicate(
      train.Accumulator.zeros(compiled.metrics.eval_shape(state, batch, rng)[1]), mesh)

  def run(n: int, state, acc, start: int):
    for i in range(n):
      state, acc = compiled.train(state, acc, batch, rng, start + i)
    jax.block_until_ready((state, acc))
    return state, acc

  t0 = time.perf_counter()
  state, acc = run(1, state, acc, 0)
  compile_s = time.perf_counter() - t0
  best = math.inf
  for r in range(repeats):
    t0 = time.perf_counter()
    state, acc = run(steps, state, acc, 1 + r * steps)
    best = min(best, time.perf_counter() - t0)
  step_s = best / steps
  kind = jax.devices()[0].device_kind
  peak = PEAK_BF16.get(kind)
  return {"model": f"{name}:{preset}", "device_kind": kind, "batch_size": batch_size,
          "image_size": image_size, "params": int(num_params), "compile_s": compile_s,
          "step_s": step_s, "images_per_s": batch_size / step_s,
          "forward_gflops_per_image": flops / batch_size / 1e9 if flops else None,
          "mfu": 3 * flops / step_s / peak if peak and flops else None}


def table(rows: list[dict]) -> str:
  head = (f"{'model':<20}{'batch':>6}{'params':>13}{'GFLOP/img':>10}{'img/s':>10}{'MFU':>7}"
          f"{'compile s':>11}")
  lines = [head, "-" * len(head)]
  for r in rows:
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "—"
    gflops = r["forward_gflops_per_image"]
    gflops = f"{gflops:.2f}" if gflops is not None else "—"
    lines.append(f"{r['model']:<20}{r['batch_size']:>6}{r['params']:>13,}"
                 f"{gflops:>10}{r['images_per_s']:>10,.0f}{mfu:>7}{r['compile_s']:>11.1f}")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
  p.add_argument("--batch-size", type=int, default=None,
                 help="every row's (default 128, clip_b32 256, frcnn_r50_fpn 8; quick: 4)")
  p.add_argument("--steps", type=int, default=None, help="steps per repeat (default 20, quick 2)")
  p.add_argument("--repeats", type=int, default=None, help="best of (default 3, quick 1)")
  p.add_argument("--quick", action="store_true",
                 help="tiny models at 32x32 (Faster R-CNN 64x64): a smoke run")
  p.add_argument("--json", metavar="PATH", help="also write the results here")
  args = p.parse_args(argv)
  steps = args.steps or (2 if args.quick else 20)
  repeats = args.repeats or (1 if args.quick else 3)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
  rows = [bench_model(*MODELS[m], args.batch_size or (4 if args.quick else BATCH_SIZE.get(m, 128)),
                      steps, repeats, args.quick) for m in args.models]
  print(table(rows))
  results = {"jax": jax.__version__, "results": rows}
  if args.json:
    report.write_json(args.json, results)
  return results


if __name__ == "__main__":
  main()
