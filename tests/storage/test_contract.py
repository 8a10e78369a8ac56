"""The blob-store contract, held by the local store and by the S3 store on a real SeaweedFS."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc

import pytest

from app.storage.blobs import BlobMissing, BlobStore
from app.storage.s3 import PART_BYTES, S3BlobStore
from tests.support.blobs import leftovers, overwrite_blob, read_blob
from tests.support.clock import FakeClock
from tests.support.waiting import wait_until

MiB = 1024 * 1024


async def put(store: BlobStore, data: bytes, *, chunk: int = 64 * 1024) -> str:
    spool = store.new_spool()
    for start in range(0, len(data), chunk):
        await spool.write(data[start : start + chunk])
        # The running hash is known before the spool is finished (what a digest is checked by).
        assert spool.sha256() == hashlib.sha256(data[: start + chunk]).hexdigest()
    sha = await spool.finish()
    assert sha == hashlib.sha256(data).hexdigest()
    blob = await store.commit(spool, sha256=sha)
    assert not spool.holds_bytes()
    assert (blob.sha256, blob.size, blob.storage_key) == (sha, len(data), store.key_for(sha))
    return sha


async def test_a_streamed_upload_is_stored_under_its_hash_and_read_back_by_range(
    blob_store: BlobStore,
) -> None:
    data = os.urandom(2 * PART_BYTES + 12345)  # several multipart parts on S3
    sha = await put(blob_store, data, chunk=MiB)
    key = blob_store.key_for(sha)
    assert await blob_store.exists(key)
    async with await blob_store.open(key) as reader:
        assert reader.size == len(data)
        assert b"".join([c async for c in reader.chunks()]) == data
        assert b"".join([c async for c in reader.chunks(10, 20)]) == data[10:20]
        tail = len(data) - 5
        assert b"".join([c async for c in reader.chunks(tail)]) == data[tail:]
        assert (
            b"".join([c async for c in reader.chunks(PART_BYTES - 3, PART_BYTES + 3)])
            == (data[PART_BYTES - 3 : PART_BYTES + 3])
        )
    assert await blob_store.rehash(key) == sha
    assert await leftovers(blob_store) == []


async def test_the_same_bytes_twice_keep_one_copy_and_bit_rot_is_replaced(
    blob_store: BlobStore,
) -> None:
    data = b"tenant bytes " * 1000
    sha = await put(blob_store, data)
    await put(blob_store, data)
    key = blob_store.key_for(sha)
    await overwrite_blob(blob_store, key, b"X" * len(data))
    assert await blob_store.rehash(key) != sha
    if isinstance(blob_store, S3BlobStore):
        # The object says which bytes it holds; rot that keeps the label is caught by the
        # health check's rehash (above), and the blob is marked corrupt there.
        await blob_store.client.delete_object(Bucket=blob_store.bucket, Key=key)
    await put(blob_store, data)
    assert await read_blob(blob_store, key) == data
    assert await leftovers(blob_store) == []


async def test_a_discarded_upload_leaves_nothing_even_midway_through_a_multipart(
    blob_store: BlobStore,
) -> None:
    spool = blob_store.new_spool()
    await spool.write(os.urandom(PART_BYTES + 1))  # a part is already in the store on S3
    assert await leftovers(blob_store) != []  # a spool file, or a multipart upload on S3
    await spool.discard()
    await spool.discard()  # twice is fine
    finished = blob_store.new_spool()
    await finished.write(b"finished but never committed")
    await finished.finish()
    await finished.discard()
    assert await leftovers(blob_store) == []


async def test_a_missing_blob_is_reported_missing(blob_store: BlobStore) -> None:
    key = blob_store.key_for(hashlib.sha256(b"never stored").hexdigest())
    assert not await blob_store.exists(key)
    with pytest.raises(BlobMissing):
        await blob_store.open(key)
    with pytest.raises(BlobMissing):
        await blob_store.rehash(key)
    assert await blob_store.set_aside(key) is None


async def test_collection_sets_aside_then_purges_or_puts_back(blob_store: BlobStore) -> None:
    sha = await put(blob_store, b"collect me")
    key = blob_store.key_for(sha)
    token = await blob_store.set_aside(key)
    assert token is not None and not await blob_store.exists(key)
    await blob_store.put_back(key, token)
    assert await read_blob(blob_store, key) == b"collect me"
    token = await blob_store.set_aside(key)
    assert token is not None
    await blob_store.purge(token)
    assert not await blob_store.exists(key)
    await blob_store.delete(key)  # deleting what is gone is fine
    assert await leftovers(blob_store) == []


async def test_concurrent_writers_of_the_same_bytes_end_as_one_readable_blob(
    blob_store: BlobStore,
) -> None:
    data = os.urandom(PART_BYTES + 999)
    shas = await asyncio.gather(*(put(blob_store, data, chunk=MiB) for _ in range(5)))
    assert set(shas) == {hashlib.sha256(data).hexdigest()}
    assert await read_blob(blob_store, blob_store.key_for(shas[0])) == data
    assert await leftovers(blob_store) == []


async def test_the_sweep_removes_old_leftovers_only(
    blob_store: BlobStore, clock: FakeClock
) -> None:
    kept = await put(blob_store, b"referenced")
    orphan = await put(blob_store, b"orphan")
    crashed = blob_store.new_spool()  # its writer died before committing
    await crashed.write(b"half")
    await crashed.finish()
    abandoned = blob_store.new_spool()  # died midway through the body
    await abandoned.write(os.urandom(PART_BYTES + 1))
    if isinstance(blob_store, S3BlobStore):
        s3 = blob_store

        async def first_part_sent() -> bool:
            listed = await s3.client.list_multipart_uploads(Bucket=s3.bucket, Prefix=s3.prefix)
            return bool(listed.get("Uploads")) and not any(s3.part_dir.iterdir())

        await wait_until(first_part_sent, timeout=30)
        await abandoned.write(b"the next part, still being filled")
    asked: list[str] = []

    async def referenced(batch: list[str]) -> set[str]:
        asked.extend(batch)
        return {kept} & set(batch)

    assert await blob_store.sweep(max_age_seconds=3600, referenced=referenced) == []
    clock.advance(7200)
    removed = await blob_store.sweep(max_age_seconds=3600, referenced=referenced)
    # The local store: two spool files and the blob. S3: the temp object, the blob, the
    # abandoned multipart upload and the part file its writer was filling.
    assert len(removed) == (4 if isinstance(blob_store, S3BlobStore) else 3), removed
    assert sorted(asked) == sorted([kept, orphan])  # only stale blobs are looked up
    assert await blob_store.exists(blob_store.key_for(kept))
    assert not await blob_store.exists(blob_store.key_for(orphan))
    assert await leftovers(blob_store) == []
    await abandoned.discard()  # what its writer would have done, had it lived


async def test_the_sweep_restores_a_blob_whose_deletion_never_committed(
    blob_store: BlobStore, clock: FakeClock
) -> None:
    live = await put(blob_store, b"row still there")
    gone = await put(blob_store, b"row deleted")
    for sha in (live, gone):
        assert await blob_store.set_aside(blob_store.key_for(sha)) is not None

    async def referenced(batch: list[str]) -> set[str]:
        return {live} & set(batch)

    clock.advance(7200)
    removed = await blob_store.sweep(max_age_seconds=3600, referenced=referenced)
    assert len(removed) == 1 and gone in removed[0]
    assert await blob_store.rehash(blob_store.key_for(live)) == live
    assert not await blob_store.exists(blob_store.key_for(gone))
    assert await leftovers(blob_store) == []


async def test_memory_stays_flat_while_a_large_upload_streams_in(blob_store: BlobStore) -> None:
    chunk = os.urandom(MiB)
    spool = blob_store.new_spool()
    tracemalloc.start()
    try:
        for _ in range(48):
            await spool.write(chunk)
        await spool.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await spool.discard()
    # At most a part being sent and the one filling, whatever the file's size.
    assert peak < 3 * PART_BYTES + 8 * MiB, peak


async def keep(store: BlobStore, data: bytes, *, upload_id: str, part_id: str) -> str:
    spool = store.new_spool()
    await spool.write(data)
    await spool.finish()
    key = await store.keep_part(spool, upload_id=upload_id, part_id=part_id)
    assert not spool.holds_bytes()
    await spool.discard()  # what the request does afterwards: the kept part stays
    return key


async def test_parts_are_kept_per_upload_read_back_and_removed_together(
    blob_store: BlobStore, clock: FakeClock
) -> None:
    first = await keep(blob_store, b"first part", upload_id="upload_a", part_id="part_1")
    big = os.urandom(PART_BYTES + 7)  # a multipart spool on S3
    second = await keep(blob_store, big, upload_id="upload_a", part_id="part_2")
    other = await keep(blob_store, b"another upload", upload_id="upload_b", part_id="part_3")
    async with await blob_store.open_part(second) as reader:
        assert reader.size == len(big)
        assert b"".join([c async for c in reader.chunks()]) == big
    async with await blob_store.open_part(first) as reader:
        assert b"".join([c async for c in reader.chunks()]) == b"first part"
    assert await leftovers(blob_store) == []  # no spool or temp object remains
    clock.advance(30 * 24 * 3600)  # the storage sweep never touches parts, however old

    async def nothing(batch: list[str]) -> set[str]:
        return set()

    assert await blob_store.sweep(max_age_seconds=3600, referenced=nothing) == []
    assert await blob_store.delete_parts("upload_a") == 2
    assert await blob_store.delete_parts("upload_a") == 0  # twice is fine
    for gone in (first, second):
        with pytest.raises(BlobMissing):
            await blob_store.open_part(gone)
    async with await blob_store.open_part(other) as reader:
        assert b"".join([c async for c in reader.chunks()]) == b"another upload"


async def test_part_names_cannot_address_other_paths(blob_store: BlobStore) -> None:
    spool = blob_store.new_spool()
    await spool.write(b"x")
    await spool.finish()
    with pytest.raises(ValueError):
        await blob_store.keep_part(spool, upload_id="../blobs", part_id="part_1")
    await spool.discard()
    with pytest.raises(ValueError):
        await blob_store.delete_parts("../../etc")
    with pytest.raises((ValueError, BlobMissing)):
        await blob_store.open_part("../blobs/x")
