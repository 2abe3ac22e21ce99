"""Command line: ``python -m m2m_jax.main --config=<name>[:preset] --workdir=DIR``.

The config is named (``--config=cnn:mnist5k``, the configs that ship with the package) or
given as a file (``--config=configs/cnn.py:mnist5k``, a copy of one edited).

Any config field can be overridden with ``--config.<field>=value``. The console script
``m2m-train`` takes the same flags. A mistake on the command line or a bad value ends the run
with one line naming it and exit code 2, without a traceback; the held-out metrics are printed
at the end.
"""

import difflib
import importlib.util
import json
import re
import sys

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from m2m_jax import configlib, train
from m2m_jax.errors import M2MError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "<name>[:preset] or a config file, path/to/<name>.py[:preset]; override "
    "fields with --config.<field>=value.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
flags.mark_flags_as_required(["config", "workdir"])
_KINDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "True or False",
          "tuple": "a tuple, e.g. (1, 2)"}
_PLURALS = {"int": "integers", "float": "numbers", "str": "strings", "bool": "booleans"}
_REQUIRED = {"config": "a config name or file, e.g. cnn, cnn:mnist5k or configs/cnn.py",
             "workdir": "the directory for checkpoints, metrics and figures"}


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments: {' '.join(argv[1:])}; flags take the form --name=value.")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  try:
    config = _CONFIG.value
    config.keys()  # config_flags defers a failure to load the file to the first use
  except Exception as e:  # noqa: BLE001  (explained in one line, or re-raised)
    message = explain(e, sys.argv)
    if message is None:
      raise
    _fail(message)
  message = mistyped(config, sys.argv)
  if message:
    _fail(message)
  try:
    summary = train.train_and_evaluate(config, _WORKDIR.value)
  except M2MError as e:
    _fail(str(e))
  print(json.dumps({"test": summary["test"], "steps": summary["steps"],
                    "wall_time_s": summary["wall_time_s"]}))


def _chain(error: BaseException | None):
  while error is not None:
    yield error
    error = error.__cause__ or error.__context__


def _config_file(argv: list[str]) -> tuple[str, str | None] | None:
  """(path, preset) of the last ``--config=`` in ``argv``."""
  values = [a.split("=", 1)[1] for a in named_configs(argv) if a.startswith("--config=")]
  if not values:
    return None
  path, _, preset = values[-1].partition(":")
  return path, preset or None


def named_configs(argv: list[str]) -> list[str]:
  """``argv`` with each ``--config=<name>[:preset]`` given as the file of config ``name``; a
  value with a ``/`` or ending in ``.py`` is a file already. An unknown name raises
  :class:`ConfigError` with the list of names."""
  out = []
  for arg in argv:
    value = arg.partition("=")[2]
    path, colon, preset = value.partition(":")
    if arg.startswith("--config=") and "/" not in path and not path.endswith(".py"):
      arg = f"--config={configlib.config_path(path)}{colon}{preset}"
    out.append(arg)
  return out


def _load(path: str, preset: str | None) -> ConfigDict:
  spec = importlib.util.spec_from_file_location("m2m_cli_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()


def _unknown_field(argv: list[str]) -> str | None:
  """The sentence for the first ``--config.<field>`` override naming no field of the config."""
  found = _config_file(argv)
  if found is None:
    return None
  config = _load(*found)
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    node, done = config, []
    for part in arg[len("--config."):].split("=", 1)[0].split("."):
      if not isinstance(node, ConfigDict) or part not in node:
        fields = sorted(node.keys()) if isinstance(node, ConfigDict) else []
        where = ".".join(done)
        close = difflib.get_close_matches(part, fields, n=1)
        hint = f"; did you mean {'.'.join([*done, close[0]])}?" if close else "."
        if not isinstance(node, ConfigDict):
          return f"config field {where} is a value, not a group: it has no field {part!r}."
        return (f"unknown config field {'.'.join([*done, part])!r}{hint} The fields of "
                f"{where or 'the config'} are: {', '.join(fields)}.")
      node, done = node[part], [*done, part]
  return None


def _field(config: ConfigDict, path: str):
  for part in path.split("."):
    config = config[part]
  return config


def mistyped(config: ConfigDict, argv: list[str]) -> str | None:
  """The sentence for the first ``--config.<field>`` override whose tuple holds values of
  another kind than the field's default holds (config_flags reads ``abc`` as ``('abc',)``),
  or None."""
  found = _config_file(argv)
  overrides = [a for a in argv if a.startswith("--config.") and "=" in a]
  if found is None or not overrides:
    return None
  default = _load(*found)
  for arg in overrides:
    field = arg[len("--config."):].split("=", 1)[0]
    old, new = _field(default, field), _field(config, field)
    if not (isinstance(old, tuple) and old and isinstance(new, tuple)):
      continue
    kinds = {type(v) for v in old}
    if any(type(v) not in kinds and not (float in kinds and type(v) is int) for v in new):
      names = " or ".join(sorted(_PLURALS.get(k.__name__, k.__name__) for k in kinds))
      return f"{arg}: {field} takes a tuple of {names}, such as {old!r}."
  return None


def _bad_value(message: str, argv: list[str]) -> str:
  """The sentence for an override whose value does not parse as the field's type."""
  flag, value, reason = re.match(r"flag (--[\w.]+)=(.*?): (.*)", message, re.S).groups()
  field = flag[len("--config."):]
  found = _config_file(argv)
  if found and flag.startswith("--config."):
    old = _field(_load(*found), field)
    if isinstance(old, ConfigDict):
      return (f"{flag} is a group of fields, not a value; set one of them, e.g. "
              f"{flag}.{sorted(old.keys())[0]}=...")
    kind = _KINDS.get(type(old).__name__, f"a {type(old).__name__}")
    return f"{flag}={value}: {field} takes {kind}, such as {old!r}."
  return f"{flag}={value}: {reason.splitlines()[0]}."


def explain(error: BaseException, argv: list[str]) -> str | None:
  """One sentence for a mistake on the command line behind ``error``, or None (a bug)."""
  ours = [e for e in _chain(error) if isinstance(e, M2MError)]
  if ours:
    return str(ours[-1])  # the innermost: config_flags wraps it in its own traceback
  for e in _chain(error):
    if isinstance(e, SyntaxError):
      return f"{e.filename}, line {e.lineno}: {e.msg} (a syntax error in the config file)."
    if isinstance(e, OSError) and "Failed loading config file" in str(e):
      path = _config_file(argv)[0]
      return (f"config file {path!r} cannot be read ({str(e).splitlines()[-1].strip()}); or "
              f"name a config: {', '.join(configlib.config_names())}.")
  message = str(error)
  if isinstance(error, (AttributeError, KeyError, TypeError)):
    return _unknown_field(argv)
  if isinstance(error, flags.Error):
    for name, what in _REQUIRED.items():
      if message.startswith(f"flag --{name}=None:"):
        return f"--{name} is required: {what}."
    if message.startswith("flag --"):
      return _bad_value(message, argv)
    return message.splitlines()[0].rstrip(".") + "."
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every mistake (an unknown field, a value of the wrong type, a
  missing flag, a config file with a syntax error) reported in one line instead of a
  traceback."""
  try:
    return flags.FLAGS(named_configs(argv))
  except Exception as e:  # noqa: BLE001  (explained in one line, or re-raised)
    message = explain(e, argv)
    if message is None:
      raise
    _fail(message)


def run() -> None:
  """Entry point of the ``m2m-train`` console script."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
