"""Shared test setup: quiet progress bars, one cache of trained sample-quality judges for the
session, fast XLA compiles, the longest tests first, subprocess helpers for the CLI."""

import atexit
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types

import pytest

os.environ.setdefault("M2M_NO_PROGRESS", "1")
# One OpenMP thread for scikit-learn, PyTorch and BLAS in each of the two pytest-xdist workers:
# on two cores busy with both workers, more threads wait on each other (scikit-learn's KMeans
# took 2.7 s instead of 0.07 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Trained sample-quality judges (m2m_jax.algorithms.sample_quality): one cache a session, shared
# by the pytest-xdist workers, subprocesses and notebook kernels through the environment.
if "M2M_CACHE_DIR" not in os.environ:
  os.environ["M2M_CACHE_DIR"] = tempfile.mkdtemp(prefix="m2m_jax_test_cache_")
  atexit.register(shutil.rmtree, os.environ["M2M_CACHE_DIR"], ignore_errors=True)
# A directory of this session alone, shared by its pytest-xdist workers (made by the process
# that starts them, before they start).
if "M2M_TEST_SESSION_DIR" not in os.environ:
  os.environ["M2M_TEST_SESSION_DIR"] = tempfile.mkdtemp(prefix="m2m_jax_test_session_")
  atexit.register(shutil.rmtree, os.environ["M2M_TEST_SESSION_DIR"], ignore_errors=True)
SESSION_DIR = os.environ["M2M_TEST_SESSION_DIR"]
# No persistent XLA compilation cache: serialising, compressing and writing every program cost
# more than reading them back saved (a run without it reached 62% of the suite in 10 minutes);
# a process keeps the programs it compiled in memory (until train.clear_compiled()).
# Equinox's runtime checks inside diffrax turn a failure into NaN (which the loop stops on)
# instead of a host callback in every solve.
os.environ.setdefault("EQX_ON_ERROR", "nan")
# The tests compile many small programs and run most of them a few times: XLA's backend
# optimisation level 0 (the default is 2) with its older CPU emitters compiles them fastest (the
# suite took 8.7 minutes so instead of 12.5 at level 1 with the new emitters, on this 2-core
# machine) and runs them about 3 times slower. It holds in this process and in its subprocesses,
# but for README's first command (the CNN default) and the presets' trainings under -m slow:
# those run as a user runs them (:func:`trained_as_a_user`).
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
XLA_OPTIMIZATION = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = f"{USER_XLA_FLAGS} {XLA_OPTIMIZATION}".strip()
# The configs whose algorithm fits the whole training set in one loop step.
ONE_STEP = ("linear_regression", "logistic_regression", "knn", "pca")
# The tree configs: the whole training set every step, one tree or boosting round a step.
TREES = ("decision_tree", "random_forest", "adaboost", "gradient_boosting")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fast(values, keep) -> list:
  """pytest params of ``values``: those in ``keep`` run in the fast suite, the others under
  ``-m slow`` (an oracle comparison over many datasets keeps a few in the fast suite)."""
  return [pytest.param(*(v if isinstance(v, tuple) else (v,)),
                       marks=[] if v in keep else [pytest.mark.slow]) for v in values]


# The longest tests start first, so that the two workers end together (longest first is the
# classic rule for scheduling jobs on a few machines). The 8-device comparison runs last: it
# waits for a subprocess that runs beside the suite (test_contract.py).
LONGEST = ("test_multihost", "test_notebooks", "test_killed_run", "test_bench")
LAST = ("test_eight_devices",)


def pytest_collection_modifyitems(items):
  def rank(item) -> int:
    return (0 if any(name in item.nodeid for name in LONGEST) else
            2 if any(name in item.nodeid for name in LAST) else 1)

  items.sort(key=rank)


# Every compiled CPU program keeps its code in memory maps, and a process may hold at most
# vm.max_map_count (65,530) of them: a worker that ran hundreds of tests' programs crashed inside
# XLA (abort, segfault) near 26,000 and rising. Past MAX_MAPS the compiled programs are dropped.
MAX_MAPS = 20_000


def _memory_maps() -> int:
  try:
    with open("/proc/self/maps", "rb") as f:
      return sum(1 for _ in f)
  except OSError:  # not Linux
    return 0


@pytest.fixture(autouse=True)
def _drop_compiled_programs_past_max_maps():
  yield
  if _memory_maps() > MAX_MAPS:
    from m2m_jax import train
    train.clear_compiled()


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a subprocess on ``devices`` CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {XLA_OPTIMIZATION}"


def cli(*args: str, devices: int = 1, timeout: float = 600, xla: str | None = None,
        **popen) -> subprocess.CompletedProcess:
  """Runs ``python -m m2m_jax.main ARGS`` from the repository root on ``devices`` CPU devices
  (or with XLA_FLAGS ``xla``)."""
  env = dict(os.environ, M2M_NO_PROGRESS="1", XLA_FLAGS=xla_flags(devices) if xla is None else xla)
  return subprocess.run([sys.executable, "-m", "m2m_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, **popen)


def trained_as_a_user(config: str, workdir, *overrides: str, timeout: float = 900) -> dict:
  """Trains ``--config=configs/CONFIG`` (a preset after a colon) through the CLI in a
  subprocess, XLA at its default optimisation as a user runs it, and returns its summary."""
  proc = cli(f"--config=configs/{config}", f"--workdir={workdir}", *overrides, timeout=timeout,
             xla=USER_XLA_FLAGS)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


@pytest.fixture
def mock_tfds(monkeypatch, request):
  """tensorflow-datasets' mock data instead of any prepared dataset (nothing touches the
  network): ``MOCK_TFDS_EXAMPLES`` examples a split, a module attribute (default 128)."""
  import numpy as np
  import tensorflow_datasets as tfds
  from tensorflow_datasets.testing import mocking
  # tfds 4.9.10's mock sets `__getitems__` on a MagicMock as a plain partial, so it is called
  # without `self` and fails; batched reads go straight to the fake generator instead.
  monkeypatch.setattr(mocking, "_getitems", lambda keys, generator: [generator[k] for k in keys])
  if importlib.util.find_spec("tensorflow") is None:
    # tfds' coco builders (coco_captions) name the dtype tf.int64 in their features, which
    # imports TensorFlow; the mock needs only the dtype.
    from tensorflow_datasets.object_detection import coco
    monkeypatch.setattr(coco, "tf", types.SimpleNamespace(int64=np.int64))
  # The mock draws a box's four coordinates independently; real ones are corners, y0 <= y1
  # and x0 <= x1 (detection refuses others), so each drawn box is sorted into corners.
  draw = mocking.RandomFakeGenerator._generate_random_obj

  def corners(self, feature, tensor_info, rng):
    value = draw(self, feature, tensor_info, rng)
    if not isinstance(feature, tfds.features.BBoxFeature):
      return value
    pairs = value.reshape(*value.shape[:-1], 2, 2)
    return np.concatenate([pairs.min(-2), pairs.max(-2)], -1).astype(value.dtype)

  monkeypatch.setattr(mocking.RandomFakeGenerator, "_generate_random_obj", corners)
  with tfds.testing.mock_data(num_examples=getattr(request.module, "MOCK_TFDS_EXAMPLES", 128)):
    yield


@pytest.fixture
def run_cli():
  return cli


def checkpoint_data_file(step_dir: str) -> str:
  """The largest of a checkpoint's data files: the one holding its packed arrays."""
  return max(glob.glob(os.path.join(step_dir, "arrays", "**", "d", "*"), recursive=True),
             key=os.path.getsize)


def scribble(path: str) -> None:
  """Writes 64 random bytes into the middle of ``path``."""
  import numpy as np
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(max(size // 2 - 32, 0))
    f.write(np.random.default_rng(0).bytes(64))


def openai_clip():
  """OpenAI's ``clip`` package (clip-anytorch, of the test extra): the oracle of the CLIP
  tokenizer and converter tests. Its ``clip.py`` imports torchvision's image transforms, which
  those tests never use, and ``pkg_resources``: where torchvision cannot load (its wheels on
  the registry are built for CUDA torch, not the CPU build the tests install) or setuptools
  no longer ships ``pkg_resources``, stand-ins are put in their place for that import."""
  import importlib
  import types

  import packaging.version

  stubs = {}
  try:
    import torchvision.transforms  # noqa: F401
  except Exception:  # noqa: BLE001 (a CUDA build raises RuntimeError or OSError on import)
    transforms = types.ModuleType("torchvision.transforms")
    for name in ("Compose", "Resize", "CenterCrop", "ToTensor", "Normalize"):
      setattr(transforms, name, None)
    transforms.InterpolationMode = types.SimpleNamespace(BICUBIC=None)
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = transforms
    stubs.update({"torchvision": torchvision, "torchvision.transforms": transforms})
  try:
    import pkg_resources  # noqa: F401
  except ImportError:
    pkg_resources = types.ModuleType("pkg_resources")
    pkg_resources.packaging = types.SimpleNamespace(version=packaging.version)
    stubs["pkg_resources"] = pkg_resources
  saved = {name: sys.modules.get(name) for name in stubs}
  sys.modules.update(stubs)
  try:
    return importlib.import_module("clip")
  finally:
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module


# OpenAI's CLIP(...) arguments of a small model: embed_dim, image_resolution, vision_layers,
# vision_width, vision_patch_size, context_length, vocab_size, transformer_width,
# transformer_heads, transformer_layers.
OPENAI_SMALL = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64,
                    vision_patch_size=8, context_length=16, vocab_size=100,
                    transformer_width=48, transformer_heads=4, transformer_layers=2)


def openai_model(seed: int = 0, **sizes):
  """OpenAI's CLIP with random weights, float32, in eval mode; the LayerNorms and the class
  embedding get noise, so that their identity / zero-like initialisations hide no error."""
  import torch
  torch.manual_seed(seed)
  model = openai_clip().model.CLIP(**sizes).float().eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if ".ln_" in name or name.startswith(("ln_final", "visual.ln_")) or "class_emb" in name:
        p.add_(0.3 * torch.randn_like(p))
  return model


# A small random OpenAI CLIP that reads what the coco presets give it: 224x224 images, 77
# tokens of OpenAI's 49,408 ids.
FAKE_OPENAI = {**OPENAI_SMALL, "image_resolution": 224, "vision_patch_size": 32,
               "context_length": 77, "vocab_size": 49408, "vision_layers": 1,
               "transformer_layers": 1, "transformer_width": 64,
               "transformer_heads": 1}  # OpenAI's rule, width // 64, as load_openai's models


def fake_openai_weights(monkeypatch) -> dict:
  """Makes ``m2m_jax.algorithms.clip``'s ``load_openai(name)`` (clip.load, a download) return
  the state dict of ``openai_model(**FAKE_OPENAI)``. Returns the count of loads by name."""
  from m2m_jax.algorithms import clip as clip_algorithm
  asked = {}

  def load(name):
    asked[name] = asked.get(name, 0) + 1
    return openai_model(**FAKE_OPENAI).state_dict()

  monkeypatch.setattr(clip_algorithm, "load_openai", load)
  return asked


def torchvision_detection():
  """torchvision, importable here: its wheels on the registry are built for CUDA torch, so its
  compiled operators do not load beside the CPU torch the tests install. Its Python code (the
  detection models) runs as it is, with the two operators detection calls, ``nms`` and
  ``roi_align``, as reference kernels written in numpy from their definitions (greedy NMS,
  vectorised over the kept boxes: test_boxes' pure-Python loop made the converter's test 7 s
  slower; test_roi_align's loop over torchvision's CPU kernel), not m2m_jax's code."""
  import numpy as np
  import torch
  if "torchvision" not in sys.modules:
    sys.modules["torchvision._meta_registrations"] = types.ModuleType(
        "torchvision._meta_registrations")
    global _TORCHVISION_OPS
    _TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")
    _TORCHVISION_OPS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_OPS.define("roi_align(Tensor input, Tensor rois, float spatial_scale, "
                            "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
                            "bool aligned) -> Tensor")

    def nms(dets, scores, iou_threshold):
      boxes, kept = dets.numpy().astype(np.float64), []
      area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
      for i in np.argsort(-scores.numpy(), kind="stable"):
        low = np.maximum(boxes[i, :2], boxes[kept, :2])
        high = np.minimum(boxes[i, 2:], boxes[kept, 2:])
        inter = np.prod(np.clip(high - low, 0, None), axis=1)
        if not np.any(inter / (area[i] + area[kept] - inter) > iou_threshold):
          kept.append(i)
      return torch.tensor(kept, dtype=torch.int64)

    def roi_align(features, rois, scale, height, width, sampling_ratio, aligned):
      from test_roi_align import _numpy_roi_align
      out = _numpy_roi_align(features.numpy().transpose(0, 2, 3, 1), rois[:, 1:].numpy(),
                             rois[:, 0].numpy().astype(int), (height, width), scale,
                             sampling_ratio, aligned)
      return torch.from_numpy(out.transpose(0, 3, 1, 2).astype(np.float32))

    _TORCHVISION_OPS.impl("nms", nms, "CPU")
    _TORCHVISION_OPS.impl("roi_align", roi_align, "CPU")
  import torchvision
  import torchvision.extension
  import torchvision.models.detection  # noqa: F401
  torchvision.extension._has_ops = lambda: True
  return torchvision
