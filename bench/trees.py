"""Fit and predict of m2m_jax's tree estimators against scikit-learn (CPU), timed apart.

Decision tree, random forest, gradient boosting and AdaBoost, each with its scikit-learn twin
on the same hyperparameters and arrays, in the same process, through the public APIs as a user
calls them (``fit`` on the training rows, then ``predict`` on the test rows; the JAX input
checks and the binning of the features are part of its fit). The first JAX fit and predict
(tracing, compiling, one run) are timed apart; steady state is the best of ``--repeats`` calls
of each (fewer for the slow ones: no new round once a case's rounds took ``--budget``
seconds), JAX and scikit-learn interleaved so that load from other processes hits both alike,
JAX outputs blocked on before the clock stops. Both test accuracies must agree within a few
points before anything is timed, so that the bench never times a broken fit; a JAX call that
traces or compiles again in steady state is flagged.

  python bench/trees.py [--sizes small,large] [--estimators random_forest] [--json trees.json]
"""

import argparse
import contextlib
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import numpy as np
import scipy
import sklearn
import threadpoolctl
from sklearn import datasets
from sklearn.ensemble import (AdaBoostClassifier, HistGradientBoostingClassifier,
                              RandomForestClassifier)
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from m2m_jax import report
from m2m_jax.classic import adaboost, decision_tree, gradient_boosting, random_forest

ESTIMATORS = ("decision_tree", "random_forest", "gradient_boosting", "adaboost")
SIZES = ("tiny", "small", "large")
BUNDLED = ("iris", "wine", "breast_cancer", "digits")
# Synthetic sizes: (rows before the 80/20 split, features, informative features).
SYNTHETIC = {"tiny": (1_000, 8, 4), "large": (100_000, 32, 16)}
TEST_SHARE = 0.2

# Hyperparameters, shared by both libraries (see the cases); --quick shrinks them (QUICK).
TREE = {"max_depth": 10}
FOREST = {"n_estimators": 100, "max_depth": 10, "max_features": "sqrt", "bootstrap": True,
          "min_samples_leaf": 1}
BOOSTING = {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 6, "min_samples_leaf": 20,
            "l2_regularization": 0.0}
# scikit-learn's max_bins=255 bins the non-missing values into 255 bins and keeps a 256th for
# missing values (empty here); m2m_jax rejects NaN and has no such bin: its max_bins=255 gives
# the same 255 value bins at the same quantile thresholds (its 256 would add one more).
BOOSTING_BINS = 255
ADABOOST = {"n_estimators": 50, "learning_rate": 1.0, "max_depth": 1}
QUICK = {"decision_tree": {"max_depth": 2},
         "random_forest": {"n_estimators": 16, "max_depth": 2},
         "gradient_boosting": {"n_estimators": 10, "max_depth": 2},
         "adaboost": {"n_estimators": 10}}
# The largest gap allowed between the two test accuracies: 3 points, or 3 standard errors of
# the paired difference, sqrt(q / n_test) with q the share of test rows that exactly one of
# the two gets right (McNemar), the larger. Two forests drawn with different random numbers
# differ by more than 3 points on a few hundred rows; a broken fit still fails by far.
TOLERANCE_POINTS, TOLERANCE_ERRORS = 0.03, 3.0


# ----------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Data:
  """A stratified train / test split; ``name`` says where it came from."""

  name: str
  X_train: np.ndarray
  y_train: np.ndarray
  X_test: np.ndarray
  y_test: np.ndarray

  @property
  def n_classes(self) -> int:
    return len(np.unique(self.y_train))

  def describe(self) -> str:
    return (f"{self.name} {len(self.X_train)}/{len(self.X_test)}x{self.X_train.shape[1]} "
            f"C={self.n_classes}")


def _split(name: str, X, y) -> Data:
  parts = train_test_split(X, y, test_size=TEST_SHARE, random_state=0, stratify=y)
  return Data(name, *parts[::2], *parts[1::2])


def load(size: str, n_classes: int = 3) -> list[Data]:
  """The datasets of a size. small: iris, wine, breast cancer and digits as bundled (float64).
  tiny / large: make_classification (seed 0, float32) with n_classes classes, 1,000 x 8 with 4
  informative features or 100,000 x 32 with 16. All split 80/20, stratified, seed 0."""
  if size == "small":
    return [_split(name, *getattr(datasets, f"load_{name}")(return_X_y=True))
            for name in BUNDLED]
  n, d, informative = SYNTHETIC[size]
  X, y = datasets.make_classification(n_samples=n, n_features=d, n_informative=informative,
                                      n_classes=n_classes, random_state=0)
  return [_split("make_classification", X.astype(np.float32), y)]


# --------------------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
  """One benchmarked estimator: its m2m_jax module and ``fit`` keywords, and a factory of its
  scikit-learn twin given (hyperparameters, scikit-learn threads or -1 for all cores)."""

  estimator: str
  module: Any
  jax_kwargs: dict
  sklearn_name: str
  make_sklearn: Callable[[dict, int], Any]
  hyper: dict  # the shared hyperparameters, as m2m_jax names them


def cases(quick: bool = False) -> list[Case]:
  """Every benchmarked estimator, in table order (shrunk by --quick)."""
  def shared(name: str, base: dict) -> dict:
    return {**base, **(QUICK[name] if quick else {})}

  tree, forest = shared("decision_tree", TREE), shared("random_forest", FOREST)
  boosting, boost = shared("gradient_boosting", BOOSTING), shared("adaboost", ADABOOST)
  return [
      Case("decision_tree", decision_tree, tree, "DecisionTreeClassifier",
           lambda h, _: DecisionTreeClassifier(max_depth=h["max_depth"], random_state=0), tree),
      Case("random_forest", random_forest, forest, "RandomForestClassifier",
           lambda h, threads: RandomForestClassifier(
               n_estimators=h["n_estimators"], max_depth=h["max_depth"],
               max_features=h["max_features"], bootstrap=h["bootstrap"],
               min_samples_leaf=h["min_samples_leaf"], n_jobs=threads, random_state=0), forest),
      Case("gradient_boosting", gradient_boosting, {**boosting, "max_bins": BOOSTING_BINS},
           "HistGradientBoostingClassifier",
           lambda h, _: HistGradientBoostingClassifier(
               max_iter=h["n_estimators"], learning_rate=h["learning_rate"],
               max_depth=h["max_depth"], min_samples_leaf=h["min_samples_leaf"],
               l2_regularization=h["l2_regularization"], max_leaf_nodes=None,
               early_stopping=False, max_bins=BOOSTING_BINS, random_state=0), boosting),
      Case("adaboost", adaboost, boost, "AdaBoostClassifier",
           lambda h, _: AdaBoostClassifier(DecisionTreeClassifier(max_depth=h["max_depth"]),
                                           n_estimators=h["n_estimators"],
                                           learning_rate=h["learning_rate"], random_state=0),
           boost),
  ]


# -------------------------------------------------------------------------------------- timing

class CompileLog:
  """Counts JAX traces and XLA compiles (jax.monitoring events) and the seconds of tracing,
  lowering and compiling."""

  TRACE = "/jax/core/compile/jaxpr_trace_duration"
  LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
  COMPILE = "/jax/core/compile/backend_compile_duration"

  def __init__(self):
    self.events: list[tuple[str, float, str]] = []
    jax.monitoring.register_event_duration_secs_listener(self._record)

  def _record(self, event: str, duration: float, **kwargs) -> None:
    if event in (self.TRACE, self.LOWER, self.COMPILE):
      self.events.append((event, duration, str(kwargs.get("fun_name", "?"))))

  def since(self, start: int) -> dict:
    """Traces, compiles, their seconds and the compiled function names since ``start``."""
    new = self.events[start:]
    compiled = [f for e, _, f in new if e == self.COMPILE]
    return {"traces": sum(e == self.TRACE for e, _, _ in new), "compiles": len(compiled),
            "compile_s": sum(d for _, d, _ in new), "compiled": sorted(set(compiled))}


def clock(call: Callable[[], Any]) -> tuple[float, Any]:
  """(wall seconds, output) of ``call()``, JAX outputs blocked on before the clock stops."""
  start = time.perf_counter()
  out = jax.block_until_ready(call())
  return time.perf_counter() - start, out


def bench_case(case: Case, size: str, data: Data, repeats: int, budget: float, threads: int,
               log: CompileLog) -> dict:
  """First calls, the accuracy check, then (if it passed) the best of ``repeats`` interleaved
  steady-state rounds of JAX fit, JAX predict, scikit-learn fit and scikit-learn predict, no
  new round starting once the rounds so far took ``budget`` seconds (at least one round)."""
  limit = (lambda: threadpoolctl.threadpool_limits(threads)) if threads > 0 else \
      contextlib.nullcontext

  def jax_fit():
    return case.module.fit(data.X_train, data.y_train, **case.jax_kwargs)

  def jax_predict(params):
    return case.module.predict(params, data.X_test)

  def sk_fit():
    with limit():
      return clock(lambda: case.make_sklearn(case.hyper, threads or -1).fit(data.X_train,
                                                                            data.y_train))

  def sk_predict(model):
    with limit():
      return clock(lambda: model.predict(data.X_test))

  mark = len(log.events)
  jax_first_fit, params = clock(jax_fit)
  jax_first_predict, ours = clock(lambda: jax_predict(params))
  first = log.since(mark)
  sk_first_fit, model = sk_fit()
  sk_first_predict, theirs = sk_predict(model)
  right, right_ref = np.asarray(ours) == data.y_test, theirs == data.y_test
  acc, acc_ref = float(np.mean(right)), float(np.mean(right_ref))
  tolerance = max(TOLERANCE_POINTS,
                  TOLERANCE_ERRORS * math.sqrt(np.mean(right != right_ref) / len(data.y_test)))
  ok = abs(acc - acc_ref) <= tolerance
  best = dict.fromkeys(("jax_fit", "jax_predict", "sklearn_fit", "sklearn_predict"), math.nan)
  mark = len(log.events)
  done, start = 0, time.perf_counter()
  if ok:  # never time a broken fit
    best = dict.fromkeys(best, math.inf)
    while done < repeats and (done == 0 or time.perf_counter() - start < budget):
      done += 1
      seconds, params = clock(jax_fit)
      best["jax_fit"] = min(best["jax_fit"], seconds)
      best["jax_predict"] = min(best["jax_predict"], clock(lambda: jax_predict(params))[0])
      seconds, model = sk_fit()
      best["sklearn_fit"] = min(best["sklearn_fit"], seconds)
      best["sklearn_predict"] = min(best["sklearn_predict"], sk_predict(model)[0])
  steady = log.since(mark)
  same = float(np.mean(np.asarray(ours) == theirs))
  return {
      "size": size, "estimator": case.estimator, "sklearn": case.sklearn_name,
      "data": data.describe(), "dataset": data.name, "n_train": len(data.X_train),
      "n_test": len(data.X_test), "n_features": data.X_train.shape[1],
      "n_classes": data.n_classes, "hyperparameters": case.hyper,
      "jax_fit_kwargs": case.jax_kwargs, "sklearn_params": _params(case.make_sklearn(
          case.hyper, threads or -1)), "repeats": done, "steady_s": time.perf_counter() - start,
      "sklearn_fit_s": best["sklearn_fit"], "jax_fit_s": best["jax_fit"],
      "fit_ratio_sklearn_over_jax": best["sklearn_fit"] / best["jax_fit"],
      "sklearn_predict_s": best["sklearn_predict"], "jax_predict_s": best["jax_predict"],
      "predict_ratio_sklearn_over_jax": best["sklearn_predict"] / best["jax_predict"],
      "jax_compile_s": first["compile_s"], "jax_first_compiles": first["compiles"],
      "jax_first_fit_s": jax_first_fit, "jax_first_predict_s": jax_first_predict,
      "sklearn_first_fit_s": sk_first_fit, "sklearn_first_predict_s": sk_first_predict,
      "jax_steady_traces": steady["traces"], "jax_steady_compiles": steady["compiles"],
      "jax_steady_compiled": steady["compiled"],
      "accuracy_jax": acc, "accuracy_sklearn": acc_ref, "accuracy_tolerance": tolerance,
      "same_predictions": same, "check_ok": bool(ok),
      "check": f"acc {acc:.4f}/{acc_ref:.4f} {'ok' if ok else 'FAIL'} (tol {tolerance:.3f}, "
               f"{same:.0%} same)"}


def _params(model) -> dict:
  """A scikit-learn model's parameters, JSON-friendly (nested estimators by name)."""
  return {k: v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)
          for k, v in model.get_params(deep=False).items()}


# -------------------------------------------------------------------------------------- output

def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def environment(threads: int) -> dict:
  """Versions, devices, threads and load: what the numbers depend on."""
  with (threadpoolctl.threadpool_limits(threads) if threads > 0 else contextlib.nullcontext()):
    pools = [{"api": p.get("internal_api"), "prefix": p.get("prefix"),
              "num_threads": p.get("num_threads")} for p in threadpoolctl.threadpool_info()]
  openmp = [p["num_threads"] for p in pools if p["api"] == "openmp"]
  return {"jax": jax.__version__, "sklearn": sklearn.__version__, "numpy": np.__version__,
          "scipy": scipy.__version__, "python": platform.python_version(),
          "jax_devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
          "sklearn_threads": threads or max(openmp, default=os.cpu_count()),
          "sklearn_threads_capped": threads > 0, "random_forest_n_jobs": threads or -1,
          "sklearn_threadpools": pools, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
          "processor": cpu_model(), "load_average": list(os.getloadavg())}


def table(rows: list[dict]) -> str:
  """The results as a fixed-width text table (ratios sklearn s / JAX s: above 1, JAX faster)."""
  head = (f"{'size':<6}{'estimator':<18}{'data':<38}{'fit sk s':>9}{'JAX s':>9}{'ratio':>7}"
          f"{'pred sk s':>10}{'JAX s':>9}{'ratio':>7}{'compile':>8}  check")
  lines = [head, "-" * (len(head) + 30)]
  for r in rows:
    flag = "" if r["jax_steady_compiles"] == 0 else f"  RECOMPILED x{r['jax_steady_compiles']}"
    lines.append(
        f"{r['size']:<6}{r['estimator']:<18}{r['data']:<38}{r['sklearn_fit_s']:>9.3f}"
        f"{r['jax_fit_s']:>9.3f}{r['fit_ratio_sklearn_over_jax']:>7.2f}"
        f"{r['sklearn_predict_s']:>10.4f}{r['jax_predict_s']:>9.4f}"
        f"{r['predict_ratio_sklearn_over_jax']:>7.2f}{r['jax_compile_s']:>8.1f}  {r['check']}"
        f"{flag}")
  return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--sizes", default=None,
                 help="comma-separated from tiny, small, large (default small,large; quick: tiny)")
  p.add_argument("--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS))
  p.add_argument("--repeats", type=int, default=None,
                 help="best of at most this many (default 5 small, 3 large; quick 2)")
  p.add_argument("--budget", type=float, default=60.0,
                 help="no new steady-state round of a case once its rounds took this many "
                 "seconds (default 60; at least one round)")
  p.add_argument("--n-classes", type=int, default=3,
                 help="classes of the make_classification sets (default 3)")
  p.add_argument("--sklearn-threads", type=int, default=0,
                 help="scikit-learn's OpenMP / BLAS threads (threadpoolctl) and the random "
                 "forest's n_jobs; default 0: every core, scikit-learn's own default")
  p.add_argument("--quick", action="store_true",
                 help="the tiny synthetic set and few, shallow trees: a smoke run")
  p.add_argument("--json", metavar="PATH", help="also write the results here")
  args = p.parse_args(argv)
  args.sizes = (args.sizes or ("tiny" if args.quick else "small,large")).split(",")
  for size in args.sizes:
    if size not in SIZES:
      p.error(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
  if args.sklearn_threads < 0:
    p.error("--sklearn-threads must be >= 0 (0: every core)")
  return args


def repeats_for(size: str, args: argparse.Namespace) -> int:
  if args.repeats:
    return args.repeats
  return 2 if args.quick else 3 if size == "large" else 5


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the benchmark, prints the table and returns (and optionally writes) the results;
  exits with status 1 when an accuracy check failed."""
  args = parse_args(argv)
  env = environment(args.sklearn_threads)
  print(f"jax {env['jax']} on {env['jax_devices']}, scikit-learn {env['sklearn']} on "
        f"{env['sklearn_threads']} threads, {env['cpu_count']} cores, load average "
        f"{env['load_average'][0]:.2f}", flush=True)
  if env["sklearn_threads"] > 1 and env["load_average"][0] > 0.5:
    print("  the machine is busy: scikit-learn's OpenMP threads may wait on each other "
          "(HistGradientBoosting most); compare with --sklearn-threads 1", flush=True)
  log = CompileLog()
  selected = [c for c in cases(args.quick) if c.estimator in args.estimators]
  rows = []
  for size in args.sizes:
    for data in load(size, args.n_classes):
      for case in selected:
        r = bench_case(case, size, data, repeats_for(size, args), args.budget,
                       args.sklearn_threads, log)
        print(f"  {size} {r['estimator']} {r['data']}: fit sklearn {r['sklearn_fit_s']:.3f} s "
              f"JAX {r['jax_fit_s']:.3f} s, predict sklearn {r['sklearn_predict_s']:.4f} s "
              f"JAX {r['jax_predict_s']:.4f} s, compile {r['jax_compile_s']:.1f} s, "
              f"best of {r['repeats']}, {r['check']}", flush=True)
        rows.append(r)
  env["load_average_end"] = list(os.getloadavg())
  print(table(rows))
  failed = [f"{r['size']} {r['estimator']} {r['dataset']} ({r['check']})"
            for r in rows if not r["check_ok"]]
  recompiled = [f"{r['size']} {r['estimator']} {r['dataset']}: "
                f"{', '.join(r['jax_steady_compiled'])}" for r in rows if r["jax_steady_compiles"]]
  if recompiled:
    print("JAX compiled again in steady state: " + "; ".join(recompiled))
  print(f"load average at the end {env['load_average_end'][0]:.2f}")
  results = {"environment": env, "results": rows}
  if args.json:
    report.write_json(args.json, results)
  if failed:
    print("accuracy check FAILED, not timed: " + "; ".join(failed))
    sys.exit(1)
  return results


if __name__ == "__main__":
  main()
