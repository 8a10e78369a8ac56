"""Reaching a gateway's stored blobs from tests: through the store's interface, and, to inject
bit rot, through whatever the store keeps its bytes in."""

from __future__ import annotations

from app.storage.blobs import BlobStore, LocalBlobStore


async def read_blob(store: BlobStore, storage_key: str) -> bytes:
    async with await store.open(storage_key) as reader:
        return b"".join([chunk async for chunk in reader.chunks()])


async def overwrite_blob(store: BlobStore, storage_key: str, data: bytes) -> None:
    """Replace a stored blob's bytes behind the gateway's back (bit rot, a bad disk)."""
    if isinstance(store, LocalBlobStore):
        store.local_path(storage_key).write_bytes(data)
        return
    from app.storage.s3 import S3BlobStore

    assert isinstance(store, S3BlobStore), type(store)
    head = await store.client.head_object(Bucket=store.bucket, Key=storage_key)
    await store.client.put_object(
        Bucket=store.bucket, Key=storage_key, Body=data, Metadata=head.get("Metadata", {})
    )


async def leftovers(store: BlobStore) -> list[str]:
    """What an upload or a collection left outside the committed blobs: spool and set-aside
    files, local part files, temp objects and multipart uploads in progress."""
    if isinstance(store, LocalBlobStore):
        return sorted(p.name for p in store.tmp_dir.iterdir())
    from app.storage.s3 import S3BlobStore

    assert isinstance(store, S3BlobStore), type(store)
    prefix = f"{store.prefix}tmp/"
    listed = await store.client.list_objects_v2(Bucket=store.bucket, Prefix=prefix)
    uploads = await store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=prefix)
    return sorted(
        [str(o["Key"]) for o in listed.get("Contents", [])]
        + [f"{u['Key']}?uploadId={u['UploadId']}" for u in uploads.get("Uploads", [])]
        + [str(path) for path in store.part_dir.iterdir()]
    )
