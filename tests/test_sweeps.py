"""A queued two-point sweep of a downstream parameter (`probes.ridge`) in the smoke run's repo,
run by two parallel DVC queue workers with every stage command prefixed by a launcher that
records each call (the stand-in for `srun ...`); then the README's comparison commands: exp show,
params diff, metrics diff, plots diff. With the smoke run's own overrides the experiments reuse
every cached stage that does not depend on the swept parameter: what the user asked of DVC."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run, smoke_overrides, subprocess_env

SWEEP_RIDGE = (0.5, 2.0)  # the smoke scale fits the probes with ridge 0
REUSED = ("model", "tokens", "harvest", "lm_loss", "train_sae", "sae_outputs", "synthetic", "interventions")
"""Stages that do not depend on probes.ridge: restored from the cache, never launched again."""


def _wait_for_queue(repo: Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the sweep did not finish in {timeout_s} s:\n{status}")
        time.sleep(5)


@pytest.fixture(scope="module")
def sweep(smoke_repo, launcher):
    """Experiment name -> git rev after the queued sweep. The queue is stopped in teardown, so
    that a failed or hung sweep leaves no worker behind."""
    smoke_calls = len(launcher.recorded())
    run(["dvc", "exp", "run", "--queue", *smoke_overrides(launcher), "-S", f"probes.ridge={','.join(map(str, SWEEP_RIDGE))}"],
        smoke_repo)
    try:
        # The workers outlive `queue start` and keep its stdout open: do not capture it.
        subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=smoke_repo, env=subprocess_env(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        status = _wait_for_queue(smoke_repo, timeout_s=20 * 60)
        table = list(csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], smoke_repo).stdout)))
        experiments = {row["Experiment"]: row["rev"] for row in table if row["Experiment"] and row["State"]}
        assert len(experiments) == 2 and status.count("Success") == 2, \
            status + "\n".join(run(["dvc", "queue", "logs", name], smoke_repo, check=False).stdout[-3000:] for name in experiments)
        yield experiments, launcher.recorded()[smoke_calls:]
    finally:
        run(["dvc", "queue", "stop", "--kill"], smoke_repo, check=False)


LOCK_FILES = ("dvc.lock", "dag/train_sae/dvc.lock", "dag/sae_outputs/dvc.lock", "dag/probes/dvc.lock")


def _full_name(lock_file: str, stage: str) -> str:
    """The name `dvc stage list` gives: stages outside the root dvc.yaml carry their file."""
    return stage if lock_file == "dvc.lock" else f"{lock_file.removesuffix('.lock')}.yaml:{stage}"


def _lock(repo: Path, rev: str | None = None) -> dict:
    """Every stage of every lock file (in the workspace, or at git `rev`), by its full name."""
    stages = {}
    for lock_file in LOCK_FILES:
        text = (repo / lock_file).read_text() if rev is None else run(["git", "show", f"{rev}:{lock_file}"], repo).stdout
        stages.update({_full_name(lock_file, name): entry for name, entry in yaml.safe_load(text)["stages"].items()})
    return stages


def _stage_of(command: str) -> str:
    return command.split("python -m stages.", 1)[1].split()[0]


@pytest.mark.slow
def test_the_smoke_run_launched_every_stage_through_the_prefix(smoke_repo, launcher):
    dag = [name for name in run(["dvc", "stage", "list", "--all", "--name-only"], smoke_repo).stdout.split() if name != "code"]
    assert any(name.startswith("dag/train_sae/dvc.yaml:train_sae@") for name in dag)
    lock = _lock(smoke_repo)
    assert lock["code"]["cmd"] == "python -m pipeline.code_deps --out artifacts/code"  # a second of hashing: run in place
    for name in dag:
        prefix = lock[name]["cmd"].strip().split(" ", 1)[0]
        assert prefix == str(launcher.script), f"{name}: {lock[name]['cmd']}"
    in_workspace = [command for workdir, command in launcher.recorded() if Path(workdir) == smoke_repo]
    assert sorted(" ".join(c.split()) for c in in_workspace[: len(dag)]) == sorted(
        " ".join(lock[name]["cmd"].strip().split(" ", 1)[1].split()) for name in dag)


@pytest.mark.slow
def test_the_sweep_reran_only_what_depends_on_the_swept_parameter(sweep, smoke_repo):
    experiments, calls = sweep
    by_workdir: dict[str, set[str]] = {}
    for workdir, command in calls:
        by_workdir.setdefault(workdir, set()).add(_stage_of(command))
    assert len(by_workdir) == 2  # each experiment ran in its own workspace
    for stages in by_workdir.values():
        assert {"validate", "probes", "probes_summary", "pursuit", "error_saes", "report"} <= stages, stages
        assert not stages & set(REUSED), f"reran stages that do not depend on probes.ridge: {stages & set(REUSED)}"
    workspace_lock = _lock(smoke_repo)
    reused = [name for name in workspace_lock if name.rpartition(":")[2].split("@")[0] in REUSED]
    assert any("train_sae@" in name for name in reused) and any("sae_outputs@" in name for name in reused)
    for rev in experiments.values():
        lock = _lock(smoke_repo, rev)
        for name in reused:  # restored from the cache: the very same outputs
            assert lock[name]["outs"] == workspace_lock[name]["outs"], name


@pytest.mark.slow
def test_sweep_metrics_differ_where_they_should(sweep, smoke_repo):
    experiments, _ = sweep
    first, second = experiments
    rows = csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--only-changed", "--csv"], smoke_repo).stdout))
    assert sorted(float(row["probes.ridge"]) for row in rows if row["Experiment"] in experiments) == list(SWEEP_RIDGE)

    params = json.loads(run(["dvc", "params", "diff", first, second, "--json"], smoke_repo).stdout)["params.yaml"]
    assert set(params) == {"probes.ridge"}
    assert sorted((params["probes.ridge"]["old"], params["probes.ridge"]["new"])) == list(SWEEP_RIDGE)

    metrics = json.loads(run(["dvc", "metrics", "diff", first, second, "--json", "--all"], smoke_repo).stdout)
    sae_metrics = {p: v for p, v in metrics.items() if p.startswith("metrics/sae/")}
    assert sae_metrics and all(d["diff"] == 0 for v in sae_metrics.values() for d in v.values()), "the SAEs must be reused"
    probes = {p: v for p, v in metrics.items() if p.startswith("metrics/probes/")}
    assert probes and all(v["error_vector_r2"]["diff"] != 0 for v in probes.values())  # a ridge changes every fit
    assert all(v["sae_fvu"]["diff"] == 0 for v in probes.values())
    assert metrics["metrics/harvest.json"]["rows"]["diff"] == 0

    out = smoke_repo / "plots_diff"
    run(["dvc", "plots", "diff", first, second, "-o", str(out)], smoke_repo)
    page = (out / "index.html").read_text()
    assert "metrics/train_sae/" in page and "metrics/layer_sweep.csv" in page
