"""Fault 2 (its end) and the run's hygiene: a NaN or infinite metric stops the stage naming its
inputs, metrics are written at a fixed precision (a rerun rewrites identical files), and an
empty or corrupt DVC lock file gets the safe fix instead of DVC's bare error."""

from __future__ import annotations

import json
import math
import sys

import pytest
import yaml

from pipeline.dvc_lock import RWLOCK, rwlock_problem
from stages.common import SIGNIFICANT_DIGITS, NonFiniteMetricError, write_csv, write_json
from tests.conftest import REPO, run, run_stage, subprocess_env

pytestmark = pytest.mark.faults


def test_metrics_are_written_at_six_significant_digits(tmp_path):
    write_json(tmp_path / "m.json", {"fvu": 0.79429504844945, "nested": {"r2": [0.1234567891, 12345678.9]}, "rows": 12, "ok": True})
    assert json.loads((tmp_path / "m.json").read_text()) == {"fvu": 0.794295, "nested": {"r2": [0.123457, 12345700.0]}, "rows": 12, "ok": True}
    noisy = 0.7942950484494503  # the same number after a rerun from scratch, last digits moved
    write_json(tmp_path / "n.json", {"fvu": noisy, "nested": {"r2": [0.1234567891, 12345678.9]}, "rows": 12, "ok": True})
    assert (tmp_path / "n.json").read_bytes() == (tmp_path / "m.json").read_bytes()
    assert SIGNIFICANT_DIGITS == 6


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_is_refused_naming_where_it_is(tmp_path, bad):
    with pytest.raises(NonFiniteMetricError, match=rf"m.json.by_component.error\[1\] is {bad}"):
        write_json(tmp_path / "m.json", {"by_component": {"error": [0.5, bad]}})
    assert not (tmp_path / "m.json").exists()
    with pytest.raises(NonFiniteMetricError, match=rf"c.csv: row 1, column fvu is {bad}"):
        write_csv(tmp_path / "c.csv", ["width", "fvu"], [[8, 0.5], [16, bad]])
    assert not (tmp_path / "c.csv").exists()


def test_a_stage_given_a_nan_stops_and_names_its_inputs(tmp_path):
    """A real stage (sae_summary) over per-SAE metrics of which one holds a NaN (what a damaged
    chunk once gave): exit code 3, the metric and the inputs named, no summary written."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    metrics = tmp_path / "metrics" / "sae"
    metrics.mkdir(parents=True)
    from pipeline.sae_config import SaeSetConfig

    names = SaeSetConfig(**params["sae"]).names()
    for name in names:
        (metrics / f"{name}.json").write_text('{"fvu": 0.4, "l0": 32.0, "dead_fraction": 0.0}')
    (metrics / f"{names[-1]}.json").write_text('{"fvu": NaN, "l0": 32.0, "dead_fraction": 0.0}')
    result = run_stage("sae_summary", ["--metrics-dir", str(metrics), "--out", str(tmp_path / "summary.json")], tmp_path,
                       params=params, check=False)
    assert result.returncode == 3, result.stderr
    assert f"summary.json.saes.{names[-1]}.fvu is nan" in result.stderr
    assert f"Its inputs: params.yaml:sae, {metrics}" in result.stderr
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("content, says", [("", "is empty"), ('{"read": {"/a": [{"pid"', "is cut short or not JSON")])
def test_a_corrupt_dvc_lock_file_gets_the_safe_fix(tmp_path, content, says):
    assert rwlock_problem(tmp_path) is None
    (tmp_path / RWLOCK).parent.mkdir(parents=True)
    (tmp_path / RWLOCK).write_text('{"read": {}, "write": {}}')
    assert rwlock_problem(tmp_path) is None
    (tmp_path / RWLOCK).write_text(content)
    problem = rwlock_problem(tmp_path)
    assert says in problem and "pgrep -af dvc" in problem and f"rm {tmp_path / RWLOCK}" in problem


def test_make_repro_stops_on_a_corrupt_lock_before_dvc_runs(tmp_path):
    """`make repro`'s first step, run in a copy holding an empty lock file."""
    (tmp_path / RWLOCK).parent.mkdir(parents=True)
    (tmp_path / RWLOCK).write_text("")
    result = run([sys.executable, "-m", "pipeline.dvc_lock"], tmp_path, check=False,
                 env={**subprocess_env(), "PYTHONPATH": str(REPO)})
    assert result.returncode == 1 and "is empty" in result.stderr
    assert "$(BIN)/python -m pipeline.dvc_lock\n\t$(BIN)/dvc repro" in (REPO / "Makefile").read_text()
