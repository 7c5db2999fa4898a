"""Open a finished Zarr store wherever it lives: a local path, or an fsspec URL (s3://, gs://,
az://, https://, a shared filesystem through file://, memory:// in tests).

Stages read and write their stores in the DVC workspace; on a cluster that workspace and the
DVC cache sit on a shared filesystem, and `dvc push` copies the outputs to object storage (a DVC
remote, see README). This is the read side for notebooks and downstream tools that look at
those stores without checking them out. Streaming reads go through `iter_row_blocks` as usual.
"""

from __future__ import annotations

from pathlib import Path

import zarr

from pipeline.activation_store import IncompleteStoreError, open_store


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and "://" in location


def open_store_at(location: str | Path, storage_options: dict | None = None) -> zarr.Array:
    """The store at `location`, refused (IncompleteStoreError) if its writer did not finish.
    `storage_options` go to fsspec (credentials, endpoint_url, ...)."""
    if not is_url(location):
        return open_store(location)
    try:
        array = zarr.open_array(location, mode="r", storage_options=storage_options)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{location}: no Zarr array there ({exc})") from None
    committed = int(array.attrs.get("committed_rows", -1))
    if committed != array.shape[0]:
        raise IncompleteStoreError(f"{location}: only {committed} of {array.shape[0]} rows committed; the writer did not finish")
    return array
