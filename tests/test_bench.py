"""The benchmarks' --quick smoke runs: every row present, speeds finite, results equivalent."""

import argparse
import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"mlp", "cnn28", "cnn16", "simple_cnn", "resnet20", "unet", "vae", "vit", "swin",
          "clip"}
FIELDS = ("jax_examples_per_s", "torch_examples_per_s", "ratio_jax_over_torch", "jax_compile_s")
CLASSIC = {("linear_regression", "least_squares", "LinearRegression"),
           ("linear_regression", "ridge", "Ridge"), ("linear_regression", "lasso", "Lasso"),
           ("linear_regression", "elastic_net", "ElasticNet"),
           ("logistic_regression", "logistic", "LogisticRegression"),
           ("knn", "knn", "brute"), ("knn", "knn", "auto"), ("kmeans", "kmeans", "KMeans"),
           ("pca", "pca_full", "PCA full"), ("pca", "pca_randomized", "PCA randomized")}
TREES = {("decision_tree", "DecisionTreeClassifier"), ("random_forest", "RandomForestClassifier"),
         ("gradient_boosting", "HistGradientBoostingClassifier"),
         ("adaboost", "AdaBoostClassifier")}


@pytest.mark.parametrize("models", [pytest.param(("mlp",), id="mlp"),
                                    pytest.param(tuple(sorted(MODELS)), id="all",
                                                 marks=pytest.mark.slow)])
def test_quick_benchmark(models, tmp_path):
  """bench/train_step.py --quick runs the models in both frameworks and reports positive speeds
  (the MLP in the fast suite; every model under -m slow)."""
  pytest.importorskip("torch")
  out = tmp_path / "bench.json"
  # One thread each: on a loaded machine OpenMP threads waiting on each other take minutes.
  subprocess.run([sys.executable, os.path.join(ROOT, "bench", "train_step.py"), "--quick",
                  "--batch-size", "16", "--threads", "1", "--models", *models,
                  "--json", str(out)], check=True, timeout=120)
  results = json.loads(out.read_text())
  assert results["environment"]["cores"] == results["environment"]["torch_threads"] == 1
  rows = results["results"]
  assert {r["model"] for r in rows} == set(models)
  for r in rows:
    for field in FIELDS:
      assert math.isfinite(r[field]) and r[field] > 0, (r["model"], field, r[field])
    low, high = r["ratio_min_max"]
    assert low <= r["ratio_jax_over_torch"] <= high and r["threads"] == 1


@pytest.mark.parametrize("estimators", [pytest.param(("knn", "pca"), id="knn,pca"),
                                        pytest.param(("linear_regression", "logistic_regression",
                                                      "knn", "kmeans", "pca"), id="all",
                                                     marks=pytest.mark.slow)])
def test_quick_classic_benchmark(estimators, tmp_path):
  """bench/classic.py --quick: a row per estimator and scikit-learn twin, each with a finite
  speed ratio, a passing equivalence check and no JAX recompilation in steady state (k-NN and
  PCA in the fast suite; every estimator under -m slow)."""
  out = tmp_path / "classic.json"
  result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "classic.py"), "--quick",
                           "--estimators", *estimators, "--json", str(out)], check=True,
                          timeout=120, capture_output=True, text=True)
  rows = json.loads(out.read_text())["results"]
  expected = {row for row in CLASSIC if row[0] in estimators}
  assert {(r["estimator"], r["case"], r["sklearn"]) for r in rows} == expected
  assert len(rows) == len(expected)
  for r in rows:
    name = (r["case"], r["sklearn"])
    for field in ("jax_s", "sklearn_s", "ratio_jax_over_sklearn", "jax_first_call_s"):
      assert math.isfinite(r[field]) and r[field] > 0, (name, field, r[field])
    assert r["check_ok"], (name, r["check"])
    assert r["jax_steady_compiles"] == 0, (name, r["jax_steady_compiled"])
    assert r["case"] in result.stdout
  assert "FAILED" not in result.stdout


@pytest.mark.parametrize("estimators", [pytest.param(("decision_tree",), id="decision_tree"),
                                        pytest.param(tuple(sorted(e for e, _ in TREES)), id="all",
                                                     marks=pytest.mark.slow)])
def test_quick_trees_benchmark(estimators, tmp_path):
  """bench/trees.py --quick (mostly JAX compiles): a row per tree estimator and its
  scikit-learn twin with fit and predict timed, finite speed ratios, agreeing accuracies and no
  JAX recompilation in steady state (the decision tree in the fast suite; every estimator under
  -m slow)."""
  out = tmp_path / "trees.json"
  # One scikit-learn thread: on a loaded machine HistGradientBoosting's OpenMP threads wait on
  # each other for tens of seconds.
  result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "trees.py"), "--quick",
                           "--sklearn-threads", "1", "--estimators", *estimators, "--json",
                           str(out)], timeout=120, capture_output=True, text=True)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  rows = json.loads(out.read_text())["results"]
  expected = {row for row in TREES if row[0] in estimators}
  assert {(r["estimator"], r["sklearn"]) for r in rows} == expected
  assert len(rows) == len(expected)
  for r in rows:
    for field in ("sklearn_fit_s", "jax_fit_s", "fit_ratio_sklearn_over_jax", "sklearn_predict_s",
                  "jax_predict_s", "predict_ratio_sklearn_over_jax", "jax_compile_s"):
      assert math.isfinite(r[field]) and r[field] > 0, (r["estimator"], field, r[field])
    assert r["check_ok"], (r["estimator"], r["check"])
    assert r["repeats"] >= 1
    assert r["jax_steady_compiles"] == 0, (r["estimator"], r["jax_steady_compiled"])
    assert r["estimator"] in result.stdout
  assert "FAILED" not in result.stdout


def test_accelerator_benchmark_quick(tmp_path):
  """bench/accelerator.py --quick (tiny models of the four families at 32x32, Faster R-CNN at
  64x64, on the CPU): each row has a positive speed and, but Faster R-CNN, XLA's forward FLOP
  count; MFU only for a chip of known peak."""
  sys.path.insert(0, os.path.join(ROOT, "bench"))
  try:
    import accelerator
  finally:
    sys.path.pop(0)
  rows = accelerator.main(["--quick", "--json", str(tmp_path / "a.json")])["results"]
  assert [r["model"] for r in rows] == ["vit:b16", "swin:swin_t", "clip:coco",
                                        "faster_rcnn:voc2007"]
  for r in rows:
    assert r["images_per_s"] > 0 and r["mfu"] is None
    assert (r["forward_gflops_per_image"] is None) == (r["model"] == "faster_rcnn:voc2007")
    assert r["forward_gflops_per_image"] is None or r["forward_gflops_per_image"] > 0
  assert json.loads((tmp_path / "a.json").read_text())["results"] == rows


@pytest.mark.slow
def test_detection_benchmark_times_both_steps(monkeypatch):
  """bench/detection.py on one 64-pixel image (its bench function in this process, torchvision's
  compiled operators replaced by the reference kernels): a training and an inference row, each
  with finite speeds and the RoIs both box heads ran on."""
  from conftest import torchvision_detection
  torchvision_detection()
  monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
  import detection
  args = argparse.Namespace(batch_size=1, image_size=64, boxes=2, steps=1, repeats=1)
  rows = detection.bench(args)
  assert [r["step"] for r in rows] == ["train", "infer"]
  assert [r["jax_rois_per_image"] for r in rows] == [512, 1000]
  for r in rows:
    assert r["params"] >= r["torch_params"] > 4e7 and r["torch_rois_per_image"] > 0, r
    for field in ("jax_images_per_s", "torch_images_per_s", "ratio_jax_over_torch"):
      assert math.isfinite(r[field]) and r[field] > 0, (r["step"], field, r[field])


@pytest.mark.slow
def test_conv_benchmark_times_the_three_weight_gradients(tmp_path):
  """bench/conv.py: each convolution's weight gradient by XLA, per-tap matmuls and PyTorch, and
  each transposed convolution's gradients by XLA, the sub-pixel form and PyTorch (the JAX pairs
  checked equal inside), with finite times."""
  out = tmp_path / "conv.json"
  subprocess.run([sys.executable, os.path.join(ROOT, "bench", "conv.py"), "--steps", "1",
                  "--repeats", "1", "--json", str(out)], check=True, timeout=300)
  rows = json.loads(out.read_text())["results"]
  assert [r["method"] for r in rows] == ["per_tap"] * 6 + ["sub_pixel"] * 3
  for r in rows:
    for field in ("xla_ms", "ours_ms", "torch_ms"):
      assert math.isfinite(r[field]) and r[field] > 0, (r["case"], field)
