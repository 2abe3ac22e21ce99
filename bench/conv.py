"""Convolution gradients on the CPU: XLA's, m2m_jax.ops.conv's and PyTorch's, in one process.

Convolutions: a 2-D convolution of a (B, H, W, C_in) batch by a (k, k, C_in, C_out) kernel; the
timed function returns the kernel's gradient of sum(y * g) for a fixed g: XLA's
(``lax.conv_general_dilated`` under ``jax.grad``), the per-tap matmuls (``ops.conv.conv``) and
PyTorch's (``torch.autograd.grad`` of ``F.conv2d`` on NCHW tensors).

Transposed convolutions: both gradients (input and kernel) of sum(y * g): XLA's
(``lax.conv_transpose``), the sub-pixel form (``ops.conv.conv_transpose``) and PyTorch's
(``F.conv_transpose2d``, same padding).

The JAX functions are jitted and checked equal. ``--threads N`` pins the process to N cores before
JAX starts (XLA's Eigen threading off at 1) and sets ``torch.set_num_threads(N)``. The time is
the median of ``--repeats`` runs of ``--steps`` calls, the three interleaved.

  python bench/conv.py [--threads 1] [--json conv.json]
"""

import argparse
import os
import statistics
from typing import Sequence

from threads import limit_threads  # bench/, the script's directory

CASES = (  # (name, batch, side, C_in, C_out, kernel, stride, padding)
    ("cnn28 conv2: 14x14, 32 -> 64, 3x3", 128, 14, 32, 64, 3, 1, 1),
    ("cnn28 conv1: 28x28, 1 -> 32, 3x3", 128, 28, 1, 32, 3, 1, 1),
    ("resnet20 stage 3: 8x8, 64 -> 64, 3x3", 128, 8, 64, 64, 3, 1, 1),
    ("vae down: 16x16, 32 -> 64, 4x4 s2", 128, 16, 32, 64, 4, 2, 1),
    ("unet level 1: 32x32, 16 -> 16, 3x3", 128, 32, 16, 16, 3, 1, 1),
    ("resnet20 stage 2 entry: 32x32, 16 -> 32, 3x3 s2", 128, 32, 16, 32, 3, 2, 1),
)
TRANSPOSED = (  # (name, batch, side, C_in, C_out, kernel, stride, PyTorch's padding)
    ("vae up: 8x8, 128 -> 64, 4x4 s2", 128, 8, 128, 64, 4, 2, 1),
    ("vae up: 16x16, 64 -> 32, 4x4 s2", 128, 16, 64, 32, 4, 2, 1),
    ("unet up: 16x16, 32 -> 16, 2x2 s2", 128, 16, 32, 16, 2, 2, 0),
)


def main(argv: Sequence[str] | None = None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--threads", type=int, default=1, help="threads of both frameworks")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--json", metavar="PATH")
  args = p.parse_args(argv)
  limit_threads(["--threads", str(args.threads)])
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import torch.nn.functional as F
  from jax import lax

  from m2m_jax import report
  from m2m_jax.ops import conv as conv_lib
  from train_step import repeat_seconds  # bench/, the script's directory
  torch.set_num_threads(args.threads)

  def calls(fn):
    """``fn`` as a run of n calls, blocked on at the end (what ``repeat_seconds`` times)."""
    def run(n):
      for _ in range(n):
        out = fn()
      jax.block_until_ready(out)
    return run

  def measure(name, method, xla_fn, ours_fn, torch_fn):
    """Median milliseconds a call of XLA's, ours (``method``) and PyTorch's, interleaved."""
    runs = [calls(fn) for fn in (xla_fn, ours_fn, torch_fn)]
    for run in runs:
      run(1)
    xla_ms, ours_ms, torch_ms = (1e3 * statistics.median(t) / args.steps
                                 for t in repeat_seconds(runs, args.steps, args.repeats))
    print(f"{name:<50}xla {xla_ms:7.2f} ms  {method} {ours_ms:7.2f} ms  torch {torch_ms:7.2f} ms",
          flush=True)
    return {"case": name, "threads": args.threads, "method": method, "xla_ms": xla_ms,
            "ours_ms": ours_ms, "torch_ms": torch_ms, "ours_over_torch": ours_ms / torch_ms,
            "xla_over_torch": xla_ms / torch_ms}

  def nchw(a):
    return torch.from_numpy(a.transpose(0, 3, 1, 2).copy())

  def close(a, b):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4 * float(np.abs(b).max()))

  rows = []
  for name, b, side, c_in, c_out, k, s, pad in CASES:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, side, side, c_in), dtype=np.float32)
    w = rng.standard_normal((k, k, c_in, c_out), dtype=np.float32)
    pads = ((pad, pad), (pad, pad))
    y_shape = jax.eval_shape(lambda x, w: conv_lib.conv(x, w, (s, s), pads), x, w).shape
    g = rng.standard_normal(y_shape, dtype=np.float32)

    def grad_of(f):
      return jax.jit(jax.grad(lambda w, x, g: jnp.sum(f(x, w) * g)))

    xla = grad_of(lambda x, w: lax.conv_general_dilated(x, w, (s, s), pads,
                                                        dimension_numbers=conv_lib.NHWC))
    ours = grad_of(lambda x, w: conv_lib.conv(x, w, (s, s), pads))
    close(ours(w, x, g), xla(w, x, g))
    tx, tg = nchw(x), nchw(g)
    tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).requires_grad_()

    def torch_grad():
      return torch.autograd.grad(F.conv2d(tx, tw, stride=s, padding=pad), tw, tg)[0]

    rows.append(measure(name, "per_tap", lambda: xla(w, x, g), lambda: ours(w, x, g),
                        torch_grad))
  for name, b, side, c_in, c_out, k, s, pad in TRANSPOSED:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, side, side, c_in), dtype=np.float32)
    w = rng.standard_normal((k, k, c_in, c_out), dtype=np.float32)
    pads = ((k - 1 - pad, k - 1 - pad),) * 2  # PyTorch's padding p is lax's k - 1 - p
    g = rng.standard_normal((b, (side - 1) * s - 2 * pad + k, (side - 1) * s - 2 * pad + k,
                             c_out), dtype=np.float32)

    def grads_of(f):
      return jax.jit(jax.grad(lambda x, w, g: jnp.sum(f(x, w) * g), argnums=(0, 1)))

    xla = grads_of(lambda x, w: lax.conv_transpose(x, w, (s, s), pads,
                                                   dimension_numbers=conv_lib.NHWC))
    ours = grads_of(lambda x, w: conv_lib.conv_transpose(x, w, (s, s), pads))
    for a, want in zip(ours(x, w, g), xla(x, w, g)):
      close(a, want)
    tx, tg = nchw(x).requires_grad_(), nchw(g)
    # lax's kernel (k, k, C_in, C_out) unflipped is PyTorch's (C_in, C_out, k, k) flipped.
    tw = torch.from_numpy(w[::-1, ::-1].transpose(2, 3, 0, 1).copy()).requires_grad_()

    def torch_grads():
      y = F.conv_transpose2d(tx, tw, stride=s, padding=pad)
      return torch.autograd.grad(y, (tx, tw), tg)

    rows.append(measure(name, "sub_pixel", lambda: xla(x, w, g), lambda: ours(x, w, g),
                        torch_grads))
  if args.json:
    report.write_json(args.json, {"load_average_1min": os.getloadavg()[0], "results": rows})
  return rows


if __name__ == "__main__":
  main()
