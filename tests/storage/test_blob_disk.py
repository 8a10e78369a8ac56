"""Blob store durability, healing, permissions and sweeping on a real disk."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.storage.blobs import LocalBlobStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    old = os.umask(0o022)
    try:
        s = LocalBlobStore(tmp_path / "data")
        s.prepare()
        yield s
    finally:
        os.umask(old)


async def _commit(store: LocalBlobStore, data: bytes) -> str:
    spool = store.new_spool()
    spool.write(data)
    sha = spool.finish()
    await store.commit(spool, sha256=sha)
    return sha


async def test_corrupt_stored_copy_is_replaced_by_correct_bytes(store: LocalBlobStore) -> None:
    data = b"tenant bytes " * 1000
    sha = await _commit(store, data)
    path = store.local_path(store.key_for(sha))
    path.write_bytes(b"X" * len(data))  # same size, wrong content
    await _commit(store, data)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert list(store.tmp_dir.iterdir()) == []


async def test_every_file_and_directory_is_private_under_umask_022(store: LocalBlobStore) -> None:
    sha = await _commit(store, b"private")
    spool = store.new_spool()
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600
    spool.discard()
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    blob = store.local_path(store.key_for(sha))
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600
    for parent in (blob.parent, blob.parent.parent, store.blob_dir, store.tmp_dir):
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700


async def test_spool_is_fsynced_before_the_dedup_decision(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    spool = store.new_spool()
    spool.write(b"same bytes")
    spool.finish()
    first = len(synced)
    await store.commit(spool, sha256=hashlib.sha256(b"same bytes").hexdigest())
    spool2 = store.new_spool()
    spool2.write(b"same bytes")
    spool2.finish()
    # Both the new and the already-stored upload pay the spool fsync in finish().
    assert first == 1
    assert len(synced) >= first + 1


async def test_sweep_removes_old_spools_and_unreferenced_blobs_only(
    store: LocalBlobStore,
) -> None:
    kept = await _commit(store, b"referenced")
    orphan = await _commit(store, b"orphan")
    young = await _commit(store, b"young orphan")
    left = store.new_spool()
    left.write(b"half")
    left.finish()  # a spool its crashed writer never committed
    past = time.time() - 7200
    for path in (
        left.path,
        store.local_path(store.key_for(kept)),
        store.local_path(store.key_for(orphan)),
    ):
        os.utime(path, (past, past))
    asked: list[list[str]] = []

    async def referenced(batch: list[str]) -> set[str]:
        asked.append(batch)
        return {kept} & set(batch)

    removed = await store.sweep(max_age_seconds=3600, referenced=referenced)
    assert sorted(removed) == sorted([str(left.path), str(store.local_path(store.key_for(orphan)))])
    assert store.local_path(store.key_for(kept)).exists()
    assert store.local_path(store.key_for(young)).exists()
    assert sorted(asked[0]) == sorted([kept, orphan])  # only stale blobs are looked up


async def test_sweep_restores_a_blob_set_aside_whose_deletion_never_committed(
    store: LocalBlobStore,
) -> None:
    live = await _commit(store, b"row still there")
    gone = await _commit(store, b"row deleted")
    aside = [await store.set_aside(store.key_for(sha)) for sha in (live, gone)]
    past = time.time() - 7200
    for token in aside:
        assert token is not None
        os.utime(store.tmp_dir / token, (past, past))

    async def referenced(batch: list[str]) -> set[str]:
        return {live} & set(batch)

    removed = await store.sweep(max_age_seconds=3600, referenced=referenced)
    assert removed == [str(store.tmp_dir / str(aside[1]))]
    assert await store.rehash(store.key_for(live)) == live
    assert not store.local_path(store.key_for(gone)).exists()
    assert list(store.tmp_dir.iterdir()) == []


async def test_set_aside_then_put_back_restores_the_blob(store: LocalBlobStore) -> None:
    sha = await _commit(store, b"collect me")
    key = store.key_for(sha)
    token = await store.set_aside(key)
    assert token is not None and not await store.exists(key)
    await store.put_back(key, token)
    assert await store.exists(key)
    token = await store.set_aside(key)
    assert token is not None
    await store.purge(token)
    assert not await store.exists(key) and list(store.tmp_dir.iterdir()) == []
