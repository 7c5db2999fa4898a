"""The SLURM launcher script, run against a stand-in `sbatch` that does what SLURM does with
`--wrap` (runs the string in a shell) and records its options."""

from __future__ import annotations

import json
import os
import subprocess

from tests.conftest import REPO

FAKE_SBATCH = """#!/usr/bin/env bash
for a in "$@"; do
  case $a in --wrap=*) cmd=${a#--wrap=} ;; *) echo "$a" >> "$SBATCH_RECORD" ;; esac
done
exec bash -c "$cmd"
"""


def _launch(tmp_path, *command: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    record = tmp_path / "sbatch-options"
    record.unlink(missing_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SBATCH_RECORD": str(record)}
    result = subprocess.run([str(REPO / "launchers" / "sbatch_wait.sh"), *command], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    return result, record.read_text().splitlines()


def test_sbatch_launcher_passes_the_stage_command_intact_and_waits(tmp_path):
    args = ["two words", "a$b", "q'uote", "--out", "metrics/x.json"]
    result, options = _launch(tmp_path, "python", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == args
    assert "--wait" in options and f"--chdir={tmp_path}" in options and "--output=slurm-logs/%j.log" in options


def test_sbatch_launcher_returns_the_jobs_exit_status(tmp_path):
    result, _ = _launch(tmp_path, "python", "-c", "raise SystemExit(3)")
    assert result.returncode == 3
