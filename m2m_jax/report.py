"""What a run leaves behind: metrics.jsonl, TensorBoard events, summary.json, figures, and the
progress bar."""

import glob
import json
import numbers
import os
import sys
import time
from typing import Callable, Sequence

import numpy as np
import tqdm
from matplotlib.figure import Figure


def figure(*args, **kwargs):
  """``(fig, axes)`` like ``pyplot.subplots``, on a bare :class:`Figure`: no global backend is
  touched (a notebook importing m2m_jax keeps its inline plots) and nothing needs closing."""
  fig = Figure(figsize=kwargs.pop("figsize", None))
  return fig, fig.subplots(*args, **kwargs)


class MetricsLog:
  """``metrics.jsonl``: one JSON object a line with ``step``, ``split`` and metric values; each
  row goes to ``events`` (TensorBoard) too, once that is set."""

  def __init__(self, path: str):
    self.path = path
    self.events: Events | None = None

  def truncate_after(self, step: int, drop_evaluations_at_end: bool = False) -> None:
    """Drops lines logged after ``step`` (a resumed run logs them again, identically), and
    with ``drop_evaluations_at_end`` the evaluators' rows of ``step`` too, all but the
    training metrics (a finished run evaluated again)."""
    if not os.path.exists(self.path):
      return

    def keep(row: dict) -> bool:
      return row["step"] < step or (row["step"] == step and not (
          drop_evaluations_at_end and row["split"] != "train"))

    with open(self.path) as f:
      rows = [line for line in f if keep(json.loads(line))]
    with open(self.path, "w") as f:
      f.writelines(rows)

  def write(self, step: int, split: str, metrics: dict) -> None:
    """Appends one row and flushes it to disk."""
    row = {"step": int(step), "split": split, **{k: _py(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self.events:
      self.events.scalars(row)

  def read(self) -> list[dict]:
    """All rows logged so far."""
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f]


class Events:
  """TensorBoard event files in ``logdir``: the rows of ``metrics.jsonl`` as scalars tagged
  ``<split>/<metric>``, with each training row the ``learning_rate`` of its step's update
  (an optax schedule; None: none), the config as text and the final figures as images.

  Written by tensorboardX, which needs neither TensorFlow nor torch. A run resumed at step
  ``start`` starts a new file that hides, in TensorBoard, every event of the earlier files from
  ``start`` on (``purge_step``), as ``metrics.jsonl`` drops the rows logged after the
  checkpoint; ``kept`` are the rows of step ``start`` that it keeps, written again here.
  """

  def __init__(self, logdir: str, start: int, kept: Sequence[dict] = (),
               learning_rate: Callable[[int], float] | None = None):
    SummaryWriter = _summary_writer()
    # Files are named by the second they were opened in; the suffix, in nanoseconds, keeps two
    # opened within one second apart and in order.
    self.writer = SummaryWriter(logdir, purge_step=start, filename_suffix=f".{time.time_ns()}")
    self.learning_rate = learning_rate
    for row in kept:
      if row["step"] == start:
        self.scalars(row)

  def scalars(self, row: dict) -> None:
    """One row of ``metrics.jsonl``: each scalar number as ``<split>/<metric>``."""
    for name, value in row.items():
      if name not in ("step", "split") and isinstance(value, numbers.Real):
        self.writer.add_scalar(f"{row['split']}/{name}", value, row["step"])
    if self.learning_rate and row["split"] == "train":  # step s applied the (s - 1)-th update
      self.writer.add_scalar("train/learning_rate", float(self.learning_rate(row["step"] - 1)),
                             row["step"])

  def text(self, tag: str, text: str, step: int) -> None:
    """``text`` shown as preformatted (TensorBoard renders markdown)."""
    self.writer.add_text(tag, "\n".join("    " + line for line in text.splitlines()), step)

  def figures(self, figdir: str, step: int) -> None:
    """Every PNG in ``figdir`` as an image tagged ``figures/<file name>``."""
    from PIL import Image
    for path in sorted(glob.glob(os.path.join(figdir, "*.png"))):
      with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
      name = os.path.splitext(os.path.basename(path))[0]
      self.writer.add_image(f"figures/{name}", pixels, step, dataformats="HWC")

  def flush(self) -> None:
    self.writer.flush()

  def close(self) -> None:
    self.writer.close()


def _summary_writer():
  """tensorboardX's SummaryWriter, imported without torch: tensorboardX imports torch where it
  is installed (1 to 2 s) only to accept torch tensors, and m2m_jax hands it numbers and numpy
  arrays. Where torch is already imported, it is left as it is."""
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # `import torch` raises ImportError while this holds
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


def _py(v):
  v = np.asarray(v)
  return v.item() if v.ndim == 0 else v.tolist()


def progress(total: int, initial: int, desc: str, unit: str = "step") -> tqdm.tqdm:
  """A progress bar over range(initial, total) (to stderr; quiet when ``M2M_NO_PROGRESS`` is
  set)."""
  return tqdm.tqdm(range(initial, total), total=total, initial=initial, desc=desc, unit=unit,
                   dynamic_ncols=True, disable=bool(os.environ.get("M2M_NO_PROGRESS")),
                   mininterval=1.0)


def write_json(path: str, obj: dict) -> None:
  """Writes ``obj`` as indented JSON atomically (write to a temp file, then rename)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, default=_py)
  os.replace(tmp, path)


CURVES_PER_ROW = 5


def plot_curves(rows: Sequence[dict], path: str) -> None:
  """One panel per metric, train and test curves against the step, ``CURVES_PER_ROW`` a row."""
  keys = sorted({k for r in rows for k in r if k not in ("step", "split", "examples_per_sec")
                 and isinstance(r[k], (int, float))})
  if not keys:
    return
  cols = min(len(keys), CURVES_PER_ROW)
  lines = -(-len(keys) // cols)
  fig, axes = figure(lines, cols, figsize=(4 * cols, 3.2 * lines), squeeze=False)
  for ax in axes.ravel()[len(keys):]:
    ax.axis("off")
  for ax, key in zip(axes.ravel(), keys):
    for split in sorted({r["split"] for r in rows}):
      pts = [(r["step"], r[key]) for r in rows if r["split"] == split and key in r]
      if pts:
        ax.plot(*zip(*pts), marker="o" if len(pts) < 20 else None, ms=3, label=split)
    ax.set_xlabel("step")
    ax.set_title(key)
    if key == "loss":
      ax.set_yscale("log")
    ax.legend()
  # Margins in inches, not tight_layout, which drew the figure once more (a third of the time).
  width, height = 4 * cols, 3.2 * lines
  fig.subplots_adjust(left=0.65 / width, right=1 - 0.15 / width, bottom=0.5 / height,
                      top=1 - 0.35 / height, wspace=0.3, hspace=0.45)
  fig.savefig(path, dpi=110)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
  """(num_classes, num_classes) counts: row = true class, column = predicted class."""
  m = np.zeros((num_classes, num_classes), dtype=np.int64)
  np.add.at(m, (labels, preds), 1)
  return m


def plot_confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int, path: str,
                   name: str) -> None:
  """The confusion matrix of (N,) true and predicted classes as a heat map with counts, titled
  ``'<name>: test accuracy <acc>'``."""
  matrix = confusion_matrix(labels, preds, num_classes)
  title = f"{name}: test accuracy {np.trace(matrix) / matrix.sum():.2%}"
  n = len(matrix)
  fig, ax = figure(figsize=(0.45 * n + 2.5, 0.45 * n + 2))
  ax.imshow(matrix, cmap="Blues")
  for i in range(n):
    for j in range(n):
      if matrix[i, j]:
        ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7,
                color="white" if matrix[i, j] > matrix.max() / 2 else "black")
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_xticks(range(n))
  ax.set_yticks(range(n))
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_images(images: np.ndarray, titles: Sequence[str] | None, path: str, cols: int = 8,
                title: str = "") -> None:
  """A grid of (N, H, W, C) images in [0, 1], ``cols`` to a row: each under its title, or with
  ``titles=None`` tiled into one picture (:func:`mosaic`) under ``title``. One panel either way
  (the titles are text over the tiles): a panel an image took matplotlib 25 ms each."""
  n = len(images)
  if n == 0:
    return
  cols = min(cols, n)
  rows = -(-n // cols)
  if titles is None:
    fig, ax = figure(figsize=(cols, rows + 0.4))
    show_grid(ax, images, cols)
    ax.set_title(title, fontsize=10)
  else:
    h, w = images.shape[1:3]
    band, between = max(1, round(0.3 * h)), max(1, round(0.15 * w))  # over and between tiles
    fig, ax = figure(figsize=(1.3 * cols, 1.5 * rows))
    show_grid(ax, images, cols, gap=(band, between))
    ax.axis("off")
    for i, label in enumerate(titles):
      r, q = divmod(i, cols)
      ax.text(q * (w + between) + w / 2, r * (h + band) + band - 0.5, label, ha="center",
              va="bottom", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def show_grid(ax, images: np.ndarray, cols: int, gap: int | tuple[int, int] = 1) -> None:
  """Draws images (N, H, W, C) in [0, 1] on ``ax`` as one :func:`mosaic`, grey for C = 1, with
  no ticks: the image grid every figure uses."""
  grid = mosaic(images, cols, gap)
  ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
  ax.set_xticks([])
  ax.set_yticks([])


def mosaic(images: np.ndarray, cols: int, gap: int | tuple[int, int] = 1) -> np.ndarray:
  """Images (N, H, W, C), clipped to [0, 1], tiled ``cols`` to a row with ``gap`` white pixels
  between them (``(above, between)``: that many above each row, and between tiles of a row):
  (rows (H + gap) - gap, cols (W + gap) - gap, C) for one gap; with rows (H + above) for two."""
  n, h, w, c = images.shape
  rows = -(-n // cols)
  above, between = (0, gap) if isinstance(gap, int) else gap
  row_gap = gap if isinstance(gap, int) else 0
  tall = h + above + row_gap
  canvas = np.ones((rows * tall - row_gap, cols * (w + between) - between, c), np.float32)
  for i, img in enumerate(np.clip(images, 0, 1)):
    r, q = divmod(i, cols)
    top = r * tall + above
    canvas[top:top + h, q * (w + between):q * (w + between) + w] = img
  return canvas


def plot_regression(target: np.ndarray, prediction: np.ndarray, path: str, title: str = "",
                    coef: np.ndarray | None = None) -> None:
  """Predicted against true values with the line y = x, the residuals, and (optionally) the
  coefficients (d,) as bars."""
  residual = target - prediction
  panels = 3 if coef is not None else 2
  fig, axes = figure(1, panels, figsize=(4.2 * panels, 3.8))
  lo, hi = min(target.min(), prediction.min()), max(target.max(), prediction.max())
  axes[0].scatter(target, prediction, s=10, alpha=0.7)
  axes[0].plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
  axes[0].set(xlabel="true", ylabel="predicted", title=title)
  axes[0].legend()
  axes[1].scatter(prediction, residual, s=10, alpha=0.7)
  axes[1].axhline(0, color="k", lw=1, ls="--")
  axes[1].set(xlabel="predicted", ylabel="residual (true - predicted)",
              title=f"residuals: RMSE {np.sqrt(np.mean(residual**2)):.4g}")
  if coef is not None:
    axes[2].bar(np.arange(len(coef)), coef)
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set(xlabel="feature", ylabel="coefficient",
                title=f"coefficients ({int(np.sum(coef != 0))} of {len(coef)} nonzero)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_decision_regions(predict, x: np.ndarray, y: np.ndarray, path: str, title: str = "",
                          resolution: int = 150) -> None:
  """The classes ``predict`` assigns over a plane through the data, and the points on it.

  Args:
    predict: maps points (m, d) to class indices (m,).
    x, y: points (n, d) and their class indices (n,), drawn by their coordinates in the plane.
    resolution: grid points along each axis.
  The plane is the feature plane for d = 2; otherwise the plane through the mean of x spanned
  by its two leading principal axes (a slice of the d-dimensional decision regions).
  """
  x = x.reshape(len(x), -1).astype(np.float64)
  d = x.shape[1]
  if d == 2:
    origin, basis, names = np.zeros(2), np.eye(2), ("feature 0", "feature 1")
  else:
    origin = x.mean(0)
    basis = np.linalg.svd(x - origin, full_matrices=False)[2][:2]
    names = ("principal axis 1", "principal axis 2")
  z = (x - origin) @ basis.T
  lo, hi = z.min(0), z.max(0)
  lo, hi = lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo)
  u, v = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
  grid = np.stack([u.ravel(), v.ravel()], 1) @ basis + origin
  regions = np.asarray(predict(grid.astype(np.float32))).reshape(u.shape)
  vmax = max(9, int(max(regions.max(), y.max())))
  fig, ax = figure(figsize=(5.2, 4.6))
  ax.contourf(u, v, regions, levels=np.arange(vmax + 2) - 0.5, cmap="tab10", vmin=0, vmax=vmax,
              alpha=0.3)
  ax.scatter(z[:, 0], z[:, 1], c=y, cmap="tab10", vmin=0, vmax=vmax, s=14, edgecolors="k",
             linewidths=0.3)
  ax.set(xlabel=names[0], ylabel=names[1], title=title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
