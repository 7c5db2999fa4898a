"""Fault 1: damage to a workspace output never reaches DVC's cache, and `dvc checkout` or
`dvc repro` repairs it from there. Real DVC, in a scratch repository with the project's
.dvc/config and .dvcignore, on a store written by the project's writer."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from pipeline.store_integrity import StoreDamagedError, check
from tests.conftest import REPO, run

pytestmark = pytest.mark.faults

MAKE_STORE = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from tests.faults.stores import write_store
write_store(Path("acts") / "blocks.0.hook_resid_post.zarr")
"""


@pytest.fixture
def dvc_repo(tmp_path) -> Path:
    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    shutil.copy(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    shutil.copy(REPO / ".dvcignore", tmp_path / ".dvcignore")
    (tmp_path / "make_store.py").write_text(MAKE_STORE)
    (tmp_path / "dvc.yaml").write_text("stages:\n  harvest:\n    cmd: python make_store.py\n    deps: [make_store.py]\n    outs: [acts]\n")
    run(["dvc", "repro", "-q"], tmp_path)
    return tmp_path


def cache_objects_intact(repo: Path) -> int:
    """Every file object in the cache still hashes to its name; returns how many there are."""
    objects = [p for p in (repo / ".dvc" / "cache" / "files" / "md5").rglob("*") if p.is_file() and p.suffix != ".dir"]
    for obj in objects:
        assert hashlib.md5(obj.read_bytes()).hexdigest() == obj.parent.name + obj.name, f"cache object {obj} was changed"
    return len(objects)


def test_the_project_cache_never_links_workspace_files_to_cache_objects(dvc_repo):
    chunk = dvc_repo / "acts" / "blocks.0.hook_resid_post.zarr" / "c" / "2" / "0"
    inodes = {p.stat().st_ino for p in (dvc_repo / ".dvc" / "cache").rglob("*") if p.is_file()}
    assert chunk.stat().st_ino not in inodes and not chunk.is_symlink()


@pytest.mark.parametrize("repair", [["dvc", "checkout", "--force", "acts/blocks.0.hook_resid_post.zarr"], ["dvc", "repro"]])
def test_a_damaged_workspace_store_leaves_the_cache_intact_and_is_repaired_from_it(dvc_repo, repair):
    store = dvc_repo / "acts" / "blocks.0.hook_resid_post.zarr"
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    n_objects = cache_objects_intact(dvc_repo)
    (store / "c" / "2" / "0").write_bytes((store / "c" / "2" / "0").read_bytes()[:100])  # truncated in place
    (store / "c" / "4" / "0").unlink()
    with pytest.raises(StoreDamagedError, match=r"dvc checkout --force"):
        check(store)
    assert cache_objects_intact(dvc_repo) == n_objects
    run(repair, dvc_repo)
    check(store, checksums=True)
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_temporary_files_are_outside_every_output(dvc_repo):
    """Zarr's `<chunk>.<uuid>.partial` and the stages' `<output>.partial` folders are in
    .dvcignore: DVC never commits one, so a leftover cannot change an output's hash."""
    store = dvc_repo / "acts" / "blocks.0.hook_resid_post.zarr"
    ignored = run(["dvc", "check-ignore", "acts/blocks.0.hook_resid_post.zarr/c/2/0.9f3e.partial", "acts/x.zarr.partial"], dvc_repo)
    assert len(ignored.stdout.split()) == 2
    (store / "c" / "2" / "0.9f3e.partial").write_bytes(b"half a chunk")
    assert "up to date" in run(["dvc", "status"], dvc_repo).stdout
