"""What the DVC cache's link type costs: `reflink,copy` (the project's) against `hardlink,symlink`
(the old setting, which let workspace damage reach the cache), measured in the same run.

    python benchmarks/cache_link_cost.py [--outputs artifacts/activations]

For each link type, in a fresh scratch DVC repository on the same disk as --outputs: copy the
folder in, then time `dvc commit` of a stage that outputs it (DVC hashes it and links or copies
it into the cache) and `dvc checkout` after the folder is deleted (restoring it from the cache).
Prints seconds, the extra disk (cache plus workspace, a hard-linked file counted once) and the
ratios copy / hardlink. On file systems with reflinks (btrfs, XFS, APFS) `reflink,copy` reflinks
and costs about what hard links do; on ext4 it copies.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"


def dvc(repo: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([str(BIN / "dvc"), *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
    return time.perf_counter() - started


def disk_bytes(*roots: Path) -> int:
    """Bytes on disk under the roots, each inode once (hard links are one file)."""
    seen, total = set(), 0
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                if (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    total += stat.st_blocks * 512
    return total


def measure(outputs: Path, link_type: str, parent: Path) -> dict[str, float]:
    repo = Path(tempfile.mkdtemp(dir=parent))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "cache.type", link_type)
    shutil.copytree(outputs, repo / "out")
    (repo / "dvc.yaml").write_text("stages:\n  make:\n    cmd: 'true'\n    outs: [out]\n")
    commit = dvc(repo, "commit", "-f", "-q")
    used = disk_bytes(repo / "out", repo / ".dvc" / "cache")
    shutil.rmtree(repo / "out")
    checkout = dvc(repo, "checkout", "-q")
    shutil.rmtree(repo)
    return {"commit_s": commit, "checkout_s": checkout, "disk_gb": used / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", type=Path, default=Path("artifacts/activations"))
    args = parser.parse_args()
    size = disk_bytes(args.outputs) / 1e9
    parent = args.outputs.resolve().parent
    results = {kind: measure(args.outputs, kind, parent) for kind in ("hardlink,symlink", "reflink,copy")}
    print(f"{args.outputs}: {size:.2f} GB")
    print(f"{'cache.type':18s} {'dvc commit (s)':>15s} {'dvc checkout (s)':>17s} {'disk (GB)':>10s}")
    for kind, r in results.items():
        print(f"{kind:18s} {r['commit_s']:15.1f} {r['checkout_s']:17.1f} {r['disk_gb']:10.2f}")
    old, new = results["hardlink,symlink"], results["reflink,copy"]
    print(f"ratio copy/hardlink: commit {new['commit_s'] / old['commit_s']:.2f}, checkout {new['checkout_s'] / old['checkout_s']:.2f}, "
          f"disk {new['disk_gb'] / old['disk_gb']:.2f}")


if __name__ == "__main__":
    main()
