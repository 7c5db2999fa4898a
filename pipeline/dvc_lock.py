"""Check DVC's lock file before running DVC (`make repro` does).

DVC records which outputs a running command reads and writes in `.dvc/tmp/rwlock`. A DVC process
killed while rewriting that file can leave it empty or cut short; from then on every DVC command
fails with "RWLock-file ... corrupted" (a known DVC problem). Deleting the file is the fix, but
only when no DVC command is running: the file is what stops two runs writing the same outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RWLOCK = Path(".dvc/tmp/rwlock")


def rwlock_problem(repo: Path = Path(".")) -> str | None:
    """None if the lock file is absent or valid; otherwise what is wrong and the safe fix."""
    path = Path(repo) / RWLOCK
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    try:
        lock = json.loads(text)
        if isinstance(lock, dict) and set(lock) <= {"read", "write"}:
            return None
        state = f"holds {text[:80]!r}, not DVC's {{'read': ..., 'write': ...}}"
    except json.JSONDecodeError:
        state = "is empty" if not text.strip() else f"is cut short or not JSON ({len(text)} bytes)"
    return (
        f"{path} {state}: a DVC process was killed while writing it, and every DVC command will now fail. "
        f"If no DVC command is running (`pgrep -af dvc` shows none), delete it: `rm {path}` (DVC recreates it). "
        f"Do not delete it while another DVC command runs: it is what keeps two runs from writing the same outputs."
    )


def main() -> int:
    problem = rwlock_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
