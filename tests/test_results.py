"""README's and docs/results.md's results tables are what tools/results.py makes of the
committed summaries of their runs (docs/summaries/), and every config's default has its row."""

import json
import os
import sys

import pytest

from conftest import ROOT
from m2m_jax import configlib

sys.path.insert(0, os.path.join(ROOT, "tools"))
import results  # noqa: E402  (tools/ is no package)


def test_every_row_names_a_preset_and_every_config_has_its_default_row():
  for row in results.ROWS:
    name, _, preset = row.name.partition(":")
    assert (preset or "default") in configlib.config_module(name).PRESETS, row.name
  assert {r.name for r in results.ROWS if ":" not in r.name} == set(configlib.config_names())
  assert len({r.name for r in results.ROWS}) == len(results.ROWS)


@pytest.mark.parametrize("row", results.ROWS, ids=lambda r: r.name)
def test_each_row_has_the_summary_of_its_run_and_its_value_formats(row):
  summary = results.summary(row)
  assert summary is not None, f"run: python tools/results.py run {row.name}"
  name, _, preset = row.name.partition(":")
  config = configlib.load(name, preset or None)
  assert (summary["algorithm"], summary["dataset"]) == (config.algorithm, config.dataset)
  assert "**" in row.value.format(t=summary["test"], s=summary)


def test_the_tables_are_what_write_makes_of_the_summaries():
  for path, make in results.TABLES.items():
    assert results.between(results.ROOT / path, "results") == make(), (
        f"{path} is stale: python tools/results.py write")


def test_a_summary_without_a_templated_metric_is_an_error(tmp_path, monkeypatch):
  monkeypatch.setattr(results, "SUMMARIES", tmp_path)
  row = results.ROWS[0]
  (tmp_path / f"{row.workdir}.json").write_text(json.dumps(
      {"test": {"loss": 0.1}, "device_kind": "cpu", "device_count": 1, "wall_time_s": 1.0}))
  with pytest.raises(KeyError, match="accuracy"):
    results.table([row])
