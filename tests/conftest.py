"""Shared fixtures: a temporary git copy of the repository, and one smoke-scale DVC run in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# No hub is reachable from the tests: fail fast instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Every test that needs the smoke run or its model (directly or through another fixture) is
    in the full tier, marked slow, so that the default `pytest` builds no DAG."""
    for item in items:
        uses_a_run = {"smoke_repo", "lm_repo"} & set(getattr(item, "fixturenames", ()))
        if uses_a_run and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        env.setdefault(key, "pytest")
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        env.setdefault(key, "pytest@localhost")
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env or subprocess_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_stage(module: str, args: list[str], workdir: Path, params: dict | None = None, check: bool = True):
    """`python -m stages.<module> args` in `workdir` (params.yaml there = `params`, if given),
    importing this repository's code."""
    import yaml

    if params is not None:
        (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**subprocess_env(), "PYTHONPATH": str(REPO)}
    return run([sys.executable, "-m", f"stages.{module}", *args], workdir, check=check, env=env)


def params_with(repo: Path, section: str, key: str, value) -> dict:
    """The repo's params.yaml as a dict, with section.key replaced."""
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    return params


def stages_to_rerun(repo: Path, section: str, key: str, value) -> set[str]:
    """The stages `dvc repro --dry` would run after setting params.yaml's section.key = value
    (params.yaml is restored afterwards), leaving out `validate` and `report`: they read the
    whole configuration, so every param change reruns them (asserted here)."""
    import yaml

    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params[section][key] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        dry = run(["dvc", "repro", "--dry"], repo).stdout
    finally:
        params_file.write_text(original)
    ran = {short_name(line.split("'")[1]) for line in dry.splitlines() if line.startswith("Running stage")}
    assert {"validate", "report"} <= ran, f"a change to {section}.{key} did not rerun validate and the report"
    return ran - {"validate", "report"}


def short_name(stage: str) -> str:
    """A stage's name without the file DVC prefixes to stages outside the root dvc.yaml
    ('dag/probes/dvc.yaml:probes@h-1' -> 'probes@h-1')."""
    return stage.rpartition(":")[2]


def copy_repo(dest: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files into a fresh git repo with one commit."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "copy"], dest)
    return dest


@dataclass(frozen=True)
class Launcher:
    """A `launcher` prefix that records each stage command it runs (the stand-in for `srun ...`)."""

    script: Path
    calls: Path

    def recorded(self) -> list[tuple[str, str]]:
        """(working directory, command) of every stage launched so far."""
        if not self.calls.exists():
            return []
        return [tuple(line.split("\t", 1)) for line in self.calls.read_text().splitlines()]


@pytest.fixture(scope="session")
def launcher(tmp_path_factory) -> Launcher:
    scratch = tmp_path_factory.mktemp("launcher")
    calls, script = scratch / "calls.tsv", scratch / "record-and-run.sh"
    script.write_text(f'#!/usr/bin/env bash\nprintf "%s\\t%s\\n" "$PWD" "$*" >> {calls}\nexec "$@"\n')
    script.chmod(0o755)
    return Launcher(script, calls)


def smoke_overrides(launcher: Launcher) -> list[str]:
    """The smoke run's `dvc exp run` overrides. Every stage goes through the recording launcher, so
    that a sweep with the same overrides reuses the smoke run's cached stages."""
    return ["-S", "scale=smoke", "-S", f"launcher={launcher.script}"]


@pytest.fixture(scope="session")
def lm_repo(tmp_path_factory, launcher) -> Path:
    """A git copy of the repo with only the smoke run's model and tokens (validate, model, tokens: about 30 s)."""
    repo = copy_repo(tmp_path_factory.mktemp("smoke_repo"))
    run(["dvc", "exp", "run", *smoke_overrides(launcher), "tokens"], repo)
    return repo


@pytest.fixture(scope="session")
def smoke_repo(lm_repo, launcher) -> Path:
    """The same copy after the whole DAG at the smoke scale (`dvc exp run -S scale=smoke`, real
    model); model and tokens are those of `lm_repo`, not rebuilt."""
    run(["dvc", "exp", "run", *smoke_overrides(launcher)], lm_repo)
    return lm_repo


@pytest.fixture(scope="session")
def smoke_params(smoke_repo):
    from pipeline.config import load_params

    return load_params(smoke_repo / "params.yaml")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: on a busy machine, torch's thread pool makes each op ~10x slower. Modules of
    tiny-model tests use it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
