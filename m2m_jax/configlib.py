"""What every config has, and the checks run on it before anything is compiled.

``base()`` returns the common fields; ``configs/<name>.py`` fills them in. ``presets(preset,
table)`` picks a named preset and refuses an unknown one with the list of choices.
"""

import importlib.util
import math
import pathlib

import ml_collections

from m2m_jax import configs, evaluators
from m2m_jax.data import transforms
from m2m_jax.errors import ConfigError, choose
from m2m_jax.ops import optim

DTYPES = ("float32", "bfloat16")
# Fields that may change between a run and its resumption without invalidating its checkpoint.
RESUMABLE_FIELDS = ("num_steps", "num_epochs", "log_every", "eval_every", "checkpoint_every",
                    "keep_checkpoints", "eval_batch_size", "divergence_factor", "profile_steps")


def base() -> ml_collections.ConfigDict:
  """The fields every config has, with neutral defaults."""
  c = ml_collections.ConfigDict()
  c.algorithm = ""            # registry name, see m2m_jax.registry
  c.dataset = ""              # data registry name, see m2m_jax.data
  c.data = ml_collections.ConfigDict()  # options of the dataset loader
  c.model_name = ""           # m2m_jax.models registry name ('' when the algorithm has none)
  c.model = ml_collections.ConfigDict()  # constructor arguments of the model
  c.optimizer = "adam"
  c.learning_rate = 1e-3
  c.schedule = "constant"
  c.warmup_steps = 0          # linear warmup from 0, before any schedule
  c.decay_every = 0           # the step schedule: times decay_factor every decay_every steps
  c.decay_factor = 0.1
  c.weight_decay = 0.0
  c.grad_clip_norm = 0.0      # > 0: gradients clipped to this global norm
  c.transforms = ""           # per-example training transforms, e.g. "crop(pad=2)|flip_lr"
  c.eval_transforms = ""      # deterministic ones for evaluation; see m2m_jax.data.transforms
  c.batch_size = 128           # 0: the whole training set every step (full batch)
  c.eval_batch_size = 512      # rounded up to a multiple of the device count; padded
  c.num_steps = 0             # 0: derived from num_epochs
  c.num_epochs = 10.0
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  # Stop when a logged training loss exceeds this many times the first one logged (0: never).
  c.divergence_factor = 100.0
  c.seed = 0
  c.dtype = "float32"         # compute dtype; parameters stay float32
  c.evals = evaluators.default_config()  # name -> {kind, split, every}; m2m_jax.evaluators
  # (first, last): a jax.profiler trace of steps first..last (numbered from 1, as in
  # metrics.jsonl) into workdir/tensorboard, for TensorBoard's profile plugin; () for none.
  c.profile_steps = ()
  return c


def use_tfds(config: ml_collections.ConfigDict, name: str, **options) -> ml_collections.ConfigDict:
  """Points ``config`` at tfds dataset ``name``: ``config.data`` becomes the loader's options,
  always with ``data_dir`` and ``download`` so both can be set from the command line
  (``--config.data.download=True`` prepares the dataset the first time)."""
  config.dataset = f"tfds:{name}"
  config.data = ml_collections.ConfigDict({"data_dir": "", "download": False, **options})
  return config


def presets(preset: str | None, table: dict) -> ml_collections.ConfigDict:
  """Returns ``table[preset]()`` (``table['default']`` when ``preset`` is None or empty)."""
  name = preset or "default"
  choose("preset", name, table)
  return table[name]()


CONFIG_DIR = pathlib.Path(configs.__file__).parent  # configs/ in a checkout, m2m_jax/configs installed


def config_path(name: str) -> pathlib.Path:
  """The file of config ``name`` (``configs/<name>.py``); an unknown name is refused with the
  list of names."""
  path = CONFIG_DIR / f"{name}.py"
  if name.startswith("_") or not path.exists():
    raise ConfigError(f"no config {name!r}; choose one of: {', '.join(config_names())}.")
  return path


def config_module(name: str):
  """The module of config ``name``, executed afresh."""
  spec = importlib.util.spec_from_file_location(f"m2m_configs.{name}", config_path(name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def config_names() -> list[str]:
  """The names of the configs, one per file of ``configs/``."""
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def load(name: str, preset: str | None = None) -> ml_collections.ConfigDict:
  """Config ``name``'s ``get_config(preset)``: the default preset when ``preset`` is None.

  The command line takes the same as ``--config=<name>[:preset]``.
  """
  return config_module(name).get_config(preset)


# Fields of ``config.model`` that set a network's width or depth, and ``tiny``'s cap for each.
TINY_WIDTHS = {"features": 8, "dense": 16, "width": 4, "widths": 8, "hidden": 16, "base": 4,
               "latent_dim": 8, "encoder_widths": 16, "dynamics_widths": 16, "decoder_widths": 16,
               "embed_dim": 8, "mlp_dim": 16, "num_heads": 2, "image_width": 8, "text_width": 8,
               "image_heads": 2, "text_heads": 2, "fpn_width": 8, "representation": 16}
TINY_DEPTHS = {"stage_sizes": 1, "blocks": 1, "max_depth": 3, "depth": 1, "depths": 1,
               "image_depth": 1, "text_depth": 1}


# The generated datasets whose splits' sizes are options (n_train, n_test): a tiny config
# generates tiny splits, where cutting them from full ones would generate thousands of scenes.
# (Not the segmentation shapes: on 32 generated test scenes the tiny U-Net's Dice on 8 devices
# differs from 1 device's by 3e-4, more than the contract's tolerance of 1e-4.)
GENERATED = ("detection_shapes", "captioned_shapes")


def tiny(config: ml_collections.ConfigDict, steps: int = 4) -> ml_collections.ConfigDict:
  """A copy of ``config`` shrunk to seconds on a CPU, for smoke tests and the contract suite.

  ``steps`` training steps (a checkpoint and an evaluation every 2; one-step fits keep their
  one step), batches of at most 16 and evaluation batches of 16 examples, 64 training and 32
  test examples spread over each split (generated as many, for the scene generators in
  ``GENERATED``), widths, attention heads and depths of ``config.model``
  capped (``TINY_WIDTHS``, ``TINY_DEPTHS``: trees of depth 3 at most; GroupNorm at 2 groups),
  ``steps`` trees for the ensembles, 10 diffusion steps, and no sample judging. The algorithm,
  the model's layout, the dataset's format and every other setting are kept.
  """
  c = ml_collections.ConfigDict(config.to_dict())
  if "n_estimators" in c.model:
    c.model.n_estimators = steps
  if c.num_steps != 1:  # one-step fits stay one step
    c.num_steps = c.model.get("n_estimators", steps)
  c.warmup_steps = 0
  c.log_every, c.eval_every, c.checkpoint_every, c.eval_batch_size = 1, 2, 2, 16
  if c.batch_size:
    c.batch_size = min(c.batch_size, 16)
  for split, cap in (("train", 64), ("test", 32)):
    if c.dataset in GENERATED:  # generate the tiny splits rather than cut them from full ones
      c.data[f"n_{split}"] = min(c.data.get(f"n_{split}", cap), cap)
    else:
      c.data[f"{split}_examples"] = min(c.data.get(f"{split}_examples", 0) or cap, cap)
  for key, cap in {**TINY_WIDTHS, **TINY_DEPTHS}.items():
    value = c.model.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
      c.model[key] = min(value, cap)
    elif isinstance(value, (tuple, list)):
      c.model[key] = tuple(min(v, cap) for v in value)
  if "groups" in c.model:
    c.model.groups = 2
  if "fd" in c:
    c.fd.num_samples = 0
  if "diffusion_steps" in c:
    c.diffusion_steps, c.ddim_steps = 10, 5
  return c


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Refuses an unknown name or an inconsistent value with one sentence naming it."""
  from m2m_jax import data, models, registry
  algorithm = registry.get(config.algorithm)
  if not config.dataset.startswith("tfds:"):
    choose("dataset", config.dataset, [n for n in data.names() if n != "tfds:<name>"] + ["tfds:<name>"])
  if config.model_name:
    models.get(config.model_name)
  choose("optimizer", config.optimizer, optim.OPTIMIZERS)
  choose("schedule", config.schedule, optim.SCHEDULES)
  choose("dtype", config.dtype, DTYPES)
  if config.batch_size < 0:
    raise ConfigError(f"batch_size must be positive (or 0: the whole training set), got "
                      f"{config.batch_size}.")
  if config.grad_clip_norm < 0:
    raise ConfigError(f"grad_clip_norm must be >= 0 (0: no clipping), got {config.grad_clip_norm}.")
  for field in ("eval_batch_size", "log_every", "eval_every", "checkpoint_every",
                "keep_checkpoints"):
    if config[field] <= 0:
      raise ConfigError(f"{field} must be positive, got {config[field]}.")
  if config.batch_size % num_devices:
    raise ConfigError(
        f"batch_size {config.batch_size} does not divide over the {num_devices} devices; "
        f"use a multiple of {num_devices}.")
  if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
    raise ConfigError(f"learning_rate must be a positive, finite number, got "
                      f"{config.learning_rate}.")
  if not 0 <= config.weight_decay < 1:
    raise ConfigError(f"weight_decay must lie in [0, 1) (it shrinks each weight by "
                      f"learning_rate * weight_decay of itself a step), got {config.weight_decay}.")
  if config.schedule == "step" and not 0 < config.decay_factor <= 1:
    raise ConfigError(f"decay_factor must lie in (0, 1], got {config.decay_factor}.")
  if config.divergence_factor < 0:
    raise ConfigError(f"divergence_factor must be >= 0 (0: never stop), got "
                      f"{config.divergence_factor}.")
  if config.weight_decay and config.optimizer == "adam":
    raise ConfigError(f"weight_decay {config.weight_decay} needs an optimizer that applies "
                      "it: adamw, sgd or momentum (adam takes none).")
  profile = tuple(config.profile_steps)
  if profile and not (len(profile) == 2 and all(isinstance(s, int) for s in profile)
                      and 1 <= profile[0] <= profile[1]):
    raise ConfigError(f"profile_steps must be (first, last) with 1 <= first <= last, e.g. "
                      f"(10, 12), or () for no trace; got {profile}.")
  if config.num_steps < 0 or config.num_epochs < 0:
    raise ConfigError(f"num_steps and num_epochs must be >= 0; got {config.num_steps} and "
                      f"{config.num_epochs}.")
  if config.num_steps == 0 and config.num_epochs == 0 and not config.get("pretrained"):
    raise ConfigError("set num_steps or num_epochs to a positive number (both 0, evaluation "
                      "only, is for pretrained weights: config.pretrained).")
  if transforms.parse(config.transforms) and not getattr(algorithm, "TAKES_TRANSFORMS", False):
    raise ConfigError(f"algorithm {config.algorithm!r} takes no config.transforms (its train "
                      "step draws from the step's key); the classifier and segmentation do.")
  transforms.parse(config.eval_transforms, "eval_transforms")
  evaluators.validate(config, algorithm)
  if hasattr(algorithm, "validate"):
    algorithm.validate(config)
