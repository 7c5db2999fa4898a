"""Tiny real stores for the fault suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.activation_store import ActivationWriter
from pipeline.row_split import RowSplit

ROWS, WIDTH, CHUNK = 96, 16, 16
SPLIT = RowSplit(n_rows=ROWS, n_train_rows=64, n_sae_rows=48, n_contexts=6, n_train_contexts=4, n_sae_contexts=3)


def rows(seed: int = 0) -> np.ndarray:
    """Activation-like rows: an offset mean and a few strong directions."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(ROWS, 4)) @ rng.normal(size=(4, WIDTH)) + 0.1 * rng.normal(size=(ROWS, WIDTH)) + 1.0).astype(np.float32)


def write_store(path: Path, data: np.ndarray | None = None, chunk: int = CHUNK) -> Path:
    """A finished (sealed) activation store of `data`, as harvest writes it."""
    data = rows() if data is None else data
    writer = ActivationWriter(path, n_rows=len(data), width=data.shape[1], dtype="float32", chunk_rows=chunk,
                              fingerprint="test", attrs={"model": "test-model", "hook": "blocks.0.hook_resid_post", "token_store_hash": "test",
                                                         **SPLIT.as_attrs()})
    for first in range(0, len(data), 10):
        writer.append(data[first : first + 10])
    writer.close()
    return path


def file_bytes(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under `folder` (names in `skip` left out), by relative path: for byte-for-byte comparisons."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}
