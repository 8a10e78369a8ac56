"""Content-addressed blob storage: one canonical copy of each distinct content."""

from __future__ import annotations

import hashlib
import os
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from anyio import to_thread

HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    storage_key: str


class BlobStore(ABC):
    """Where canonical file bytes live; local disk today, an S3-compatible store later."""

    @abstractmethod
    def new_spool(self) -> SpoolFile:
        """A temp file for an incoming upload, on the same volume as the blobs."""

    @abstractmethod
    async def commit(self, spool: SpoolFile, *, sha256: str) -> StoredBlob:
        """Move a fully written spool into place under its hash (idempotent)."""

    @abstractmethod
    def local_path(self, storage_key: str) -> Path:
        """A readable path for the blob (providers stream uploads from it)."""

    @abstractmethod
    async def exists(self, storage_key: str) -> bool: ...

    @abstractmethod
    async def delete(self, storage_key: str) -> None: ...

    @abstractmethod
    async def rehash(self, storage_key: str) -> str:
        """Re-read the blob and return its sha256 (integrity checks)."""

    @abstractmethod
    async def check_writable(self) -> None:
        """Raise OSError when the store cannot take new blobs (readiness)."""


class SpoolFile:
    """An upload being written: hashed and sized as chunks arrive, removed unless committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        self._fh: BinaryIO = open(path, "xb")

    def write(self, chunk: bytes) -> None:
        """Blocking: call through a worker thread for large chunks."""
        self._hash.update(chunk)
        self._fh.write(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Close the spool and return the hex sha256 (fsync waits until it becomes a blob)."""
        self._fh.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.path.unlink(missing_ok=True)


class LocalBlobStore(BlobStore):
    """Blobs under `root/blobs/ab/cd/<sha256>`, written via temp file, fsync and atomic rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "blobs"
        self.tmp_dir = root / "tmp"

    def prepare(self) -> None:
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key_for(sha256: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def new_spool(self) -> SpoolFile:
        return SpoolFile(self.tmp_dir / f"upload-{secrets.token_hex(12)}.part")

    def local_path(self, storage_key: str) -> Path:
        return self.blob_dir / storage_key

    async def commit(self, spool: SpoolFile, *, sha256: str) -> StoredBlob:
        key = self.key_for(sha256)
        target = self.local_path(key)

        def _place() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() and target.stat().st_size == spool.size:
                spool.path.unlink(missing_ok=True)
                return
            fd = os.open(spool.path, os.O_RDONLY)
            try:
                os.fsync(fd)  # durable bytes before the name points at them
            finally:
                os.close(fd)
            os.replace(spool.path, target)
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

        await to_thread.run_sync(_place)
        return StoredBlob(sha256=sha256, size=spool.size, storage_key=key)

    async def exists(self, storage_key: str) -> bool:
        return await to_thread.run_sync(self.local_path(storage_key).is_file)

    async def delete(self, storage_key: str) -> None:
        await to_thread.run_sync(lambda: self.local_path(storage_key).unlink(missing_ok=True))

    async def rehash(self, storage_key: str) -> str:
        def _hash() -> str:
            digest = hashlib.sha256()
            with open(self.local_path(storage_key), "rb") as fh:
                while chunk := fh.read(HASH_CHUNK):
                    digest.update(chunk)
            return digest.hexdigest()

        return await to_thread.run_sync(_hash)

    async def check_writable(self) -> None:
        def _probe() -> None:
            probe = self.tmp_dir / f".probe-{secrets.token_hex(4)}"
            probe.write_bytes(b"ok")
            probe.unlink()

        await to_thread.run_sync(_probe)
