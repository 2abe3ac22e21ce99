"""A convolution's weight gradient on the CPU: XLA's (``lax.conv_general_dilated`` under
``jax.grad``), m2m_jax's per-tap matmuls (``m2m_jax.ops.conv``) and PyTorch's, in one process.

Each case is a 2-D convolution of a (B, H, W, C_in) batch by a (k, k, C_in, C_out) kernel; the
timed function returns the kernel's gradient of sum(y * g) for a fixed g (in JAX jitted; in
PyTorch ``torch.autograd.grad`` on NCHW tensors). Best of ``--repeats`` runs of ``--steps``
calls, the three interleaved.

  python bench/conv.py [--threads 1] [--json conv.json]
"""

import argparse
import os
import time
from typing import Sequence

CASES = (  # (name, batch, side, C_in, C_out, kernel, stride, padding)
    ("cnn28 conv2: 14x14, 32 -> 64, 3x3", 128, 14, 32, 64, 3, 1, 1),
    ("cnn28 conv1: 28x28, 1 -> 32, 3x3", 128, 28, 1, 32, 3, 1, 1),
    ("resnet20 stage 3: 8x8, 64 -> 64, 3x3", 128, 8, 64, 64, 3, 1, 1),
    ("vae down: 16x16, 32 -> 64, 4x4 s2", 128, 16, 32, 64, 4, 2, 1),
)


def main(argv: Sequence[str] | None = None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--threads", type=int, default=1, help="threads of both frameworks")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--json", metavar="PATH")
  args = p.parse_args(argv)
  if args.threads == 1:  # XLA's intra-op threads are set when it starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false").strip()
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import torch.nn.functional as F
  from jax import lax

  from m2m_jax import report
  from m2m_jax.ops import conv as conv_lib
  torch.set_num_threads(args.threads)

  def timed(fn, n):
    start = time.perf_counter()
    for _ in range(n):
      out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - start

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
    np.testing.assert_allclose(ours(w, x, g), xla(w, x, g), rtol=2e-4,
                               atol=2e-4 * float(np.abs(xla(w, x, g)).max()))
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).requires_grad_()
    tg = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())

    def torch_grad():
      return torch.autograd.grad(F.conv2d(tx, tw, stride=s, padding=pad), tw, tg)[0]

    runs = {"xla": lambda: xla(w, x, g), "per_tap": lambda: ours(w, x, g),
            "torch": torch_grad}
    for fn in runs.values():
      fn()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):
      for key, fn in runs.items():
        best[key] = min(best[key], timed(fn, args.steps) / args.steps)
    rows.append({"case": name, "threads": args.threads,
                 **{f"{key}_ms": 1e3 * t for key, t in best.items()},
                 "xla_over_torch": best["xla"] / best["torch"],
                 "per_tap_over_torch": best["per_tap"] / best["torch"]})
    print(f"{name:<40} XLA {rows[-1]['xla_ms']:7.2f} ms  per-tap {rows[-1]['per_tap_ms']:7.2f} ms"
          f"  torch {rows[-1]['torch_ms']:7.2f} ms", flush=True)
  if args.json:
    report.write_json(args.json, {"load_average_1min": os.getloadavg()[0], "results": rows})
  return rows


if __name__ == "__main__":
  main()
