"""Stores and DVC outputs away from the workspace: Zarr stores read through fsspec URLs, and a
DVC remote (a local directory standing in for object storage) that another clone pulls from."""

from __future__ import annotations

import json
import shutil

import fsspec
import numpy as np
import pytest

from pipeline.activation_store import IncompleteStoreError, iter_row_blocks, open_store
from pipeline.store_urls import open_store_at
from tests.conftest import copy_repo, run


@pytest.fixture
def store_in_memory_fs(smoke_repo):
    """A real harvested store copied into fsspec's memory filesystem: (local path, URL)."""
    local = next((smoke_repo / "artifacts" / "activations").glob("*.zarr"))
    fs = fsspec.filesystem("memory")
    url = f"memory://stores/{local.name}"
    fs.put(str(local), url, recursive=True)
    yield local, url
    fs.rm("memory://stores", recursive=True)


@pytest.mark.slow
def test_a_store_streams_the_same_rows_from_a_url(store_in_memory_fs):
    local, url = store_in_memory_fs
    remote, here = open_store_at(url), open_store(local)
    assert remote.shape == here.shape and dict(remote.attrs) == dict(here.attrs)
    for (first_a, a), (first_b, b) in zip(iter_row_blocks(remote), iter_row_blocks(here), strict=True):
        assert first_a == first_b
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_an_unfinished_store_at_a_url_is_refused(store_in_memory_fs):
    _, url = store_in_memory_fs
    fs = fsspec.filesystem("memory")
    meta_path = f"{url}/zarr.json"
    meta = json.loads(fs.cat(meta_path))
    meta["attributes"]["committed_rows"] = 5
    fs.pipe(meta_path, json.dumps(meta).encode())
    with pytest.raises(IncompleteStoreError, match="only 5 of"):
        open_store_at(url)


def test_a_missing_url_names_it():
    with pytest.raises(FileNotFoundError, match="memory://nowhere/x.zarr"):
        open_store_at("memory://nowhere/x.zarr")


@pytest.mark.slow
def test_outputs_pushed_to_a_dvc_remote_are_pulled_into_another_clone(smoke_repo, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "--local", "-f", "shared", str(remote)], smoke_repo)
    run(["dvc", "push", "-r", "shared", "harvest", "tokens"], smoke_repo)

    clone = copy_repo(tmp_path / "clone")
    for name in ("dvc.lock", "params.yaml"):  # the smoke run's state, as a commit would carry it
        shutil.copy(smoke_repo / name, clone / name)
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], clone)
    run(["dvc", "pull", "harvest", "tokens"], clone)
    for store in (smoke_repo / "artifacts" / "activations").glob("*.zarr"):
        pulled = open_store(clone / "artifacts" / "activations" / store.name)
        np.testing.assert_array_equal(pulled[:], open_store(store)[:])
