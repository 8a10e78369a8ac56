"""The content-addressed blob store on local disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.storage.blobs import BlobMissing, LocalBlobStore, Spool


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    blobs = LocalBlobStore(tmp_path)
    blobs.prepare()
    return blobs


async def write(store: LocalBlobStore, data: bytes) -> tuple[str, Spool]:
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


async def read_all(
    store: LocalBlobStore, key: str, start: int = 0, end: int | None = None
) -> bytes:
    async with await store.open(key) as reader:
        return b"".join([chunk async for chunk in reader.chunks(start, end)])


async def test_an_opened_blob_reads_whole_or_by_range_as_often_as_asked(
    store: LocalBlobStore,
) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: several read chunks
    digest, spool = await write(store, data)
    blob = await store.commit(spool, sha256=digest)
    async with await store.open(blob.storage_key) as reader:
        assert reader.size == len(data)
        assert b"".join([c async for c in reader.chunks()]) == data
        assert b"".join([c async for c in reader.chunks()]) == data  # read afresh
        assert b"".join([c async for c in reader.chunks(10, 20)]) == data[10:20]
        assert b"".join([c async for c in reader.chunks(len(data) - 3)]) == data[-3:]
        assert b"".join([c async for c in reader.chunks(5, len(data) + 99)]) == data[5:]
    with pytest.raises(ValueError):
        [c async for c in reader.chunks()]  # closed on leaving the block


async def test_a_blob_deleted_while_open_is_still_read_whole(store: LocalBlobStore) -> None:
    data = b"still here " * 1000
    digest, spool = await write(store, data)
    blob = await store.commit(spool, sha256=digest)
    async with await store.open(blob.storage_key) as reader:
        await store.delete(blob.storage_key)
        assert b"".join([c async for c in reader.chunks()]) == data
    with pytest.raises(BlobMissing):
        await store.open(blob.storage_key)


async def test_a_blob_cut_short_on_disk_fails_its_read(store: LocalBlobStore) -> None:
    digest, spool = await write(store, b"0123456789" * 100)
    blob = await store.commit(spool, sha256=digest)
    async with await store.open(blob.storage_key) as reader:
        store.local_path(blob.storage_key).write_bytes(b"0123")
        with pytest.raises(OSError):
            [c async for c in reader.chunks()]


async def test_a_spool_holds_its_bytes_until_committed(store: LocalBlobStore) -> None:
    digest, spool = await write(store, b"bytes")
    assert spool.holds_bytes()
    await store.commit(spool, sha256=digest)
    assert not spool.holds_bytes()
    assert await read_all(store, store.key_for(digest)) == b"bytes"
