"""Where the smoke DAG's wall time goes: the stages' own compute, or start-up and DVC's bookkeeping.

    python benchmarks/dag_overhead.py [--repo PATH] [--scale smoke] [--json OUT]
    python benchmarks/dag_overhead.py --in-place [--json OUT]   # `dvc repro` here, at params.yaml's scale

Copies the repository at --repo (default: this one; tracked and untracked-but-not-ignored files)
into a fresh git repository, runs `dvc exp run -S scale=<scale>` there, and timestamps every line
DVC and the stages print. Per stage, from "Running stage" to the next stage:

    compute   the stage's own work: its log's "wrote ... in X s" (stages/common.stage)
    start-up  bare interpreter start (`python -c pass`, measured here) ...
    imports   ... and module imports: the stage logs how long after process start it began,
              less the bare interpreter start
    dvc       the rest: DVC's checks before the command, launching it, hashing and caching the
              outputs, the lock file, and the process's exit

It prints each stage's split, the medians, and the whole run: wall time, the sum of the stages'
compute, and the difference as a share of the wall time. Run it on a quiet machine; to compare
two versions, run it on both in the same session (e.g. --repo on a clone of the older commit).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
RUNNING = re.compile(r"Running stage '([^']+)'")
READS = re.compile(r" stage (\S+): reads .*\(started ([0-9.?]+) s ago\)")
WROTE = re.compile(r" stage (\S+): wrote .* in ([0-9.]+) s")


@dataclass
class StageTiming:
    name: str
    wall: float
    compute: float
    startup: float
    imports: float
    dvc: float


def copy_repo(source: Path, dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=source, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (source / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_COMMITTER_NAME": "bench",
           "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)


def bare_interpreter_start(python: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def timed_lines(cmd: list[str], cwd: Path, env: dict) -> tuple[list[tuple[float, str]], float, int]:
    """Run `cmd`, stamping each output line with seconds since the start; (lines, wall, exit code)."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in process.stdout]
    code = process.wait()
    return lines, time.perf_counter() - started, code


def split_stages(lines: list[tuple[float, str]], wall: float, bare_start: float) -> list[StageTiming]:
    """One StageTiming per "Running stage" line; its own log lines are those before the next one."""
    starts = [i for i, (_, line) in enumerate(lines) if RUNNING.search(line)]
    timings = []
    for n, i in enumerate(starts):
        window = lines[i : starts[n + 1] if n + 1 < len(starts) else len(lines)]
        end = lines[starts[n + 1]][0] if n + 1 < len(starts) else wall
        age = next((float(m.group(2)) for _, line in window if (m := READS.search(line)) and m.group(2) != "?"), bare_start)
        compute = next((float(m.group(2)) for _, line in window if (m := WROTE.search(line))), 0.0)
        wall_time = end - lines[i][0]
        startup = min(bare_start, age)
        timings.append(StageTiming(RUNNING.search(lines[i][1]).group(1), wall_time, compute, startup, age - startup,
                                   wall_time - compute - age))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=HERE)
    parser.add_argument("--scale", default="smoke")
    parser.add_argument("--json", type=Path, help="also write the timings here")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it, e.g. to profile DVC there")
    parser.add_argument("--in-place", action="store_true", help="run `dvc repro` in --repo itself (e.g. the default scale's `make repro`)")
    args = parser.parse_args()

    python = str(Path(sys.executable))
    env = {**os.environ, "PATH": f"{Path(python).parent}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    bare_start = bare_interpreter_start(python)
    if args.in_place:
        lines, wall, code = timed_lines(["dvc", "repro"], args.repo.resolve(), env)
    else:
        with tempfile.TemporaryDirectory(prefix="dag_overhead-") as tmp:
            repo = args.keep or Path(tmp)
            if args.keep:
                repo.mkdir(parents=True)
            copy_repo(args.repo.resolve(), repo)
            lines, wall, code = timed_lines(["dvc", "exp", "run", "-S", f"scale={args.scale}"], repo, env)
    if code != 0:
        sys.exit("the run failed:\n" + "\n".join(line for _, line in lines[-40:]))
    timings = split_stages(lines, wall, bare_start)
    compute = sum(t.compute for t in timings)

    print(f"{'stage':48s} {'wall':>6s} {'compute':>8s} {'start-up':>8s} {'imports':>8s} {'dvc':>6s}")
    for t in timings:
        print(f"{t.name:48s} {t.wall:6.1f} {t.compute:8.1f} {t.startup:8.2f} {t.imports:8.2f} {t.dvc:6.2f}")
    median = {key: statistics.median(getattr(t, key) for t in timings) for key in ("wall", "compute", "startup", "imports", "dvc")}
    overhead = [t.wall - t.compute for t in timings]
    print(f"\n{len(timings)} stages. Median per stage: overhead (wall - compute) {statistics.median(overhead):.2f} s = "
          f"start-up {median['startup']:.2f} + imports {median['imports']:.2f} + dvc {median['dvc']:.2f} (medians of each part)")
    print(f"Whole run: wall {wall:.1f} s, stages' compute {compute:.1f} s, overhead {wall - compute:.1f} s "
          f"({(wall - compute) / wall:.0%} of the wall time)")
    if args.json:
        args.json.write_text(json.dumps({"wall": wall, "compute": compute, "bare_start": bare_start,
                                         "stages": [asdict(t) for t in timings]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
