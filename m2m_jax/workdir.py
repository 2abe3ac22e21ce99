"""The workdir of a run: made writable before anything is written, and locked while a run
trains into it, so that two runs never write the same checkpoints and metrics.

The lock is the file ``<workdir>/.lock``, created atomically (``O_CREAT | O_EXCL``) and holding
the host name, process id and (on Linux) start time of its owner. A second run is refused while
that process lives; a lock whose process is gone (a run that was killed) is taken over, also
when its process id now belongs to a process started later. A run of several processes is
locked by process 0, which writes the workdir's files.
"""

import contextlib
import errno
import os
import socket

from m2m_jax.errors import ConfigError

LOCK = ".lock"


def prepare(workdir: str) -> None:
  """Makes ``workdir`` and its ``figures/``, refusing in one sentence a path that is not a
  writable directory."""
  try:
    os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
    if not os.access(workdir, os.W_OK):
      raise PermissionError(errno.EACCES, "not writable")
  except OSError as e:
    reason = e.strerror or str(e)
    raise ConfigError(f"workdir {workdir!r} cannot be used ({reason}); give --workdir a "
                      f"directory this user can write, or a path where one can be made.") from None


def _start_time(pid: int) -> str:
  """When process ``pid`` started, in clock ticks after boot (Linux's /proc/<pid>/stat), or ''
  where unknown: with the pid it names one process, even once the pid is reused."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return ""


def _alive(pid: int, start: str) -> bool:
  """Whether the process that wrote a lock (``pid``, started at ``start``) still runs."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    pass
  return _start_time(pid) in ("", start) if start else True


def _me() -> tuple[str, int, str]:
  return socket.gethostname(), os.getpid(), _start_time(os.getpid())


def _owner(path: str) -> tuple[str, int, str] | None:
  """(host, pid, start time or '') of a lock, or None when it is gone or being written."""
  try:
    with open(path) as f:
      host, pid, *start = f.read().split()
    return host, int(pid), "".join(start[:1])
  except (OSError, ValueError):
    return None


@contextlib.contextmanager
def locked(workdir: str, lead: bool = True):
  """Holds ``workdir``'s lock while the block runs (only when ``lead``): a live owner is
  refused in one sentence naming it, a dead one's lock is taken over."""
  if not lead:
    yield
    return
  path = os.path.join(workdir, LOCK)
  me = _me()
  for _ in range(2):  # a second try after removing a dead owner's lock
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      owner = _owner(path)
      if owner is not None and (owner[0] != me[0] or _alive(owner[1], owner[2])):
        raise ConfigError(
            f"workdir {workdir!r} is in use by process {owner[1]} on {owner[0]}; wait for it to "
            f"finish, stop it, or use another --workdir.") from None
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, "w") as f:
      f.write(" ".join(map(str, me)).strip())
    break
  else:
    raise ConfigError(f"workdir {workdir!r} is being locked by another run; try again.")
  try:
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      if _owner(path) == me:
        os.remove(path)
