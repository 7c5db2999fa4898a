"""Faults 5 and 6: a long stage killed at any moment (SIGKILL) restarts or resumes cleanly and
ends with exactly the output of an uninterrupted run; identical SAEs are identical bytes.

Each test runs the real stage scripts on a tiny store. A random kill point is drawn from a seed
that the test prints, so a failure can be replayed (`KILL_SEED=<seed> pytest ...`)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, subprocess_env
from tests.faults.stores import file_bytes, write_store

pytestmark = [pytest.mark.faults, pytest.mark.slow]

HOOK, WIDTH = "blocks.0.hook_resid_post", 32


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """params.yaml (the repo's, with a tiny SAE: 60 steps, a checkpoint every 2) and one store."""
    wd = tmp_path_factory.mktemp("kills")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["sae"]["k"] = 4
    params["train_sae"].update({"tokens": 60 * 16, "batch_size": 16, "checkpoint_every": 2, "log_every": 1, "device": "cpu",
                                "dead_feature_window": 5})
    params["sae_outputs"].update({"block_rows": 8, "device": "cpu"})
    (wd / "params.yaml").write_text(yaml.safe_dump(params))
    write_store(wd / "acts" / f"{HOOK}.zarr")
    return wd


def command(stage: str, out: str) -> list[str]:
    if stage == "train_sae":
        args = ["--hook", HOOK, "--width", str(WIDTH), "--activations", "acts", "--out", out, "--curve", f"{out}.csv",
                "--checkpoints", f"scratch/{out}"]
    else:
        args = ["--hook", HOOK, "--activations", "acts", "--sae", "sae-clean", "--out", out, "--metrics", f"{out}.json"]
    return [sys.executable, "-m", f"stages.{stage}", *args]


def start(stage: str, out: str, wd: Path) -> subprocess.Popen:
    return subprocess.Popen(command(stage, out), cwd=wd, env={**subprocess_env(), "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(stage: str, out: str, wd: Path) -> float:
    started = time.monotonic()
    proc = start(stage, out, wd)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    return time.monotonic() - started


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def clean(workdir) -> dict[str, float]:
    """The uninterrupted runs, and how long each took (the window for random kills)."""
    return {"train_sae": finish("train_sae", "sae-clean", workdir), "sae_outputs": finish("sae_outputs", "outputs-clean", workdir)}


def test_training_the_same_sae_twice_gives_identical_bytes(workdir, clean):
    finish("train_sae", "sae-again", workdir)
    assert file_bytes(workdir / "sae-again") == file_bytes(workdir / "sae-clean")
    assert (workdir / "sae-again.csv").read_bytes() == (workdir / "sae-clean.csv").read_bytes()
    assert not (workdir / "scratch" / "sae-again").exists(), "the checkpoints outlived the finished SAE"


def test_train_sae_killed_after_a_checkpoint_resumes_to_the_same_sae(workdir, clean):
    proc = start("train_sae", "sae-killed", workdir)
    checkpoints = workdir / "scratch" / "sae-killed"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("*/step-*[0-9]")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    kill(proc)
    saved = [p for p in checkpoints.glob("*/step-*") if not p.name.endswith(".partial")]
    assert saved and not (workdir / "sae-killed").exists(), "the kill missed the training"
    finish("train_sae", "sae-killed", workdir)
    assert file_bytes(workdir / "sae-killed") == file_bytes(workdir / "sae-clean")
    assert (workdir / "sae-killed.csv").read_bytes() == (workdir / "sae-clean.csv").read_bytes()


@pytest.mark.parametrize("stage", ["train_sae", "sae_outputs"])
def test_a_kill_at_a_random_moment_ends_with_the_uninterrupted_result(workdir, clean, stage):
    seed = int(os.environ.get("KILL_SEED", random.randrange(1 << 30)))
    delay = random.Random(seed).uniform(0, clean[stage])
    print(f"KILL_SEED={seed}: {stage} killed after {delay:.2f} s of {clean[stage]:.2f} s")
    out = f"{stage}-random"
    proc = start(stage, out, workdir)
    time.sleep(delay)
    kill(proc)
    finish(stage, out, workdir)
    reference = "sae-clean" if stage == "train_sae" else "outputs-clean"
    assert file_bytes(workdir / out) == file_bytes(workdir / reference), f"KILL_SEED={seed}"
    assert not list(workdir.glob("*.partial")), f"KILL_SEED={seed}: a temporary output survived"
