"""Blobs in an S3-compatible object store, so replicas on several hosts share one set of bytes.

Layout under the configured prefix: `blobs/ab/cd/<sha256>` for committed blobs (content
addressed, each carrying its sha256 as object metadata), `tmp/upload-<token>` for an upload
whose hash is not known yet, and `tmp/collect-<sha256>-<token>` for a blob set aside while
its row's deletion commits, and `parts/<upload id>/<part id>` for the parts of a resumable
upload until it is completed, cancelled or expired. An upload streams into a multipart upload
as it arrives, through part files on local disk (one part uploading while the next fills); a
small one is a single PUT. Committing copies the finished object to its content address
inside the store (no bytes pass through the gateway again).

The client is aiobotocore: async, maintained with botocore (the same signing, retries and
endpoint handling as the AWS SDK), and it speaks the whole multipart API, listing of
abandoned multipart uploads included, which the sweeper needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from anyio import to_thread
from botocore.exceptions import BotoCoreError, ClientError

from app.core.errors import StorageUnavailable
from app.storage.blobs import (
    FILE_MODE,
    READ_CHUNK,
    SWEEP_BATCH,
    BlobMissing,
    BlobReader,
    BlobStore,
    Referenced,
    Spool,
    StoredBlob,
    check_part_names,
    disk_errors,
    private_dir,
)

MiB = 1024 * 1024
# Every part but the last must be at least 5 MiB: a part goes once that much has arrived
# (5 GiB, the largest upload, is 1,024 parts).
PART_BYTES = 5 * MiB
# Hashing a chunk this large is worth a worker thread (hashlib releases the GIL).
THREAD_HASH_BYTES = 256 * 1024
# CopyObject copies at most 5 GiB in one call.
MAX_COPY_BYTES = 5 * 1024 * MiB
SHA_META = "sha256"


@dataclass(frozen=True)
class S3Location:
    endpoint_url: str | None
    bucket: str
    region: str
    access_key_id: str | None
    secret_access_key: str | None
    prefix: str = ""


def _missing(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return str(error.get("Code")) in {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """A store that cannot be reached or refuses a call: 503, never a 500 with its details."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise StorageUnavailable(f"The object store refused the request ({code}).") from exc
    except BotoCoreError as exc:
        raise StorageUnavailable("The object store could not be reached.") from exc


async def _hash(digest: Any, chunk: bytes) -> None:
    if len(chunk) >= THREAD_HASH_BYTES:
        await to_thread.run_sync(digest.update, chunk)
    else:
        digest.update(chunk)


class S3Spool(Spool):
    """An upload streamed into a multipart upload under a temp key while it is hashed.

    Arriving bytes are hashed and written to a local part file (a bounded buffer on disk, not
    in memory); once a part is full it is sent in the background while the next one fills, so
    the network and the client move at once. At most one part is in flight."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self.key = key
        self.size = 0
        self._hash = hashlib.sha256()
        self._part: BinaryIO | None = None
        self._part_path: Path | None = None
        self._part_bytes = 0
        self._paths: list[Path] = []  # part files not yet removed
        self._sending: asyncio.Future[None] | None = None
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._stored = False  # the temp object exists
        self._taken = False  # a commit moved the bytes to their content address

    def _absorb(self, chunk: bytes) -> None:
        """Blocking: hash the chunk and append it to the part being filled."""
        self._hash.update(chunk)
        if self._part is None:
            path = self._store.part_dir / f"part-{secrets.token_hex(12)}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            self._part, self._part_path = os.fdopen(fd, "wb"), path
            self._paths.append(path)
        with disk_errors():
            self._part.write(chunk)
        self._part_bytes += len(chunk)

    def _close_part(self) -> tuple[Path, int] | None:
        """Blocking: the filled part's file and size, closed (None if nothing was written)."""
        if self._part is None or self._part_path is None:
            return None
        with disk_errors():
            self._part.close()
        done = (self._part_path, self._part_bytes)
        self._part, self._part_path, self._part_bytes = None, None, 0
        return done

    async def write(self, chunk: bytes) -> None:
        await to_thread.run_sync(self._absorb, chunk)
        self.size += len(chunk)
        if self._part_bytes >= PART_BYTES:
            await self._settle()  # one part in flight at a time
            part = await to_thread.run_sync(self._close_part)
            if part is not None:
                self._sending = asyncio.ensure_future(self._send_part(*part))

    async def _settle(self) -> None:
        if self._sending is not None:
            sending, self._sending = self._sending, None
            await sending

    async def _send_part(self, path: Path, size: int) -> None:
        client, bucket = self._store.client, self._store.bucket
        with _unavailable():
            if self._upload_id is None:
                started = await client.create_multipart_upload(Bucket=bucket, Key=self.key)
                self._upload_id = str(started["UploadId"])
            number = len(self._parts) + 1
            with path.open("rb") as body:
                sent = await client.upload_part(
                    Bucket=bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentLength=size,
                )
        self._parts.append({"ETag": sent["ETag"], "PartNumber": number})
        await to_thread.run_sync(self._remove, path)

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        with contextlib.suppress(ValueError):
            self._paths.remove(path)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def finish(self) -> str:
        client, bucket = self._store.client, self._store.bucket
        await self._settle()
        last = await to_thread.run_sync(self._close_part)
        if self._upload_id is None and last is not None:
            path, size = last
            with _unavailable(), path.open("rb") as body:
                await client.put_object(Bucket=bucket, Key=self.key, Body=body, ContentLength=size)
            await to_thread.run_sync(self._remove, path)
        else:
            if last is not None:
                await self._send_part(*last)
            with _unavailable():
                await client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        self._stored = True
        return self._hash.hexdigest()

    async def discard(self) -> None:
        if self._taken:
            return
        self._taken = True
        if self._sending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._sending)  # let the part in flight end first
            self._sending = None
        await to_thread.run_sync(self._drop_parts)
        client, bucket = self._store.client, self._store.bucket
        # Best effort: what is left behind (a store outage) is the sweeper's.
        with contextlib.suppress(ClientError, BotoCoreError):
            if self._stored:
                await client.delete_object(Bucket=bucket, Key=self.key)
            elif self._upload_id is not None:
                await client.abort_multipart_upload(
                    Bucket=bucket, Key=self.key, UploadId=self._upload_id
                )
        self._stored = False
        self._upload_id = None

    def _drop_parts(self) -> None:
        if self._part is not None:
            with contextlib.suppress(OSError):
                self._part.close()
            self._part = None
        for path in self._paths:
            path.unlink(missing_ok=True)
        self._paths.clear()

    def holds_bytes(self) -> bool:
        return not self._taken


class _S3Reader(BlobReader):
    """A blob's size from HEAD; each read is a ranged GET streamed in bounded chunks."""

    def __init__(self, store: S3BlobStore, key: str, size: int) -> None:
        self._store = store
        self._key = key
        self.size = size
        self._closed = False

    async def chunks(
        self, start: int = 0, end: int | None = None, *, size: int = READ_CHUNK
    ) -> AsyncGenerator[bytes]:
        if self._closed:
            raise ValueError("the blob reader is closed")
        stop = self.size if end is None else min(end, self.size)
        if start >= stop:
            return
        with _unavailable():
            try:
                got = await self._store.client.get_object(
                    Bucket=self._store.bucket, Key=self._key, Range=f"bytes={start}-{stop - 1}"
                )
            except ClientError as exc:
                if _missing(exc):
                    raise BlobMissing(self._key) from None
                raise
        body = got["Body"]
        received = 0
        try:
            with _unavailable():
                async for chunk in body.iter_chunks(size):
                    received += len(chunk)
                    yield chunk
        finally:
            body.close()
        if received != stop - start:
            raise OSError(f"the object store sent {received} of {stop - start} bytes")

    async def aclose(self) -> None:
        self._closed = True


class S3BlobStore(BlobStore):
    """Content-addressed blobs as objects in one bucket, under a prefix."""

    def __init__(
        self,
        client: Any,
        location: S3Location,
        *,
        part_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.part_dir = part_dir  # this process's own: parts being filled before they are sent
        self._clock = clock

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, location: S3Location, *, part_dir: Path, clock: Callable[[], float] = time.time
    ) -> AsyncIterator[S3BlobStore]:
        """A store with its own client, closed on exit; `part_dir` holds upload parts being
        filled (private to this process's data directory)."""
        private_dir(part_dir)
        config = AioConfig(
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=64,
            s3={"addressing_style": "path"},
            # Checksums only where the operation requires them: not every S3-compatible
            # store understands the newer flexible checksum headers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = get_session()
        async with session.create_client(
            "s3",
            endpoint_url=location.endpoint_url,
            region_name=location.region,
            aws_access_key_id=location.access_key_id,
            aws_secret_access_key=location.secret_access_key,
            config=config,
        ) as client:
            yield cls(client, location, part_dir=part_dir, clock=clock)

    def key_for(self, sha256: str) -> str:
        return f"{self.prefix}blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def _tmp(self, name: str) -> str:
        return f"{self.prefix}tmp/{name}"

    def new_spool(self) -> S3Spool:
        return S3Spool(self, self._tmp(f"upload-{secrets.token_hex(12)}"))

    async def _head(self, key: str) -> dict[str, Any] | None:
        with _unavailable():
            try:
                head: dict[str, Any] = await self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
        return head

    async def _copy(self, source: str, target: str, *, sha256: str | None = None) -> None:
        extra: dict[str, Any] = {}
        if sha256 is not None:
            extra = {"Metadata": {SHA_META: sha256}, "MetadataDirective": "REPLACE"}
        with _unavailable():
            await self.client.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                **extra,
            )

    async def _delete(self, key: str) -> None:
        with _unavailable():
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def commit(self, spool: Spool, *, sha256: str) -> StoredBlob:
        if not isinstance(spool, S3Spool) or spool._store is not self:
            raise TypeError("an S3 blob store commits only its own spools")
        key = self.key_for(sha256)
        # Copied over a stored blob too: its fresh LastModified keeps another replica's
        # age-based sweep off a blob about to be referenced (and bit rot is replaced).
        await self._copy(spool.key, key, sha256=sha256)
        await self._delete(spool.key)
        spool._taken = True
        return StoredBlob(sha256=sha256, size=spool.size, storage_key=key)

    async def open(self, storage_key: str) -> BlobReader:
        head = await self._head(storage_key)
        if head is None:
            raise BlobMissing(storage_key)
        return _S3Reader(self, storage_key, int(head["ContentLength"]))

    async def exists(self, storage_key: str) -> bool:
        return await self._head(storage_key) is not None

    async def delete(self, storage_key: str) -> None:
        await self._delete(storage_key)

    async def set_aside(self, storage_key: str) -> str | None:
        sha = storage_key.rsplit("/", 1)[-1]
        token = f"collect-{sha}-{secrets.token_hex(6)}"
        if await self._head(storage_key) is None:
            return None
        await self._copy(storage_key, self._tmp(token))
        await self._delete(storage_key)
        return token

    async def put_back(self, storage_key: str, token: str) -> None:
        if await self._head(storage_key) is None:
            sha = storage_key.rsplit("/", 1)[-1]
            await self._copy(self._tmp(token), storage_key, sha256=sha)
        await self._delete(self._tmp(token))

    async def purge(self, token: str) -> None:
        await self._delete(self._tmp(token))

    async def rehash(self, storage_key: str) -> str:
        digest = hashlib.sha256()
        async with await self.open(storage_key) as reader:
            async for chunk in reader.chunks():
                await _hash(digest, chunk)
        return digest.hexdigest()

    async def check_writable(self) -> None:
        probe = self._tmp(f".probe-{secrets.token_hex(4)}")
        try:
            await self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
            await self.client.delete_object(Bucket=self.bucket, Key=probe)
        except (ClientError, BotoCoreError) as exc:
            raise OSError(f"the object store refused a write: {type(exc).__name__}") from None

    def _parts_prefix(self, upload_id: str) -> str:
        check_part_names(upload_id)
        return f"{self.prefix}parts/{upload_id}/"

    async def keep_part(self, spool: Spool, *, upload_id: str, part_id: str) -> str:
        if not isinstance(spool, S3Spool) or spool._store is not self:
            raise TypeError("an S3 blob store keeps only its own spools")
        check_part_names(part_id)
        key = f"{self._parts_prefix(upload_id)}{part_id}"
        await self._copy(spool.key, key)
        await self._delete(spool.key)
        spool._taken = True
        return key

    async def open_part(self, part_key: str) -> BlobReader:
        if not part_key.startswith(f"{self.prefix}parts/"):
            raise BlobMissing(part_key)
        return await self.open(part_key)

    async def delete_parts(self, upload_id: str) -> int:
        keys = [e["Key"] async for e in self._listed(self._parts_prefix(upload_id))]
        for key in keys:
            await self._delete(key)
        return len(keys)

    def _stale_parts(self, cutoff: float) -> list[Path]:
        """Blocking: part files a crashed upload of this process left, now removed."""
        stale = []
        for path in self.part_dir.glob("part-*"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    stale.append(path)
        return stale

    async def _listed(self, prefix: str) -> AsyncIterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        with _unavailable():
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for entry in page.get("Contents", []):
                    yield entry

    async def _abandoned_uploads(self, cutoff: float) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        with _unavailable():
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._tmp("")):
                for upload in page.get("Uploads", []):
                    key, upload_id = str(upload["Key"]), str(upload["UploadId"])
                    if _before(upload.get("Initiated"), cutoff) and await self._idle(
                        key, upload_id, cutoff
                    ):
                        found.append((key, upload_id))
        return found

    async def _idle(self, key: str, upload_id: str, cutoff: float) -> bool:
        """No part stored since `cutoff`: an upload that began long ago may still be streaming
        into another replica (its start time never changes; its parts' times do)."""
        paginator = self.client.get_paginator("list_parts")
        try:
            async for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
                if not all(_before(p.get("LastModified"), cutoff) for p in page.get("Parts", [])):
                    return False
        except ClientError as exc:
            if _missing(exc):  # completed or aborted meanwhile
                return False
            raise
        return True

    async def _still_old(self, key: str, cutoff: float) -> bool:
        head = await self._head(key)
        return head is not None and _before(head.get("LastModified"), cutoff)

    async def sweep(self, *, max_age_seconds: float, referenced: Referenced) -> list[str]:
        # By age only: another replica may be writing or committing right now (a commit
        # rewrites a blob it reuses, and each removal looks at the age once more first).
        cutoff = self._clock() - max_age_seconds
        spools = [e["Key"] async for e in self._listed(self._tmp("")) if _old(e, cutoff)]
        blobs = [e["Key"] async for e in self._listed(f"{self.prefix}blobs/") if _old(e, cutoff)]
        aside = {
            key: key.rsplit("/", 1)[-1].split("-")[1]
            for key in spools
            if key.rsplit("/", 1)[-1].startswith("collect-")
        }
        named = [key.rsplit("/", 1)[-1] for key in blobs] + list(aside.values())
        live: set[str] = set()
        for start in range(0, len(named), SWEEP_BATCH):
            live |= await referenced(named[start : start + SWEEP_BATCH])
        removed: list[str] = []
        for key in spools + [k for k in blobs if k.rsplit("/", 1)[-1] not in live]:
            sha = aside.get(key)
            if sha in live:
                target = self.key_for(sha)
                if await self._head(target) is None:  # its deletion never committed
                    await self._copy(key, target, sha256=sha)
                    await self._delete(key)
                    continue
            if not await self._still_old(key, cutoff):  # a commit reused it since the listing
                continue
            await self._delete(key)
            removed.append(f"s3://{self.bucket}/{key}")
        for path in await to_thread.run_sync(self._stale_parts, cutoff):
            removed.append(str(path))
        for key, upload_id in await self._abandoned_uploads(cutoff):
            with _unavailable(), contextlib.suppress(ClientError):
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
                removed.append(f"s3://{self.bucket}/{key}?uploadId={upload_id}")
        return removed


def _before(when: object, cutoff: float) -> bool:
    return isinstance(when, datetime) and when.timestamp() < cutoff


def _old(entry: dict[str, Any], cutoff: float) -> bool:
    return _before(entry.get("LastModified"), cutoff)
