"""SIGKILL during harvest, then rerun: the partial stores (in the scratch folder) resume from their
committed rows and end identical to an uninterrupted run, under the stage script, `dvc repro`
and `dvc exp run` alike."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from pipeline.store_integrity import check
from tests.conftest import REPO, run, run_stage, subprocess_env
from tests.faults.stores import file_bytes

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
        "--scratch",
        str(workdir / f"scratch-{out}"),
        "--metrics",
        str(workdir / f"{out}.json"),
        "--log",
        str(workdir / f"{out}.log.json"),
    ]


def committed(path: Path) -> int:
    try:
        return int(zarr.open_array(path, mode="r").attrs["committed_rows"])
    except Exception:
        return 0


def test_killed_harvest_resumes_and_matches_uninterrupted_run(lm_repo, tmp_path):
    write_params(tmp_path, lm_repo)
    store = tmp_path / "scratch-killed" / "blocks.29.hook_resid_post.zarr"

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
    resumed = json.loads((tmp_path / "killed.log.json").read_text())
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
    partial = tmp_path / "scratch-acts" / "blocks.2.hook_resid_post.zarr"
    shutil.copytree(tmp_path / "acts" / "blocks.2.hook_resid_post.zarr", partial)
    zarr.open_array(partial, mode="r+").attrs["committed_rows"] = 128  # as if killed part-way

    params["harvest"]["store_dtype"] = "float16"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_stage("harvest", harvest_args(tmp_path, lm_repo, "acts"), tmp_path)
    assert json.loads((tmp_path / "acts.log.json").read_text())["resumed_from_row"] == 0
    assert zarr.open_array(tmp_path / "acts" / "blocks.2.hook_resid_post.zarr", mode="r").dtype == np.float16


def test_a_harvest_killed_at_a_random_moment_ends_identical(lm_repo, tmp_path):
    """Kill point drawn from a printed seed (KILL_SEED=<seed> replays it): before the model has
    loaded, mid-chunk, or while the stores move into place, the rerun's stores equal a clean run's."""
    write_params(tmp_path, lm_repo)
    started = time.monotonic()
    run_stage("harvest", harvest_args(tmp_path, lm_repo, "clean"), tmp_path)
    window = time.monotonic() - started
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    delay = random.Random(seed).uniform(0, window)
    print(f"KILL_SEED={seed}: harvest killed after {delay:.2f} s of {window:.2f} s")
    proc = subprocess.Popen([sys.executable, "-m", "stages.harvest", *harvest_args(tmp_path, lm_repo, "killed")], cwd=tmp_path,
                            env={**subprocess_env(), "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_stage("harvest", harvest_args(tmp_path, lm_repo, "killed"), tmp_path)
    for name in ("blocks.29.hook_resid_post.zarr", "blocks.10.hook_mlp_out.zarr"):
        killed, clean = tmp_path / "killed" / name, tmp_path / "clean" / name
        assert file_bytes(killed, skip=("zarr.json",)) == file_bytes(clean, skip=("zarr.json",)), f"KILL_SEED={seed}"
        assert zarr.open_array(killed).attrs["chunk_manifest"] == zarr.open_array(clean).attrs["chunk_manifest"]
    assert not (tmp_path / "scratch-killed").exists()


def test_a_killed_dvc_exp_run_resumes_its_harvest(lm_repo, launcher, tmp_path):
    """`dvc exp run` checks out the committed outputs before it runs, which once threw the
    partial stores away; in .scratch they survive, and the rerun resumes."""
    repo = tmp_path / "repo"
    shutil.copytree(lm_repo, repo, symlinks=True)
    overrides = ["-S", "scale=smoke", "-S", f"launcher={launcher.script}", "-S", f"harvest.hooks=[{DEEP_HOOKS[0]},"
                 "blocks.2.hook_resid_post,blocks.2.hook_mlp_out,blocks.1.hook_resid_post,blocks.2.attn.hook_z]",
                 "-S", f"harvest.chunk_rows={CHUNK_ROWS}", "-S", "lm.batch_size=1", "-S", "lm.device=cpu"]
    store = repo / ".scratch" / "harvest" / f"{DEEP_HOOKS[0]}.zarr"
    proc = subprocess.Popen(["dvc", "exp", "run", *overrides, "harvest"], cwd=repo, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while committed(store) < 3 * CHUNK_ROWS and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rows_at_kill = committed(store)
    assert rows_at_kill >= 3 * CHUNK_ROWS, "the kill missed the harvest"

    run(["dvc", "exp", "run", *overrides, "harvest"], repo)
    log = json.loads((repo / "logs" / "harvest.json").read_text())
    assert log["resumed_from_row"] >= rows_at_kill - CHUNK_ROWS > 0
    check(repo / "artifacts" / "activations" / f"{DEEP_HOOKS[0]}.zarr", checksums=True)
    assert not (repo / ".scratch" / "harvest").exists()
    assert not list((repo / "artifacts" / "activations").rglob("*.partial"))
