"""README's and docs/results.md's results tables, generated from runs so that no number drifts
from the code.

    python tools/results.py run      # trains each listed preset not yet run, into runs/results/
    python tools/results.py write    # rewrites the tables from docs/summaries/

``run`` copies each run's ``summary.json`` to ``docs/summaries/<config>_<preset>.json``, which is
committed: the tables are a function of those files, and ``tests/test_results.py`` checks that
README and docs/results.md hold exactly what ``write`` makes of them. ``run --force`` trains
them all again; ``run cnn vae:digits`` only those. Each row names a
preset, the data, the metric and a template of the value over the run's ``summary.json``
(``t`` is its ``test`` metrics); the original notebook's number and scikit-learn's, which are
not this code's, are written beside it as they are. ``write`` puts every row in
docs/results.md and the default presets' rows (and those marked ``readme``) in README, between
the ``<!-- results -->`` markers, with the device each was measured on.
"""

import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "results"
SUMMARIES = ROOT / "docs" / "summaries"


@dataclasses.dataclass(frozen=True)
class Row:
  name: str          # config[:preset]
  data: str
  metric: str
  value: str         # a str.format template over t (test metrics) and s (the summary)
  original: str = "—"
  readme: bool = False  # in README's table too (every default preset is)

  @property
  def workdir(self) -> str:
    return self.name.replace(":", "_")

  def command(self, workdir: str) -> str:
    return f"python -m m2m_jax.main --config={self.name} --workdir={workdir}"


ACC = "**{t[accuracy]:.1%}**"
R2 = "**{t[r2]:.4f}**"
FD = "FD **{t[fd]:.1f}** (real {t[fd_real]:.2f}), confidence {t[confidence]:.2f}, {t[classes]} classes"
DIFFUSION = ("**{t[eps_mse]:.4f}**; FD **{t[ddpm_fd]:.1f}** / {t[ddim_fd]:.1f} (real "
             "{t[fd_real]:.2f}), confidence {t[ddpm_confidence]:.2f} / {t[ddim_confidence]:.2f}, "
             "{t[ddpm_classes]} / {t[ddim_classes]} classes")


def _sequences(extrap_digits: int) -> str:
  """The latent ODE's value: -ELBO, then interpolation and extrapolation MSE beside copying the
  nearest observed frame."""
  e = extrap_digits
  return ("**{t[neg_elbo]:.1f}**; interp **{t[interp_mse]:.3f}** ({t[interp_mse_nearest]:.3f}), "
          f"extrap **{{t[extrap_mse]:.{e}f}}** ({{t[extrap_mse_nearest]:.{e}f}})")


ROWS = [
    Row("mlp_scratch", "digits 8x8 (1,438 / 359)", "accuracy", ACC, "never trained"),
    Row("mlp_scratch:mnist5k", "MNIST, 4,000 / 1,000", "accuracy", ACC),
    Row("mlp", "digits 8x8", "accuracy", ACC, "never trained"),
    Row("mlp:mnist5k", "MNIST, 4,000 / 1,000", "accuracy", ACC),
    Row("cnn", "digits 16x16 (1,438 / 359)", "accuracy", ACC),
    Row("cnn:mnist5k", "MNIST, 4,000 / 1,000", "accuracy", ACC, readme=True),
    Row("cnn:simple_cnn", "MNIST, 4,000 / 1,000", "accuracy", ACC + " (mean CE {t[loss]:.3f})",
        "95.09% on full MNIST (60,000 / 10,000); mean CE about 0.142 (it printed 0.0022, a bug)"),
    Row("vit", "digits 16x16 (1,438 / 359), patch 4, width 64, 4 blocks", "accuracy", ACC,
        "no accuracy (CIFAR-10; its printed test loss is a bug)"),
    Row("vit:mnist5k", "MNIST, 4,000 / 1,000, patch 4", "accuracy", ACC, readme=True),
    Row("swin", "MNIST at 32x32, 4,000 / 1,000, shifted-window mask", "accuracy", ACC,
        "98.56% on full MNIST (60,000 / 10,000), without the mask"),
    Row("swin:no_mask", "the same without the mask (the original's bug)", "accuracy", ACC),
    Row("clip", "captioned shapes 32x32 (4,000 / 1,000), 4 (shape, colour) pairs held out of "
        "training", "text -> image and image -> text recall@5; zero-shot accuracy over the 24 "
        "(shape, colour) classes",
        "t2i **{t[t2i_r5]:.1%}**, i2t {t[i2t_r5]:.1%}; zero-shot **{t[zeroshot_accuracy]:.1%}** "
        "(held-out pairs **{t[zeroshot_heldout]:.1%}**, seen {t[zeroshot_seen]:.1%}); P(right "
        "caption of 5) {t[p_right_caption]:.4f}",
        "never trained its own: OpenAI's ViT-B/32, zero-shot, P = 0.9990 for the right one of "
        "5 Flickr8k captions (`clip:seed` runs that experiment on COCO)"),
    Row("faster_rcnn", "detection_shapes 64x64 (2,000 / 500 scenes, up to 6 objects of 3 "
        "kinds), read at 128x128", "mAP@50 (COCO's 101-point AP at IoU 0.5); mAP@[.5:.95], "
        "mAP@75, mAR@100; VOC AP@50 all-point (11-point)",
        "**{t[map50]:.3f}**; {t[map]:.3f}, {t[map75]:.3f}, {t[mar100]:.3f}; {t[voc_ap50]:.3f} "
        "({t[voc07_ap50]:.3f})",
        "mAP@50 0.5606; mAP 0.2767, mAP@75 0.2236, mAR@100 0.4781 on VOC2012 (1,144 test "
        "images), COCO-pretrained and fine-tuned at a learning rate about 50x too low "
        "(`faster_rcnn:seed`)"),
    Row("kmeans", "4 Gaussian blobs (1,200 / 300)", "ARI vs. true labels", "**{t[ari]:.3f}**",
        "never ran"),
    Row("kmeans:iris", "iris, standardised", "ARI vs. species", "**{t[ari]:.3f}**"),
    Row("linear_regression", "diabetes (353 / 89)", "R^2", R2 + " (scikit-learn 0.5226)",
        "printed nothing"),
    Row("linear_regression:ridge", "diabetes, alpha 10", "R^2", R2 + " (0.5248)"),
    Row("linear_regression:lasso", "diabetes, alpha 1", "R^2", R2 + " (0.5251)"),
    Row("linear_regression:elastic_net", "diabetes, alpha 0.5, l1_ratio 0.5", "R^2",
        R2 + " (0.5186)"),
    Row("linear_regression:sgd", "diabetes, mini-batch GD, batches of 32", "R^2",
        R2 + " (least squares 0.5226)"),
    Row("logistic_regression", "breast cancer (455 / 114)", "accuracy, log-loss",
        ACC + ", {t[log_loss]:.4f} (98.2%, 0.0661)", "printed nothing"),
    Row("logistic_regression:iris", "iris (120 / 30), softmax", "accuracy, log-loss",
        ACC + ", {t[log_loss]:.3f} (90.0%, 0.199)"),
    Row("logistic_regression:digits", "digits 8x8 (1,438 / 359), softmax", "accuracy, log-loss",
        ACC + ", {t[log_loss]:.3f} (95.3%, 0.188)"),
    Row("knn", "digits 8x8, k = 5", "accuracy", ACC + " (98.1%)", "printed nothing"),
    Row("knn:distance", "digits, k = 5, manhattan, distance-weighted", "accuracy",
        ACC + " (96.7%: one exact distance tie broken the other way)"),
    Row("knn:regression", "diabetes, k = 10, distance-weighted", "R^2", R2 + " (0.4633)"),
    Row("knn:mnist5k", "MNIST, 4,000 / 1,000, k = 3", "accuracy", ACC + " (93.8%)"),
    Row("pca", "digits 8x8, 10 components", "test variance kept",
        "**{t[explained_variance]:.4f}** (0.7346)", "printed nothing"),
    Row("pca:randomized", "MNIST 4,000 / 1,000, 50 components, randomized SVD",
        "test variance kept", "**{t[explained_variance]:.4f}** (full SVD: 0.8245)"),
    Row("decision_tree", "two moons, noise 0.3 (750 / 250), depth 6", "accuracy",
        ACC + " (90.0%)", "printed nothing"),
    Row("decision_tree:iris", "iris (120 / 30), depth 4", "accuracy",
        ACC + " (90.0%: tied splits broken the other way)"),
    Row("decision_tree:breast_cancer", "breast cancer (455 / 114), depth 5, entropy", "accuracy",
        ACC + " (92.1%: tied splits broken the other way)"),
    Row("decision_tree:digits", "digits 8x8 (1,438 / 359), depth 10", "accuracy",
        ACC + " (83.8%)"),
    Row("decision_tree:regression", "diabetes, depth 4, 5 a leaf", "R^2", R2 + " (0.3639)"),
    Row("random_forest", "two moons, 100 trees of depth 8", "accuracy", ACC + " (88.8%)",
        "printed nothing"),
    Row("random_forest:breast_cancer", "breast cancer, 100 trees of depth 10, sqrt features",
        "accuracy", ACC + " (98.2%)"),
    Row("random_forest:digits", "digits, 100 trees of depth 12", "accuracy", ACC + " (96.4%)"),
    Row("random_forest:regression", "diabetes, 100 trees of depth 8, 5 a leaf", "R^2",
        R2 + " (0.4688)"),
    Row("adaboost", "two moons, 200 stumps, learning rate 0.5", "accuracy", ACC + " (90.0%)",
        "printed nothing"),
    Row("adaboost:breast_cancer", "breast cancer, 100 stumps", "accuracy", ACC + " (98.2%)"),
    Row("adaboost:digits", "digits, 200 depth-3 trees, learning rate 0.5", "accuracy",
        ACC + " (94.4%)"),
    Row("gradient_boosting", "two moons, 100 rounds, depth 3", "accuracy", ACC + " (90.0%)",
        "printed nothing"),
    Row("gradient_boosting:breast_cancer", "breast cancer, 100 rounds, depth 3", "accuracy",
        ACC + " (98.2%)"),
    Row("gradient_boosting:digits", "digits, 100 rounds x 10 trees, softmax", "accuracy",
        ACC + " (95.8%)"),
    Row("gradient_boosting:regression", "diabetes, 100 rounds, learning rate 0.05", "R^2",
        R2 + " (0.4969)"),
    Row("gradient_boosting:stochastic", "two moons, subsample 0.5", "accuracy", ACC),
    Row("resnet", "digits 16x16, ResNet-20 (widths 8/16/32)", "accuracy", ACC),
    Row("unet", "shapes scenes 32x32 (2,000 / 500, about 10% empty)",
        "Dice, IoU per image (p > 0.5)", "**{t[dice]:.3f}**, {t[iou]:.3f}",
        "0.5441 test Dice on brain MRI (pooled per batch; its Dice term never trained)"),
    Row("colorize", "32x32 crops of the two scikit-learn photos (3,200 / 78), Lab head",
        "PSNR, MSE per pixel",
        "**{t[psnr]:.2f} dB**, {t[mse]:.4f} (grey input: {t[psnr_grey]:.2f} dB, {t[mse_grey]:.4f})",
        "about 21.0 dB, MSE 7.9e-3 on CIFAR-10 (printed 4.957e-4: MSE / 16, a bug)"),
    Row("colorize:rgb", "the same, the original's RGB head", "PSNR, MSE",
        "**{t[psnr]:.2f} dB**, {t[mse]:.4f} (grey {t[psnr_grey]:.2f} dB)"),
    Row("denoise", "digits 16x16, salt and pepper on 20% of the pixels", "PSNR, MSE",
        "**{t[psnr]:.2f} dB**, {t[mse]:.4f} (noisy input: {t[psnr_noisy]:.2f} dB, "
        "{t[mse_noisy]:.4f})",
        "about 29.8 dB (MSE 1.05e-3) on CIFAR-10 with 10% pepper; no noisy baseline"),
    Row("denoise:bottleneck", "the same, an undercomplete code of 32 numbers for 256 pixels",
        "PSNR, MSE", "**{t[psnr]:.2f} dB**, {t[mse]:.4f} (noisy {t[psnr_noisy]:.2f} dB)"),
    Row("vae", "mnist5k 28x28 (4,000 / 1,000), binarised",
        "−ELBO = recon + KL, nats per image; MNIST FD of 1,000 prior samples",
        "**{t[neg_elbo]:.2f}** = {t[recon]:.2f} + {t[kl]:.2f}; " + FD,
        "1833.78 nats per image on the CIFAR-10 *training* set, cross-entropy on continuous "
        "pixels (mostly its floor; see `vae:seed`)"),
    Row("vae:digits", "digits 16x16, binarised", "−ELBO, nats per image; digits FD of 359 samples",
        "**{t[neg_elbo]:.2f}** = {t[recon]:.2f} + {t[kl]:.2f}; " + FD),
    Row("gan", "mnist5k 28x28", "MNIST FD of 1,000 samples", FD,
        "no number: the notebook is lost (0 bytes); its README shows an 8x8 grid of CIFAR-10 "
        "samples"),
    Row("gan:digits", "digits 16x16", "digits FD of 359 samples", FD),
    Row("diffusion", "mnist5k 28x28",
        "held-out eps-MSE of the EMA weights; MNIST FD of 200 EMA samples, 1000-step ancestral "
        "/ 50-step DDIM",
        DIFFUSION,
        "training eps-MSE 0.2270 after epoch 1, 0.03502 after 30 epochs of full MNIST (1.33M "
        "parameters), not held out; no sample metric"),
    Row("diffusion:digits", "digits 16x16", "the same, digits FD", DIFFUSION),
    Row("latent_ode", "mnist5k digits rotated through 10 frames 36° apart; frames 0–6 observed "
        "except 3, frames 7–9 extrapolated",
        "−ELBO, nats per sequence of 6 observed frames; interpolation / extrapolation MSE per "
        "pixel (copying the nearest observed frame); MNIST FD of the first frames of 1,000 "
        "prior sequences",
        _sequences(3) + "; " + FD,
        "412.96 nats per 5-frame sequence (82.6 a frame) at epoch 49, on its 60,000-digit "
        "*training* set; no held-out, interpolation or extrapolation number"),
    Row("latent_ode:ode_rnn", "the same, ODE-RNN recognition (Rubanova et al., 2019)", "the same",
        _sequences(3) + "; " + FD),
    Row("latent_ode:spirals", "noisy 2-D spirals (800 / 200; 100 points, noise 0.3); 60 observed "
        "except 6, 40 extrapolated", "−ELBO per sequence of 54 points; interp / extrap MSE "
        "(nearest point)",
        _sequences(2),
        "— (not in the original)"),
    Row("latent_ode:adjoint", "the spirals, adaptive Tsit5 and adjoint gradients", "the same",
        "**{t[neg_elbo]:.1f}**; interp **{t[interp_mse]:.3f}**, extrap **{t[extrap_mse]:.2f}**"),
]


def summary(row: Row) -> dict | None:
  path = SUMMARIES / f"{row.workdir}.json"
  return json.loads(path.read_text()) if path.exists() else None


def run(names: list[str], force: bool) -> None:
  """Trains each row named (all when none) whose summary is missing (or every one, ``force``)."""
  unknown = set(names) - {r.name for r in ROWS}
  if unknown:
    sys.exit(f"no result rows named {sorted(unknown)}")
  SUMMARIES.mkdir(exist_ok=True)
  for row in ROWS:
    if (names and row.name not in names) or (summary(row) and not force):
      continue
    workdir = RUNS / row.workdir
    if force or not (workdir / "summary.json").exists():
      if force:
        shutil.rmtree(workdir, ignore_errors=True)
      print(row.command(str(workdir)), flush=True)
      subprocess.run([sys.executable, "-m", "m2m_jax.main", f"--config={row.name}",
                      f"--workdir={workdir}"], check=True, cwd=ROOT)
    shutil.copyfile(workdir / "summary.json", SUMMARIES / f"{row.workdir}.json")


def _cells(row: Row, s: dict | None) -> list[str]:
  value = row.value.format(t=s["test"], s=s) if s else "not run"
  hardware = f"{s['device_kind']} x{s['device_count']}, {s['wall_time_s']:.0f} s" if s else "—"
  return [f"`{row.name}`", row.data, row.metric, value, hardware, row.original,
          f"`{row.command('runs/' + row.workdir)}`"]


def table(rows: list[Row]) -> str:
  head = ["config:preset", "data", "metric", "value", "device, wall time", "original notebook",
          "command"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  lines += ["| " + " | ".join(_cells(row, summary(row))) + " |" for row in rows]
  return "\n".join(lines)


def _markers(marker: str) -> re.Pattern:
  return re.compile(rf"(<!-- {marker} -->\n)(.*?)(<!-- /{marker} -->)", re.S)


def between(path: pathlib.Path, marker: str) -> str:
  """The text between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``path``."""
  found = _markers(marker).search(path.read_text())
  if not found:
    sys.exit(f"{path} has no <!-- {marker} --> ... <!-- /{marker} --> markers")
  return found.group(2).removesuffix("\n")


def replace_between(path: pathlib.Path, marker: str, text: str) -> None:
  """Puts ``text`` between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``path``."""
  between(path, marker)
  path.write_text(_markers(marker).sub(lambda m: m.group(1) + text + "\n" + m.group(3),
                                       path.read_text()))


TABLES = {"docs/results.md": lambda: table(ROWS),
          "README.md": lambda: table([r for r in ROWS if ":" not in r.name or r.readme])}


def write() -> None:
  for path, make in TABLES.items():
    replace_between(ROOT / path, "results", make())


if __name__ == "__main__":
  command, *rest = sys.argv[1:] or ["write"]
  if command == "run":
    run([a for a in rest if a != "--force"], "--force" in rest)
  elif command == "write":
    write()
  else:
    sys.exit(__doc__)
