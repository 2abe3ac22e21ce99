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


def run() -> None:
  """Entry point of the ``m2m-train`` console script."""
  app.run(main)


if __name__ == "__main__":
  run()
