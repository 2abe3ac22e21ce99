"""Fit + predict (or fit + transform) of each m2m_jax.classic estimator against scikit-learn (CPU).

Both libraries run the same hyperparameters on the same arrays in the same process, through
their public APIs as a user would call them (``fit`` then ``predict`` / ``transform``; the JAX
input checks are part of the cost). The first JAX call (tracing, compiling, one run) is timed
apart; steady state is the best of ``--repeats`` calls, JAX and scikit-learn interleaved so that
load from other processes hits both alike, JAX outputs blocked on before the clock stops.
scikit-learn keeps its default threading. Every pair is checked for equivalent results (R^2,
objective, accuracy, inertia, explained variance) so that the bench never compares a broken fit;
a JAX call that traces or compiles again in steady state is flagged.

  python bench/classic.py [--sizes small,large] [--estimators knn pca] [--json results.json]
"""

import argparse
import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import numpy as np
import scipy
import sklearn
import threadpoolctl
from sklearn import datasets
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from m2m_jax import report
from m2m_jax.classic import kmeans, knn, linear_regression, logistic_regression, pca

ESTIMATORS = ("linear_regression", "logistic_regression", "knn", "kmeans", "pca")
SIZES = ("tiny", "small", "large")
# Synthetic sizes: (training rows, query rows, features). 'small' is scikit-learn's bundled sets.
SYNTHETIC = {"tiny": (1_000, 200, 16), "large": (200_000, 10_000, 64)}
N_COMPONENTS = 10
LASSO_ALPHA, ENET_ALPHA, ENET_L1_RATIO = 0.1, 0.1, 0.5
LOGISTIC = {"C": 1.0, "max_iter": 1000, "tol": 1e-4}
KMEANS = {"n_clusters": 8, "n_init": 10, "max_iter": 300, "tol": 1e-4}
RANDOMIZED = {"iterated_power": 4, "n_oversamples": 10}


# ----------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Data:
  """A train / query split; ``name`` says where it came from."""

  name: str
  X_train: np.ndarray
  y_train: np.ndarray
  X_test: np.ndarray
  y_test: np.ndarray

  def describe(self) -> str:
    return f"{self.name} {len(self.X_train)}/{len(self.X_test)}x{self.X_train.shape[1]}"


def _split(name: str, X, y, n_test: int | float, stratify: bool = False) -> Data:
  parts = train_test_split(X, y, test_size=n_test, random_state=0,
                           stratify=y if stratify else None)
  return Data(name, *parts[::2], *parts[1::2])


def _scaled(data: Data) -> Data:
  """Features standardised on the training part (the usual step before logistic regression)."""
  scaler = StandardScaler().fit(data.X_train)
  dtype = data.X_train.dtype
  return Data(data.name + " std", scaler.transform(data.X_train).astype(dtype), data.y_train,
              scaler.transform(data.X_test).astype(dtype), data.y_test)


def load(kind: str, size: str) -> Data:
  """kind 'regression' | 'classification' | 'scaled' (standardised classification) | 'blobs'
  (k-means) | 'low_rank' (PCA, whose randomized solver is meant for a decaying spectrum).

  small: diabetes (regression), else digits, as bundled (float64), 80/20 split. tiny / large:
  make_regression (a quarter of the features informative, noise 10), make_classification
  (10 classes, half the features informative), make_blobs (8 centres, standard deviation 4:
  they overlap, and some k-means++ starts take tens of Lloyd steps) or make_low_rank_matrix
  (effective rank 10, times sqrt(n) for entries of order 1); float32, seed 0.
  """
  if kind == "scaled":
    return _scaled(load("classification", size))
  if size == "small":
    if kind == "regression":
      return _split("diabetes", *datasets.load_diabetes(return_X_y=True), 0.2)
    return _split("digits", *datasets.load_digits(return_X_y=True), 0.2, stratify=True)
  n_train, n_test, d = SYNTHETIC[size]
  n = n_train + n_test
  if kind == "regression":
    X, y = datasets.make_regression(n, d, n_informative=d // 4, noise=10.0, random_state=0)
    name = "make_regression"
  elif kind == "blobs":
    X, y = datasets.make_blobs(n, d, centers=KMEANS["n_clusters"], cluster_std=4.0, random_state=0)
    name = "make_blobs"
  elif kind == "low_rank":
    X = datasets.make_low_rank_matrix(n, d, effective_rank=N_COMPONENTS, tail_strength=0.1,
                                      random_state=0) * math.sqrt(n)  # O(1) entries
    y, name = np.zeros(n), "make_low_rank_matrix"
  else:
    X, y = datasets.make_classification(n, d, n_informative=d // 2, n_redundant=0, n_classes=10,
                                        n_clusters_per_class=1, random_state=0)
    name = "make_classification"
  X, y = X.astype(np.float32), (y.astype(np.float32) if kind == "regression" else y)
  return Data(name, X[:n_train], y[:n_train], X[n_train:], y[n_train:])


# -------------------------------------------------------------------------------------- checks

@dataclass(frozen=True)
class Check:
  """One equivalence check: a metric of both fits, whether they agree, and supporting detail."""

  metric: str
  jax: float
  sklearn: float
  ok: bool
  detail: str = ""

  def __str__(self) -> str:
    return (f"{self.metric} {self.jax:.4g}/{self.sklearn:.4g} {'ok' if self.ok else 'FAIL'}"
            + (f" ({self.detail})" if self.detail else ""))


def _relative(a: float, b: float) -> float:
  return abs(a - b) / max(abs(b), 1e-30)


def _r2(y, prediction) -> float:
  y, prediction = np.asarray(y, np.float64), np.asarray(prediction, np.float64)
  return 1 - np.sum((y - prediction) ** 2) / np.sum((y - y.mean()) ** 2)


def _enet_objective(X, y, coef, intercept, alpha, l1_ratio) -> float:
  """scikit-learn's ElasticNet objective in float64 (Lasso: l1_ratio = 1)."""
  X, y, coef = np.asarray(X, np.float64), np.asarray(y, np.float64), np.asarray(coef, np.float64)
  r = y - X @ coef - float(intercept)
  return (r @ r / (2 * len(y)) + alpha * l1_ratio * np.abs(coef).sum()
          + alpha * (1 - l1_ratio) / 2 * coef @ coef)


def check_least_squares(data: Data, ours, theirs) -> Check:
  """Test R^2 within 1e-4 and coefficients within 1e-3 relative (float32 against float64)."""
  (params, prediction), (model, reference) = ours, theirs
  coef_err = (np.linalg.norm(np.asarray(params.coef_, np.float64) - model.coef_)
              / np.linalg.norm(model.coef_))
  r2, r2_ref = _r2(data.y_test, prediction), _r2(data.y_test, reference)
  return Check("R2", r2, r2_ref, abs(r2 - r2_ref) <= 1e-4 and coef_err <= 1e-3,
               f"coef rel err {coef_err:.1e}")


def check_sparse(alpha: float, l1_ratio: float):
  """Training objective within 1e-3 relative, test R^2 within 1e-3; detail: nonzero coefficients."""
  def check(data: Data, ours, theirs) -> Check:
    (params, prediction), (model, reference) = ours, theirs
    f = _enet_objective(data.X_train, data.y_train, params.coef_, params.intercept_, alpha,
                        l1_ratio)
    f_ref = _enet_objective(data.X_train, data.y_train, model.coef_, model.intercept_, alpha,
                            l1_ratio)
    r2, r2_ref = _r2(data.y_test, prediction), _r2(data.y_test, reference)
    nonzero = (int(np.sum(np.asarray(params.coef_) != 0)), int(np.sum(model.coef_ != 0)))
    return Check("objective", f, f_ref, _relative(f, f_ref) <= 1e-3 and abs(r2 - r2_ref) <= 1e-3,
                 f"R2 {r2:.4f}/{r2_ref:.4f}, nonzero {nonzero[0]}/{nonzero[1]} of "
                 f"{len(model.coef_)}, iters {int(params.n_iter_)}/{model.n_iter_}")
  return check


def check_logistic(data: Data, ours, theirs) -> Check:
  """Test accuracy within 1 point, test log-loss within 2% relative."""
  (params, prediction), (model, reference) = ours, theirs
  acc, acc_ref = np.mean(np.asarray(prediction) == data.y_test), np.mean(reference == data.y_test)
  proba = np.asarray(logistic_regression.predict_proba(params, data.X_test), np.float64)
  rows = np.arange(len(data.y_test))
  loss = -np.mean(np.log(np.maximum(proba[rows, data.y_test], 1e-15)))
  loss_ref = -np.mean(np.log(np.maximum(model.predict_proba(data.X_test)[rows, data.y_test],
                                        1e-15)))
  return Check("accuracy", acc, acc_ref,
               abs(acc - acc_ref) <= 0.01 and _relative(loss, loss_ref) <= 0.02,
               f"log-loss {loss:.4f}/{loss_ref:.4f}, iters {int(params.n_iter_)}/"
               f"{int(model.n_iter_[0])}")


def check_knn(data: Data, ours, theirs) -> Check:
  """Test accuracy within half a point and 99% identical predictions (exact distance ties may
  go either way); detail: the algorithm scikit-learn ran ('auto' is brute above 15 features)."""
  (_, prediction), (model, reference) = ours, theirs
  prediction = np.asarray(prediction)
  acc, acc_ref = np.mean(prediction == data.y_test), np.mean(reference == data.y_test)
  same = np.mean(prediction == reference)
  return Check("accuracy", acc, acc_ref, abs(acc - acc_ref) <= 0.005 and same >= 0.99,
               f"{same:.2%} same predictions, sklearn ran {model._fit_method}")


def check_kmeans(data: Data, ours, theirs) -> Check:
  """Training inertia within 1% relative (different seeds: different restarts)."""
  (params, _), (model, _) = ours, theirs
  J, J_ref = float(params.inertia_), float(model.inertia_)
  return Check("inertia", J, J_ref, _relative(J, J_ref) <= 0.01,
               f"iters {int(params.n_iter_)}/{model.n_iter_}")


def check_pca(data: Data, ours, theirs) -> Check:
  """Explained variance of the k components within 1e-3 relative (sum and largest error) and
  the same subspace (||V V_ref^T||_F^2 / k >= 0.999)."""
  (params, _), (model, _) = ours, theirs
  variance = np.asarray(params.explained_variance_, np.float64)
  worst = np.max(np.abs(variance - model.explained_variance_) / model.explained_variance_)
  overlap = np.sum((np.asarray(params.components_, np.float64) @ model.components_.T) ** 2)
  overlap /= len(variance)
  total, total_ref = variance.sum(), model.explained_variance_.sum()
  return Check("variance", total, total_ref,
               _relative(total, total_ref) <= 1e-3 and worst <= 1e-2 and overlap >= 0.999,
               f"worst component {worst:.1e}, subspace {overlap:.5f}")


# --------------------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
  """One benchmarked estimator: a JAX run, its scikit-learn twins by label, the data and check.

  Each run takes a :class:`Data`, fits on the training part and predicts (or transforms) the
  query part, and returns (fitted model, output).
  """

  name: str
  estimator: str  # the m2m_jax.classic module, as --estimators names it
  data: str  # a kind of :func:`load`
  run_jax: Callable[[Data], Any]
  sklearn: dict[str, Callable[[Data], Any]]
  check: Callable[[Data, Any, Any], Check]


def _jax_run(module, fit_kwargs: dict, method: str = "predict") -> Callable[[Data], Any]:
  def run(data: Data):
    params = module.fit(data.X_train, data.y_train, **fit_kwargs)
    return jax.block_until_ready((params, getattr(module, method)(params, data.X_test)))
  return run


def _sklearn_run(make: Callable[[], Any], method: str = "predict") -> Callable[[Data], Any]:
  def run(data: Data):
    model = make().fit(data.X_train, data.y_train)
    return model, getattr(model, method)(data.X_test)
  return run


def cases() -> list[Case]:
  """Every benchmarked estimator, in table order."""
  lr, lg = linear_regression, logistic_regression
  return [
      Case("least_squares", "linear_regression", "regression", _jax_run(lr, {}),
           {"LinearRegression": _sklearn_run(LinearRegression)}, check_least_squares),
      Case("ridge", "linear_regression", "regression", _jax_run(lr, {"alpha": 1.0}),
           {"Ridge": _sklearn_run(lambda: Ridge(alpha=1.0))}, check_least_squares),
      Case("lasso", "linear_regression", "regression",
           _jax_run(lr, {"alpha": LASSO_ALPHA, "l1_ratio": 1.0}),
           {"Lasso": _sklearn_run(lambda: Lasso(alpha=LASSO_ALPHA))},
           check_sparse(LASSO_ALPHA, 1.0)),
      Case("elastic_net", "linear_regression", "regression",
           _jax_run(lr, {"alpha": ENET_ALPHA, "l1_ratio": ENET_L1_RATIO}),
           {"ElasticNet": _sklearn_run(lambda: ElasticNet(alpha=ENET_ALPHA,
                                                          l1_ratio=ENET_L1_RATIO))},
           check_sparse(ENET_ALPHA, ENET_L1_RATIO)),
      Case("logistic", "logistic_regression", "scaled", _jax_run(lg, LOGISTIC),
           {"LogisticRegression": _sklearn_run(lambda: LogisticRegression(solver="lbfgs",
                                                                          **LOGISTIC))},
           check_logistic),
      Case("knn", "knn", "classification", _jax_run(knn, {"n_neighbors": 5}),
           {"brute": _sklearn_run(lambda: KNeighborsClassifier(5, algorithm="brute")),
            "auto": _sklearn_run(lambda: KNeighborsClassifier(5))}, check_knn),
      Case("kmeans", "kmeans", "blobs", _jax_run(kmeans, KMEANS),
           {"KMeans": _sklearn_run(lambda: KMeans(algorithm="lloyd", random_state=0, **KMEANS))},
           check_kmeans),
      Case("pca_full", "pca", "low_rank",
           _jax_run(pca, {"n_components": N_COMPONENTS, "svd_solver": "full"}, "transform"),
           {"PCA full": _sklearn_run(lambda: PCA(N_COMPONENTS, svd_solver="full"), "transform")},
           check_pca),
      Case("pca_randomized", "pca", "low_rank",
           _jax_run(pca, {"n_components": N_COMPONENTS, "svd_solver": "randomized",
                          **RANDOMIZED}, "transform"),
           {"PCA randomized": _sklearn_run(
               lambda: PCA(N_COMPONENTS, svd_solver="randomized", random_state=0, **RANDOMIZED),
               "transform")},
           check_pca),
  ]


# -------------------------------------------------------------------------------------- timing

class CompileLog:
  """Counts JAX traces and XLA compiles (jax.monitoring events) and their seconds."""

  TRACE = "/jax/core/compile/jaxpr_trace_duration"
  COMPILE = "/jax/core/compile/backend_compile_duration"

  def __init__(self):
    self.events: list[tuple[str, float, str]] = []
    jax.monitoring.register_event_duration_secs_listener(self._record)

  def _record(self, event: str, duration: float, **kwargs) -> None:
    if event in (self.TRACE, self.COMPILE):
      self.events.append((event, duration, str(kwargs.get("fun_name", "?"))))

  def since(self, start: int) -> dict:
    """Traces, compiles, compile seconds and compiled function names since ``start`` events."""
    new = self.events[start:]
    compiles = [(d, f) for e, d, f in new if e == self.COMPILE]
    return {"traces": sum(e == self.TRACE for e, _, _ in new), "compiles": len(compiles),
            "compile_s": sum(d for d, _ in compiles), "compiled": sorted({f for _, f in compiles})}


def timed(run: Callable[[Data], Any], data: Data) -> tuple[float, Any]:
  """(wall seconds, output) of ``run(data)``; JAX runs block on their outputs themselves."""
  start = time.perf_counter()
  out = run(data)
  return time.perf_counter() - start, out


def bench_case(case: Case, size: str, data: Data, repeats: int, log: CompileLog) -> list[dict]:
  """One row per scikit-learn twin: best steady-state seconds of both, first calls, the check."""
  mark = len(log.events)
  jax_first, ours = timed(case.run_jax, data)
  first = log.since(mark)
  sk_first, theirs = {}, {}
  for label, run in case.sklearn.items():
    sk_first[label], theirs[label] = timed(run, data)
  runs = {"jax": case.run_jax, **case.sklearn}
  best = dict.fromkeys(runs, math.inf)
  mark = len(log.events)
  for _ in range(repeats):
    for label, run in runs.items():
      best[label] = min(best[label], timed(run, data)[0])
  steady = log.since(mark)
  rows = []
  for label in case.sklearn:
    check = case.check(data, ours, theirs[label])
    rows.append({
        "size": size, "estimator": case.estimator, "case": case.name, "sklearn": label,
        "data": data.describe(), "n_train": len(data.X_train), "n_test": len(data.X_test),
        "n_features": data.X_train.shape[1], "repeats": repeats,
        "jax_s": best["jax"], "sklearn_s": best[label],
        "ratio_jax_over_sklearn": best[label] / best["jax"],
        "jax_first_call_s": jax_first, "jax_first_call_compile_s": first["compile_s"],
        "jax_first_call_compiles": first["compiles"], "sklearn_first_call_s": sk_first[label],
        "jax_steady_traces": steady["traces"], "jax_steady_compiles": steady["compiles"],
        "jax_steady_compiled": steady["compiled"],
        "check_metric": check.metric, "check_jax": float(check.jax),
        "check_sklearn": float(check.sklearn), "check_ok": bool(check.ok),
        "check_detail": check.detail, "check": str(check)})
  return rows


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


def environment() -> dict:
  """Versions, devices, threads and load: what the numbers depend on."""
  pools = [{"api": p.get("internal_api"), "prefix": p.get("prefix"),
            "num_threads": p.get("num_threads")} for p in threadpoolctl.threadpool_info()]
  return {"jax": jax.__version__, "sklearn": sklearn.__version__, "numpy": np.__version__,
          "scipy": scipy.__version__, "python": platform.python_version(),
          "jax_devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
          "sklearn_threadpools": pools, "processor": cpu_model(),
          "load_average": list(os.getloadavg())}


def table(rows: list[dict]) -> str:
  """The results as a fixed-width text table (ratio above 1: JAX faster)."""
  head = (f"{'size':<6}{'case':<15}{'sklearn':<19}{'data':<34}{'JAX s':>9}{'sklearn s':>11}"
          f"{'JAX/sk':>8}{'JAX 1st s':>10}  check")
  lines = [head, "-" * (len(head) + 48)]
  for r in rows:
    flag = "" if r["jax_steady_compiles"] == 0 else f"  RECOMPILED x{r['jax_steady_compiles']}"
    lines.append(f"{r['size']:<6}{r['case']:<15}{r['sklearn']:<19}{r['data']:<34}"
                 f"{r['jax_s']:>9.4f}{r['sklearn_s']:>11.4f}{r['ratio_jax_over_sklearn']:>8.2f}"
                 f"{r['jax_first_call_s']:>10.2f}  {r['check']}{flag}")
  return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  names = {c.name for c in cases()}
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--sizes", default=None,
                 help="comma-separated from tiny, small, large (default small,large; quick: tiny)")
  p.add_argument("--estimators", nargs="+", choices=ESTIMATORS + tuple(sorted(names)),
                 default=list(ESTIMATORS), help="m2m_jax.classic modules or single cases")
  p.add_argument("--repeats", type=int, default=None,
                 help="best of this many (default 10 small, 3 large; quick 2)")
  p.add_argument("--sklearn-threads", type=int, default=None,
                 help="cap scikit-learn's OpenMP / BLAS threads (threadpoolctl; default: its own)")
  p.add_argument("--quick", action="store_true", help="tiny synthetic sizes: a smoke run")
  p.add_argument("--json", metavar="PATH", help="also write the results here")
  args = p.parse_args(argv)
  args.sizes = (args.sizes or ("tiny" if args.quick else "small,large")).split(",")
  for size in args.sizes:
    if size not in SIZES:
      p.error(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
  return args


def repeats_for(size: str, args: argparse.Namespace) -> int:
  if args.repeats:
    return args.repeats
  return 2 if args.quick else 3 if size == "large" else 10


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the benchmark, prints the table and returns (and optionally writes) the results."""
  args = parse_args(argv)
  if args.sklearn_threads:
    threadpoolctl.threadpool_limits(args.sklearn_threads)  # for the rest of the process
  env = environment()
  env["sklearn_threads_cap"] = args.sklearn_threads
  print(f"jax {env['jax']} on {env['jax_devices']}, scikit-learn {env['sklearn']}, "
        f"{env['cpu_count']} cores, load average {env['load_average'][0]:.2f}", flush=True)
  log = CompileLog()
  selected = [c for c in cases() if c.estimator in args.estimators or c.name in args.estimators]
  rows = []
  for size in args.sizes:
    loaded: dict[str, Data] = {}
    for case in selected:
      if case.data not in loaded:
        loaded[case.data] = load(case.data, size)
      new = bench_case(case, size, loaded[case.data], repeats_for(size, args), log)
      for r in new:
        print(f"  {size} {r['case']} vs {r['sklearn']}: JAX {r['jax_s']:.4f} s, sklearn "
              f"{r['sklearn_s']:.4f} s, first JAX call {r['jax_first_call_s']:.2f} s", flush=True)
      rows += new
  env["load_average_end"] = list(os.getloadavg())
  print(table(rows))
  failed = [f"{r['size']} {r['case']} vs {r['sklearn']}" for r in rows if not r["check_ok"]]
  recompiled = [f"{r['size']} {r['case']}: {', '.join(r['jax_steady_compiled'])}"
                for r in rows if r["jax_steady_compiles"]]
  if failed:
    print("equivalence check FAILED: " + "; ".join(failed))
  if recompiled:
    print("JAX compiled again in steady state: " + "; ".join(recompiled))
  print(f"load average at the end {env['load_average_end'][0]:.2f}")
  results = {"environment": env, "results": rows}
  if args.json:
    report.write_json(args.json, results)
  return results


if __name__ == "__main__":
  main()
