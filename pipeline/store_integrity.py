"""Chunk manifests: a finished Zarr store records every chunk file's size and CRC32, so that a
missing, truncated or overwritten chunk is an error instead of zeros or NaNs downstream.

Zarr reads a missing chunk as its fill value and a damaged one as whatever its bytes say; it
never complains. So every store this project writes is sealed when complete (`seal`): the root's
attributes get `chunk_manifest` = {relative path: [size, crc32]}. Opening a store for reading
(`open_checked`) checks that every listed chunk exists with its size (a stat per chunk: cheap);
`verify` (python -m pipeline.store_integrity) also recomputes every checksum.

Zarr writes a chunk to `<chunk>.<uuid>.partial` and renames it into place; a kill can leave
that temporary file behind. `remove_partials` deletes them, and `.dvcignore` keeps DVC from
ever committing one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import zlib
from pathlib import Path

import zarr

MANIFEST_KEY = "chunk_manifest"
METADATA_FILES = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
READ_BYTES = 1 << 22


class StoreDamagedError(RuntimeError):
    """A store's chunks do not match the manifest written when it was finished."""


def chunk_files(path: Path) -> list[Path]:
    """Every data file of the store (metadata and zarr's temporary files left out), sorted."""
    return sorted(
        p for p in Path(path).rglob("*") if p.is_file() and p.name not in METADATA_FILES and not p.name.endswith(".partial")
    )


def crc32(path: Path) -> int:
    value = 0
    with open(path, "rb") as handle:
        while block := handle.read(READ_BYTES):
            value = zlib.crc32(block, value)
    return value


def manifest(path: Path) -> dict[str, list[int]]:
    path = Path(path)
    return {p.relative_to(path).as_posix(): [p.stat().st_size, crc32(p)] for p in chunk_files(path)}


def seal(path: Path | str) -> None:
    """Record the finished store's chunk manifest in its root attributes (call after the last write)."""
    path = Path(path)
    remove_partials(path)
    zarr.open(path, mode="r+").attrs[MANIFEST_KEY] = manifest(path)


def new_group(out: Path | str) -> tuple[Path, zarr.Group]:
    """A fresh group at `<out>.partial`, to be filled and then `publish`ed (never half-written at `out`)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp, zarr.open_group(tmp, mode="w")


def publish(tmp: Path, out: Path | str) -> None:
    """Seal the finished store at `tmp` and move it to `out`, replacing the previous one."""
    seal(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def remove_partials(path: Path | str) -> int:
    """Delete zarr's temporary chunk files left by a killed write; returns how many."""
    leftovers = list(Path(path).rglob("*.partial"))
    for leftover in leftovers:
        leftover.unlink()
    return len(leftovers)


def repair_hint(path: Path) -> str:
    return (
        f"restore the committed copy from the DVC cache with `dvc checkout --force {path}`, or rebuild it with "
        f"`dvc repro` (add `-f -s <stage>` if DVC thinks it is up to date)"
    )


def check(path: Path | str, checksums: bool = False) -> None:
    """Raise StoreDamagedError unless every chunk in the manifest is present with its size
    (and, with `checksums`, its CRC32)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: store missing; {repair_hint(path)}")
    try:
        recorded = zarr.open(path, mode="r").attrs.get(MANIFEST_KEY)
    except Exception as exc:
        raise StoreDamagedError(f"{path}: unreadable Zarr metadata ({exc}); {repair_hint(path)}") from exc
    if recorded is None:
        raise StoreDamagedError(
            f"{path}: no chunk manifest, so it was never finished (or was written by an older version); {repair_hint(path)}"
        )
    for relative, (size, checksum) in recorded.items():
        chunk = path / relative
        if not chunk.is_file():
            problem = "is missing"
        elif (found := chunk.stat().st_size) != size:
            problem = f"has {found} bytes, expected {size}"
        elif checksums and (found_crc := crc32(chunk)) != checksum:
            problem = f"has CRC32 {found_crc:08x}, expected {checksum:08x} (its bytes were changed)"
        else:
            continue
        raise StoreDamagedError(f"{path}: chunk {relative} {problem}; {repair_hint(path)}")


def open_checked(path: Path | str) -> zarr.Array | zarr.Group:
    """Open a finished store (array or group) read-only, after the cheap manifest check."""
    check(path)
    return zarr.open(Path(path), mode="r")


def stores_under(root: Path) -> list[Path]:
    """The outermost `*.zarr` folders under `root` (or `root` itself)."""
    root = Path(root)
    if root.suffix == ".zarr":
        return [root]
    found = sorted(p for p in root.rglob("*.zarr") if p.is_dir())
    return [p for p in found if not any(parent in found for parent in p.parents)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Recompute every chunk checksum of the stores under the given paths.")
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("artifacts")])
    args = parser.parse_args(argv)
    stores = [s for root in args.paths for s in stores_under(root)]
    damaged = 0
    for store in stores:
        try:
            check(store, checksums=True)
            print(f"ok       {store}")
        except (StoreDamagedError, FileNotFoundError) as exc:
            damaged += 1
            print(f"DAMAGED  {exc}")
    print(f"{len(stores) - damaged} of {len(stores)} stores verified")
    return 1 if damaged or not stores else 0


if __name__ == "__main__":
    sys.exit(main())
