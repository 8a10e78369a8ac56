"""The local blob store on a real disk: layout, durability, healing, permissions, reads."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.storage.blobs import BlobMissing, LocalBlobStore


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
    await spool.write(data)
    sha = await spool.finish()
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
    await spool.discard()
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
    await spool.write(b"same bytes")
    await spool.finish()
    first = len(synced)
    await store.commit(spool, sha256=hashlib.sha256(b"same bytes").hexdigest())
    spool2 = store.new_spool()
    await spool2.write(b"same bytes")
    await spool2.finish()
    # Both the new and the already-stored upload pay the spool fsync in finish().
    assert first == 1
    assert len(synced) >= first + 1


async def test_blobs_are_sharded_by_hash_under_the_blob_dir(store: LocalBlobStore) -> None:
    sha = await _commit(store, b"canonical bytes " * 500)
    assert store.key_for(sha) == f"{sha[:2]}/{sha[2:4]}/{sha}"
    assert [p for p in store.blob_dir.rglob("*") if p.is_file()] == [
        store.local_path(store.key_for(sha))
    ]


async def test_a_blob_deleted_while_open_is_still_read_whole(store: LocalBlobStore) -> None:
    data = b"still here " * 1000
    sha = await _commit(store, data)
    async with await store.open(store.key_for(sha)) as reader:
        await store.delete(store.key_for(sha))
        assert b"".join([c async for c in reader.chunks()]) == data
    with pytest.raises(ValueError):
        [c async for c in reader.chunks()]  # closed on leaving the block
    with pytest.raises(BlobMissing):
        await store.open(store.key_for(sha))


async def test_a_blob_cut_short_on_disk_fails_its_read(store: LocalBlobStore) -> None:
    sha = await _commit(store, b"0123456789" * 100)
    async with await store.open(store.key_for(sha)) as reader:
        store.local_path(store.key_for(sha)).write_bytes(b"0123")
        with pytest.raises(OSError):
            [c async for c in reader.chunks()]


async def test_a_commit_over_a_stored_blob_replaces_it_unread(store: LocalBlobStore) -> None:
    """Whether the bytes are stored already (perhaps another tenant's upload) or not, a commit
    does the same: the spool takes the blob's place, and the stored copy is never read."""
    data = b"shared bytes " * 100
    sha = await _commit(store, data)
    path = store.local_path(store.key_for(sha))
    path.chmod(0o200)  # unreadable: a commit that read it would fail
    spool = store.new_spool()
    await spool.write(data)
    await spool.finish()
    spooled = spool.path.stat().st_ino
    await store.commit(spool, sha256=sha)
    assert path.stat().st_ino == spooled
    assert path.read_bytes() == data
    assert list(store.tmp_dir.iterdir()) == []
