"""The one exception users see: a bad value, named, with what is allowed.

The CLI prints the message of an :class:`M2MError` on one line and exits non-zero without a
traceback; anything else is a bug and keeps its traceback.
"""


class M2MError(ValueError):
  """A user-facing error: the message names the bad value and the allowed choices."""


class ConfigError(M2MError):
  """A config value that is unknown or inconsistent."""


class DataError(M2MError):
  """Data that is missing, malformed, or holds NaN/inf."""


class TrainingDiverged(M2MError):
  """The training loss became NaN or infinite."""


class CheckpointError(M2MError):
  """A workdir whose checkpoints (or their config) cannot be restored."""


def choose(kind: str, value, choices) -> None:
  """Raises ConfigError unless ``value`` is one of ``choices``."""
  choices = sorted(choices)
  if value not in choices:
    raise ConfigError(f"unknown {kind} {value!r}; choose one of: {', '.join(map(str, choices))}.")
