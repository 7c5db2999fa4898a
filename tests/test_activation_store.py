"""The chunk-aligned, resumable activation writer and the committed-rows contract for readers."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline.activation_store import ActivationWriter, IncompleteStoreError, iter_row_blocks, open_store


def writer(path, fingerprint="a", n_rows=100, chunk_rows=16):
    return ActivationWriter(
        path,
        n_rows=n_rows,
        width=3,
        dtype="float32",
        chunk_rows=chunk_rows,
        fingerprint=fingerprint,
        attrs={"hook": "h"},
    )


def data(n_rows=100):
    return np.arange(n_rows * 3, dtype=np.float32).reshape(n_rows, 3)


def test_writes_only_whole_chunks_until_the_end(tmp_path):
    w = writer(tmp_path / "s.zarr")
    rows = data()
    w.append(rows[:10])
    assert w.committed_rows == 0  # less than a chunk is held back
    w.append(rows[10:40])
    assert w.committed_rows == 32
    w.append(rows[40:90])
    assert w.committed_rows == 80
    w.append(rows[90:])  # reaches the end: the last, partial chunk is written at once
    assert w.committed_rows == 100
    w.close()
    assert w.committed_rows == 100
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr")[:], rows)
    assert dict(open_store(tmp_path / "s.zarr").attrs)["hook"] == "h"


def test_reader_refuses_an_unfinished_store(tmp_path):
    w = writer(tmp_path / "s.zarr")
    w.append(data()[:40])
    with pytest.raises(IncompleteStoreError, match=r"only 32 of 100 rows committed"):
        open_store(tmp_path / "s.zarr")
    with pytest.raises(IncompleteStoreError):
        w.close()


def test_resume_continues_from_committed_rows_with_same_fingerprint(tmp_path):
    rows = data()
    first = writer(tmp_path / "s.zarr")
    first.append(rows[:50])  # "killed" here: 48 rows committed
    again = writer(tmp_path / "s.zarr")
    assert again.committed_rows == 48 and again.next_row == 48
    again.append(rows[48:])
    again.close()
    np.testing.assert_array_equal(open_store(tmp_path / "s.zarr")[:], rows)


def test_other_fingerprint_or_shape_starts_afresh(tmp_path):
    writer(tmp_path / "s.zarr").append(data()[:50])
    assert writer(tmp_path / "s.zarr", fingerprint="b").committed_rows == 0
    writer(tmp_path / "t.zarr").append(data()[:50])
    assert writer(tmp_path / "t.zarr", n_rows=120).committed_rows == 0


def test_garbage_at_store_path_is_replaced(tmp_path):
    (tmp_path / "s.zarr").mkdir()
    (tmp_path / "s.zarr" / "zarr.json").write_text("{not json")
    w = writer(tmp_path / "s.zarr")
    assert w.committed_rows == 0
    w.append(data())
    w.close()
    assert zarr.open_array(tmp_path / "s.zarr", mode="r").attrs["committed_rows"] == 100


def test_iter_row_blocks_is_chunk_aligned(tmp_path):
    w = writer(tmp_path / "s.zarr")
    w.append(data())
    w.close()
    array = open_store(tmp_path / "s.zarr")
    starts = [start for start, _ in iter_row_blocks(array, start=5, stop=70)]
    assert starts == [5, 16, 32, 48, 64]
    np.testing.assert_array_equal(np.concatenate([b for _, b in iter_row_blocks(array, 5, 70)]), data()[5:70])
