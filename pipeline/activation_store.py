"""Chunked Zarr activation stores: resumable chunk-aligned writes, committed-row bookkeeping, streaming reads.

One store holds one hook's activations, shape (n_rows, d); row i is row i of the token index.
The array is allocated at full size up front; `committed_rows` (an attribute, rewritten
atomically after every write) says how many leading rows hold data. A writer resumes from
them, provided the store's `fingerprint` (the inputs and params it was written under) matches;
otherwise the store is started afresh. A finished store is sealed with its chunk manifest
(pipeline.store_integrity), and a reader opens only finished stores whose chunks match it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr

from pipeline.store_integrity import StoreDamagedError, check, remove_partials, repair_hint, seal


class IncompleteStoreError(RuntimeError):
    pass


class ActivationWriter:
    """Appends row blocks to one store, writing only whole chunks until the final one."""

    def __init__(self, path: Path, n_rows: int, width: int, dtype: str, chunk_rows: int, fingerprint: str, attrs: dict):
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self.array = self._open_or_create(n_rows, width, dtype, chunk_rows, fingerprint, attrs)
        self.next_row = self.committed_rows
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def _open_or_create(self, n_rows, width, dtype, chunk_rows, fingerprint, attrs) -> zarr.Array:
        if self.path.exists():
            try:
                array = zarr.open_array(self.path, mode="r+")
                if array.attrs.get("fingerprint") == fingerprint and array.shape == (n_rows, width):
                    remove_partials(self.path)  # a chunk write the kill interrupted; its rows are not committed
                    return array
            except Exception:  # unreadable leftovers of a crash: start afresh
                pass
            shutil.rmtree(self.path)
        array = zarr.create_array(
            self.path, shape=(n_rows, width), chunks=(chunk_rows, width), dtype=dtype, compressors=None, fill_value=0
        )
        array.attrs.update({**attrs, "fingerprint": fingerprint, "n_rows": n_rows, "committed_rows": 0})
        return array

    @property
    def committed_rows(self) -> int:
        return int(self.array.attrs["committed_rows"])

    @property
    def complete(self) -> bool:
        return self.committed_rows == self.array.shape[0]

    def rewind(self, row: int) -> None:
        """Continue writing from `row` (<= committed rows, chunk-aligned)."""
        aligned = row % self.chunk_rows == 0 or row == self.array.shape[0]
        if not (row <= self.committed_rows and aligned):
            raise IncompleteStoreError(
                f"{self.path}: cannot resume at row {row} (committed_rows={self.committed_rows}, chunks of "
                f"{self.chunk_rows} rows): the store is corrupt; delete it to start afresh"
            )
        self.next_row = row

    def append(self, block: np.ndarray) -> None:
        self._pending.append(block)
        self._pending_rows += len(block)
        if self._pending_rows >= self.chunk_rows:
            self._write(final=self.next_row + self._pending_rows == self.array.shape[0])

    def close(self) -> None:
        if self._pending_rows:
            self._write(final=True)
        if self.next_row != self.array.shape[0]:
            raise IncompleteStoreError(f"{self.path}: closed at row {self.next_row} of {self.array.shape[0]}")
        seal(self.path)

    def _write(self, final: bool) -> None:
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        n = len(data) if final else (len(data) // self.chunk_rows) * self.chunk_rows
        stop = self.next_row + n
        self.array[self.next_row : stop] = data[:n]
        if stop > self.committed_rows:
            self.array.attrs["committed_rows"] = stop
        self.next_row = stop
        rest = data[n:]
        self._pending = [rest] if len(rest) else []
        self._pending_rows = len(rest)


def open_store(path: Path | str) -> zarr.Array:
    """Open a finished store for reading; refuses one whose writer did not finish, or whose
    chunks are missing or of the wrong size."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: activation store missing; run the `harvest` stage (dvc repro harvest)")
    try:
        array = zarr.open_array(path, mode="r")
    except Exception as exc:  # zarr raises several kinds, none naming the file
        raise StoreDamagedError(f"{path}: unreadable Zarr metadata ({exc}); {repair_hint(path)}") from exc
    committed = int(array.attrs.get("committed_rows", -1))
    if committed != array.shape[0]:
        raise IncompleteStoreError(
            f"{path}: only {committed} of {array.shape[0]} rows committed; rerun `dvc repro harvest` to resume"
        )
    check(path)
    return array


def store_path(activations_dir: Path | str, hook) -> Path:
    """The activation store of `hook` (a `pipeline.config.Hook` or its name) under `activations_dir`."""
    return Path(activations_dir) / f"{getattr(hook, 'name', hook)}.zarr"


def iter_row_blocks(
    array: zarr.Array, start: int = 0, stop: int | None = None, rows: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first row, block) over rows [start, stop) in chunk-aligned blocks: memory O(rows x d).
    An empty range is an error: every caller sums over its rows and would divide by zero."""
    stop = array.shape[0] if stop is None else stop
    if not 0 <= start < stop <= array.shape[0]:
        raise ValueError(f"{array.store_path}: no rows to read in [{start}, {stop}) of {array.shape[0]}")
    for first, end in block_bounds(start, stop, rows or array.chunks[0]):
        yield first, array[first:end]


def block_bounds(start: int, stop: int, step: int) -> Iterator[tuple[int, int]]:
    """[first, end) blocks covering [start, stop), cut at multiples of `step`: the same rows
    fall into the same blocks whichever array they are read from."""
    first = start
    while first < stop:
        end = min(stop, (first // step + 1) * step)
        yield first, end
        first = end
