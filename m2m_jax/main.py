"""Command line: ``python -m m2m_jax.main --config=configs/<name>.py[:preset] --workdir=DIR``.

Any config field can be overridden with ``--config.<field>=value``. The console script
``m2m-train`` takes the same flags. A bad value ends the run with one line naming it and exit
code 2; the held-out metrics are printed at the end.
"""

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from m2m_jax import train
from m2m_jax.errors import M2MError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "configs/<name>.py[:preset]; override fields with --config.<field>=value.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  try:
    summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except M2MError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(json.dumps({"test": summary["test"], "steps": summary["steps"],
                    "wall_time_s": summary["wall_time_s"]}))


def _innermost_m2m_error(error: BaseException) -> M2MError | None:
  found = None
  while error is not None:
    found = error if isinstance(error, M2MError) else found
    error = error.__cause__ or error.__context__
  return found


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, except that a bad config value (e.g. an unknown preset, raised inside
  ``get_config``) is reported in one line instead of the traceback config_flags embeds."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if (cause := _innermost_m2m_error(e)) is None:
      raise
    print(f"error: {cause}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  """Entry point of the ``m2m-train`` console script."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
