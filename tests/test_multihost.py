"""Multi-host, on one machine: 2 processes (a local coordinator, gloo collectives on CPU) of 4
CPU devices each train the CNN default, shortened, and end where 1 process on 8 devices ends."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, xla_flags
from m2m_jax import parallel
from m2m_jax.errors import ConfigError

# Both runs feed the same global batches to the same program; only the order in which the 8
# devices' sums are reduced may differ (gloo between the processes, XLA's all-reduce within one).
# Measured (jax 0.10.2, 2 CPU cores): every metric identical over these 30 steps; over 60 steps
# train losses differed by at most 1.3e-7 relative and test metrics were identical.
RTOL = 1e-5
ARGS = ("--config=configs/cnn.py", "--config.num_steps=30", "--config.eval_every=15",
        "--config.checkpoint_every=15", "--config.log_every=5")
TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(workdir: str, devices: int, log: str, **env: str) -> subprocess.Popen:
  """Starts ``python -m m2m_jax.main ARGS`` on ``devices`` CPU devices, its output to ``log``."""
  env = dict(os.environ, M2M_NO_PROGRESS="1", XLA_FLAGS=xla_flags(devices), **env)
  with open(log, "w") as f:
    return subprocess.Popen([sys.executable, "-m", "m2m_jax.main", *ARGS, f"--workdir={workdir}"],
                            cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


def _finish(procs: dict[str, subprocess.Popen]) -> None:
  """Waits for every process (``{log: process}``), each within TIMEOUT_S; kills those left when
  one fails or hangs."""
  try:
    for log, proc in procs.items():
      if proc.wait(timeout=TIMEOUT_S):
        with open(log) as f:
          raise AssertionError(f"{log} failed:\n{f.read()[-3000:]}")
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait()


def _outputs(workdir: str) -> tuple[dict, list[dict]]:
  with open(os.path.join(workdir, "summary.json")) as f, \
      open(os.path.join(workdir, "metrics.jsonl")) as g:
    return json.load(f), [json.loads(line) for line in g]


def _assert_close(a: dict, b: dict) -> None:
  """Equal keys, equal strings and numbers equal within RTOL."""
  assert a.keys() == b.keys()
  for k in a:
    if isinstance(a[k], str):
      assert a[k] == b[k], k
    else:
      np.testing.assert_allclose(a[k], b[k], rtol=RTOL, err_msg=k)


def test_two_processes_match_one_process_on_eight_devices(tmp_path):
  two, one = str(tmp_path / "two"), str(tmp_path / "one")
  distributed = {"JAX_COORDINATOR_ADDRESS": f"localhost:{_free_port()}", "JAX_NUM_PROCESSES": "2"}
  procs = {log: _launch(two, 4, log, JAX_PROCESS_ID=str(i), **distributed)
           for i, log in enumerate([f"{two}.0.log", f"{two}.1.log"])}
  # Alongside: the 2 processes spend much of their time waiting on each other.
  procs[f"{one}.log"] = _launch(one, 8, f"{one}.log")
  _finish(procs)
  (summary2, rows2), (summary1, rows1) = _outputs(two), _outputs(one)
  assert (summary2["process_count"], summary2["device_count"]) == (2, 8)
  assert (summary1["process_count"], summary1["device_count"]) == (1, 8)
  _assert_close(summary2["test"], summary1["test"])
  # Every logged row matches, so every step saw the same global batch, each process
  # contributing its own half; process 1 wrote no rows of its own.
  assert len(rows2) == len(rows1)
  for r2, r1 in zip(rows2, rows1):
    _assert_close(r2, r1)


def test_several_processes_need_a_coordinator_and_a_process_id(monkeypatch):
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  with pytest.raises(ConfigError, match=r"JAX_PROCESS_ID \(0 to 1\)"):
    parallel.maybe_initialize_distributed()
