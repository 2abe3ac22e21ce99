"""What every config has, and the checks run on it before anything is compiled.

``base()`` returns the common fields; ``configs/<name>.py`` fills them in. ``presets(preset,
table)`` picks a named preset and refuses an unknown one with the list of choices.
"""

import importlib.util
import pathlib

import ml_collections

from m2m_jax.errors import ConfigError, choose

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
DTYPES = ("float32", "bfloat16")
# Fields that may change between a run and its resumption without invalidating its checkpoint.
RESUMABLE_FIELDS = ("num_steps", "num_epochs", "log_every", "eval_every", "checkpoint_every",
                    "keep_checkpoints", "eval_batch_size")


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
  c.warmup_steps = 0
  c.weight_decay = 0.0
  c.batch_size = 128           # 0: the whole training set every step (full batch)
  c.eval_batch_size = 512      # rounded up to a multiple of the device count; padded
  c.num_steps = 0             # 0: derived from num_epochs
  c.num_epochs = 10.0
  c.log_every = 50
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.seed = 0
  c.dtype = "float32"         # compute dtype; parameters stay float32
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


CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


def config_module(name: str):
  """The module ``configs/<name>.py`` of the repository beside the package."""
  path = CONFIG_DIR / f"{name}.py"
  if not path.exists():
    raise ConfigError(f"no config {name!r} in {CONFIG_DIR}; choose one of: "
                      f"{', '.join(config_names())}.")
  spec = importlib.util.spec_from_file_location(f"m2m_configs.{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def config_names() -> list[str]:
  """The names of the configs in ``configs/``."""
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py"))


def load(name: str, preset: str | None = None) -> ml_collections.ConfigDict:
  """``configs/<name>.py``'s ``get_config(preset)``.

  For notebooks and tests; the CLI takes ``--config=configs/<name>.py[:preset]`` instead.
  """
  return config_module(name).get_config(preset)


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Refuses an unknown name or an inconsistent value with one sentence naming it."""
  from m2m_jax import data, models, registry
  algorithm = registry.get(config.algorithm)
  if not config.dataset.startswith("tfds:"):
    choose("dataset", config.dataset, [n for n in data.names() if n != "tfds:<name>"] + ["tfds:<name>"])
  if config.model_name:
    models.get(config.model_name)
  choose("optimizer", config.optimizer, OPTIMIZERS)
  choose("schedule", config.schedule, SCHEDULES)
  choose("dtype", config.dtype, DTYPES)
  if config.batch_size < 0:
    raise ConfigError(f"batch_size must be positive (or 0: the whole training set), got "
                      f"{config.batch_size}.")
  for field in ("eval_batch_size", "log_every", "eval_every", "checkpoint_every",
                "keep_checkpoints"):
    if config[field] <= 0:
      raise ConfigError(f"{field} must be positive, got {config[field]}.")
  if config.batch_size % num_devices:
    raise ConfigError(
        f"batch_size {config.batch_size} does not divide over the {num_devices} devices; "
        f"use a multiple of {num_devices}.")
  if config.weight_decay < 0 or (config.weight_decay and config.optimizer == "adam"):
    raise ConfigError(f"weight_decay {config.weight_decay} needs a non-negative value and an "
                      "optimizer that applies it: adamw, sgd or momentum (adam takes none).")
  if config.num_steps <= 0 and config.num_epochs <= 0:
    raise ConfigError("set num_steps or num_epochs to a positive number.")
  if hasattr(algorithm, "validate"):
    algorithm.validate(config)
