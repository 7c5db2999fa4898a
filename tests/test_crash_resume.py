"""SIGKILL during harvest, then rerun: the store resumes from its committed rows and ends identical."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from tests.conftest import REPO, run_stage, subprocess_env

pytestmark = pytest.mark.slow

# A deep hook (the whole network runs) and small batches/chunks: many commits, a wide kill window.
DEEP_HOOKS = ["blocks.29.hook_resid_post", "blocks.10.hook_mlp_out"]
CHUNK_ROWS = 56


def write_params(workdir: Path, lm_repo: Path) -> None:
    """The smoke params with the deep hooks added to harvest, one context per batch, small chunks."""
    params = yaml.safe_load((lm_repo / "params.yaml").read_text())
    params["harvest"].update({"hooks": DEEP_HOOKS + params["harvest"]["hooks"], "chunk_rows": CHUNK_ROWS})
    params["lm"].update({"batch_size": 1, "device": "cpu"})
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def harvest_args(workdir: Path, lm_repo: Path, out: str) -> list[str]:
    model, tokens = lm_repo / "artifacts/model", lm_repo / "artifacts/tokens.zarr"
    return [
        "--model",
        str(model),
        "--tokens",
        str(tokens),
        "--out",
        str(workdir / out),
        "--metrics",
        str(workdir / f"{out}.json"),
    ]


def committed(path: Path) -> int:
    try:
        return int(zarr.open_array(path, mode="r").attrs["committed_rows"])
    except Exception:
        return 0


def test_killed_harvest_resumes_and_matches_uninterrupted_run(lm_repo, tmp_path):
    write_params(tmp_path, lm_repo)
    store = tmp_path / "killed" / "blocks.29.hook_resid_post.zarr"

    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.harvest", *harvest_args(tmp_path, lm_repo, "killed")],
        cwd=tmp_path,
        env={**subprocess_env(), "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while committed(store) < 3 * CHUNK_ROWS and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows_at_kill = committed(store)
    total = zarr.open_array(store, mode="r").shape[0]
    assert 0 < rows_at_kill < total, f"the kill missed the run ({rows_at_kill} of {total} rows committed)"

    run_stage("harvest", harvest_args(tmp_path, lm_repo, "killed"), tmp_path)
    resumed = json.loads((tmp_path / "killed.json").read_text())
    assert resumed["resumed_from_row"] >= rows_at_kill - CHUNK_ROWS > 0
    assert resumed["rows_computed"] == total - resumed["resumed_from_row"]

    run_stage("harvest", harvest_args(tmp_path, lm_repo, "clean"), tmp_path)
    for name in ("blocks.29.hook_resid_post.zarr", "blocks.10.hook_mlp_out.zarr"):
        killed = zarr.open_array(tmp_path / "killed" / name, mode="r")
        clean = zarr.open_array(tmp_path / "clean" / name, mode="r")
        assert killed.attrs["committed_rows"] == clean.attrs["committed_rows"] == total
        np.testing.assert_array_equal(killed[:], clean[:])


def test_store_written_under_other_params_restarts(lm_repo, tmp_path):
    """A partial store from a different config is not resumed: it is rebuilt from row 0."""
    params = yaml.safe_load((lm_repo / "params.yaml").read_text())
    params["harvest"]["chunk_rows"] = 64
    params["lm"]["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage("harvest", harvest_args(tmp_path, lm_repo, "acts"), tmp_path)
    store = zarr.open_array(tmp_path / "acts" / "blocks.2.hook_resid_post.zarr", mode="r+")
    store.attrs["committed_rows"] = 128  # as if killed part-way

    params["harvest"]["store_dtype"] = "float16"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage("harvest", harvest_args(tmp_path, lm_repo, "acts"), tmp_path)
    assert json.loads((tmp_path / "acts.json").read_text())["resumed_from_row"] == 0
    assert zarr.open_array(tmp_path / "acts" / "blocks.2.hook_resid_post.zarr", mode="r").dtype == np.float16
