"""Fault 2: a missing, short or overwritten chunk is an error naming the store, the chunk, what
was expected and the repair command; never zeros or NaNs read in silence."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from pipeline import store_integrity
from pipeline.activation_store import IncompleteStoreError, open_store
from pipeline.store_integrity import StoreDamagedError, new_group, open_checked, publish
from tests.faults.stores import CHUNK, ROWS, rows, write_store

pytestmark = pytest.mark.faults


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "blocks.0.hook_resid_post.zarr")


def chunk_file(store, index=2):
    return store / "c" / str(index) / "0"


def test_a_sealed_store_reads_back_and_lists_every_chunk(store):
    manifest = zarr.open_array(store, mode="r").attrs[store_integrity.MANIFEST_KEY]
    assert sorted(manifest) == sorted(f"c/{i}/0" for i in range(ROWS // CHUNK))
    assert all(size == CHUNK * 16 * 4 for size, _ in manifest.values())
    np.testing.assert_array_equal(open_store(store)[:], rows())


def test_a_deleted_chunk_is_named_instead_of_read_as_zeros(store):
    chunk_file(store).unlink()
    assert np.all(zarr.open_array(store, mode="r")[2 * CHUNK : 3 * CHUNK] == 0)  # what zarr alone would read
    with pytest.raises(StoreDamagedError) as error:
        open_store(store)
    message = str(error.value)
    assert str(store) in message and "chunk c/2/0 is missing" in message and f"dvc checkout --force {store}" in message


def test_a_truncated_chunk_gives_found_and_expected_sizes(store):
    chunk_file(store).write_bytes(chunk_file(store).read_bytes()[:100])
    with pytest.raises(StoreDamagedError, match=rf"chunk c/2/0 has 100 bytes, expected {CHUNK * 16 * 4}"):
        open_store(store)


def test_an_overwritten_chunk_is_caught_by_the_checksum_pass(store, capsys):
    path = chunk_file(store)
    path.write_bytes(b"\xff" * path.stat().st_size)  # NaNs as float32: same size, so the cheap check passes
    open_store(store)
    with pytest.raises(StoreDamagedError, match=r"chunk c/2/0 has CRC32 \w+, expected \w+ \(its bytes were changed\)"):
        store_integrity.check(store, checksums=True)
    assert store_integrity.main([str(store.parent)]) == 1
    assert "DAMAGED" in capsys.readouterr().out


def test_verify_passes_intact_stores_and_finds_nested_groups(tmp_path, capsys):
    write_store(tmp_path / "a" / "x.zarr")
    tmp, group = new_group(tmp_path / "b" / "y.zarr")
    group.create_array("values", data=np.arange(10.0), chunks=(4,))
    publish(tmp, tmp_path / "b" / "y.zarr")
    assert store_integrity.main([str(tmp_path)]) == 0
    assert "2 of 2 stores verified" in capsys.readouterr().out


def test_group_stores_are_checked_too(tmp_path):
    out = tmp_path / "probes.zarr"
    tmp, group = new_group(out)
    group.create_array("nonlinear_error", data=np.ones((8, 4), dtype=np.float32), chunks=(4, 4))
    publish(tmp, out)
    assert not tmp.exists()
    np.testing.assert_array_equal(open_checked(out)["nonlinear_error"][:], 1.0)
    (out / "nonlinear_error" / "c" / "1" / "0").unlink()
    with pytest.raises(StoreDamagedError, match="nonlinear_error/c/1/0 is missing"):
        open_checked(out)


def test_an_unsealed_group_is_refused(tmp_path):
    zarr.open_group(tmp_path / "old.zarr", mode="w").create_array("x", data=np.ones(3))
    with pytest.raises(StoreDamagedError, match="no chunk manifest"):
        open_checked(tmp_path / "old.zarr")


def test_committed_rows_that_are_not_chunk_aligned_name_the_store(store):
    from pipeline.activation_store import ActivationWriter

    array = zarr.open_array(store, mode="r+")
    array.attrs["committed_rows"] = CHUNK + 3
    writer = ActivationWriter(store, n_rows=ROWS, width=16, dtype="float32", chunk_rows=CHUNK, fingerprint="test", attrs={})
    with pytest.raises(IncompleteStoreError, match=rf"{store}: cannot resume at row {CHUNK + 3}"):
        writer.rewind(CHUNK + 3)


def test_zarr_temporary_files_are_removed_on_resume_and_never_sealed(tmp_path):
    from pipeline.activation_store import ActivationWriter

    path = tmp_path / "s.zarr"
    data = rows()
    writer = ActivationWriter(path, n_rows=ROWS, width=16, dtype="float32", chunk_rows=CHUNK, fingerprint="f", attrs={})
    writer.append(data[: 2 * CHUNK])
    leftover = path / "c" / "2" / "0.3f2a.partial"  # what a kill during a chunk write leaves
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a chunk")
    resumed = ActivationWriter(path, n_rows=ROWS, width=16, dtype="float32", chunk_rows=CHUNK, fingerprint="f", attrs={})
    assert resumed.committed_rows == 2 * CHUNK and not leftover.exists()
    resumed.append(data[2 * CHUNK :])
    resumed.close()
    assert not list(path.rglob("*.partial"))
    np.testing.assert_array_equal(open_store(path)[:], data)


def test_corrupt_metadata_names_the_store(store):
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "arr')
    with pytest.raises(StoreDamagedError, match=rf"{store}: unreadable Zarr metadata .*dvc checkout --force"):
        open_store(store)
    with pytest.raises(StoreDamagedError, match=rf"{store}: unreadable Zarr metadata"):
        open_checked(store)
