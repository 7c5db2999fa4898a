"""A queued two-point sweep at the smoke scale, run by two parallel DVC queue workers with every
stage command prefixed by a launcher that records each call (the stand-in for `srun ...`); then
the README's comparison commands: exp show, params diff, metrics diff, plots diff."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run, subprocess_env

SWEEP_K = (8, 12)  # the smoke scale trains with k = 16


def _wait_for_queue(repo: Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the sweep did not finish in {timeout_s} s:\n{status}")
        time.sleep(10)


@pytest.fixture(scope="module")
def sweep(smoke_repo, tmp_path_factory):
    """(experiment name -> git rev, the launcher's record of calls) after the queued sweep."""
    scratch = tmp_path_factory.mktemp("launcher")
    calls = scratch / "calls.tsv"
    launcher = scratch / "record-and-run.sh"
    launcher.write_text(f'#!/usr/bin/env bash\nprintf "%s\\t%s\\n" "$PWD" "$*" >> {calls}\nexec "$@"\n')
    launcher.chmod(0o755)
    run(["dvc", "exp", "run", "--queue", "-S", "scale=smoke", "-S", f"launcher={launcher}",
         "-S", f"sae.k={','.join(map(str, SWEEP_K))}"], smoke_repo)
    # The workers outlive `queue start` and keep its stdout open: do not capture it.
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=smoke_repo, env=subprocess_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = _wait_for_queue(smoke_repo, timeout_s=45 * 60)
    table = list(csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], smoke_repo).stdout)))
    experiments = {row["Experiment"]: row["rev"] for row in table if row["Experiment"] and row["State"]}
    assert len(experiments) == 2 and status.count("Success") == 2, \
        status + "\n".join(run(["dvc", "queue", "logs", name], smoke_repo, check=False).stdout[-3000:] for name in experiments)
    return experiments, calls.read_text().splitlines()


def _lock(repo: Path, rev: str) -> dict:
    return yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"], repo).stdout)


@pytest.mark.slow
def test_launcher_prefixes_every_stage_of_both_experiments(sweep, smoke_repo):
    experiments, calls = sweep
    by_workdir: dict[str, set[str]] = {}
    for line in calls:
        workdir, command = line.split("\t")
        by_workdir.setdefault(workdir, set()).add(" ".join(command.split()))
    assert len(by_workdir) == 2  # each experiment ran in its own workspace
    dag = run(["dvc", "stage", "list", "--name-only"], smoke_repo).stdout.split()  # the smoke DAG
    for rev in experiments.values():
        lock = _lock(smoke_repo, rev)["stages"]  # (also keeps stale entries of HEAD's default-scale DAG)
        launched = set()
        for name in dag:
            prefix, command = lock[name]["cmd"].strip().split(" ", 1)
            assert prefix.endswith("record-and-run.sh"), f"{name}: {lock[name]['cmd']}"
            launched.add(" ".join(command.split()))
        assert launched in by_workdir.values(), "an experiment's stages were not all launched through the prefix"
    assert len(calls) == 2 * len(dag)

@pytest.mark.slow
def test_parallel_experiments_share_the_activation_stores_intact(sweep, smoke_repo):
    """Both experiments harvested in parallel into the same DVC cache: same store hashes as the
    workspace's own run, and the workspace's stores still match its lock."""
    experiments, _ = sweep
    def store_hashes(lock: dict) -> dict:
        return {o["path"]: o["md5"] for o in lock["stages"]["harvest"]["outs"] if o["path"] == "artifacts/activations"}

    expected = store_hashes(yaml.safe_load((smoke_repo / "dvc.lock").read_text()))
    assert expected
    for rev in experiments.values():
        assert store_hashes(_lock(smoke_repo, rev)) == expected
    assert "harvest" not in run(["dvc", "status", "harvest"], smoke_repo).stdout.replace("'harvest'", "")


@pytest.mark.slow
def test_sweep_metrics_differ_where_they_should(sweep, smoke_repo):
    experiments, _ = sweep
    first, second = experiments
    rows = csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--only-changed", "--csv"], smoke_repo).stdout))
    assert sorted(int(row["sae.k"]) for row in rows if row["Experiment"] in experiments) == list(SWEEP_K)

    params = json.loads(run(["dvc", "params", "diff", first, second, "--json"], smoke_repo).stdout)["params.yaml"]
    assert {key for key in params} == {"sae.k"}
    assert sorted((params["sae.k"]["old"], params["sae.k"]["new"])) == list(SWEEP_K)

    metrics = json.loads(run(["dvc", "metrics", "diff", first, second, "--json", "--all"], smoke_repo).stdout)
    for path, values in metrics.items():
        if path.startswith("metrics/sae/"):
            assert sorted((values["l0"]["old"], values["l0"]["new"])) == list(SWEEP_K), path  # TopK: L0 = k
            assert values["fvu"]["diff"] * values["l0"]["diff"] < 0, path  # a larger k, a smaller error
    assert any(p.startswith("metrics/probes/") and v["nonlinear_fvu"]["diff"] != 0 for p, v in metrics.items())
    assert metrics["metrics/harvest.json"]["rows"]["diff"] == 0  # the activations do not depend on k

    out = smoke_repo / "plots_diff"
    run(["dvc", "plots", "diff", first, second, "-o", str(out)], smoke_repo)
    page = (out / "index.html").read_text()
    assert "metrics/train_sae/" in page and "metrics/layer_sweep.csv" in page
