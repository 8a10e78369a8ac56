"""The content-addressed blob store on local disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.storage.blobs import LocalBlobStore, SpoolFile


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    blobs = LocalBlobStore(tmp_path)
    blobs.prepare()
    return blobs


async def write(store: LocalBlobStore, data: bytes) -> tuple[str, SpoolFile]:
    spool = store.new_spool()
    for i in range(0, len(data), 1000):
        spool.write(data[i : i + 1000])
    return spool.finish(), spool


async def test_commit_places_bytes_under_their_hash_sharded(store: LocalBlobStore) -> None:
    data = b"canonical bytes " * 500
    digest, spool = await write(store, data)
    assert digest == hashlib.sha256(data).hexdigest()
    blob = await store.commit(spool, sha256=digest)
    assert blob.storage_key == f"{digest[:2]}/{digest[2:4]}/{digest}"
    assert blob.size == len(data)
    assert store.local_path(blob.storage_key).read_bytes() == data
    assert list(store.tmp_dir.iterdir()) == []
    assert await store.exists(blob.storage_key)
    assert await store.rehash(blob.storage_key) == digest


async def test_second_commit_of_same_content_keeps_one_copy(store: LocalBlobStore) -> None:
    data = b"same content"
    first_digest, first = await write(store, data)
    await store.commit(first, sha256=first_digest)
    second_digest, second = await write(store, data)
    blob = await store.commit(second, sha256=second_digest)
    files = [p for p in store.blob_dir.rglob("*") if p.is_file()]
    assert files == [store.local_path(blob.storage_key)]
    assert list(store.tmp_dir.iterdir()) == []


async def test_discarded_spool_leaves_nothing(store: LocalBlobStore) -> None:
    spool = store.new_spool()
    spool.write(b"partial upload")
    spool.discard()
    spool.discard()  # idempotent
    assert list(store.tmp_dir.iterdir()) == []


async def test_rehash_detects_corruption_and_delete_removes(store: LocalBlobStore) -> None:
    digest, spool = await write(store, b"good bytes")
    blob = await store.commit(spool, sha256=digest)
    store.local_path(blob.storage_key).write_bytes(b"bad bytes!")
    assert await store.rehash(blob.storage_key) != digest
    await store.delete(blob.storage_key)
    assert not await store.exists(blob.storage_key)
    await store.check_writable()
