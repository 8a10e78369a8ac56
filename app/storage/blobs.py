"""Content-addressed blob storage: one canonical copy of each distinct content."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from anyio import to_thread

from app.core.errors import InsufficientStorage

HASH_CHUNK = 1024 * 1024
READ_CHUNK = 256 * 1024
DIR_MODE = 0o700
FILE_MODE = 0o600
# Out of space (or quota): the store says 507, never 500.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def disk_errors() -> Iterator[None]:
    """Turn a full disk or quota into InsufficientStorage."""
    try:
        yield
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            raise InsufficientStorage(
                "The gateway's storage is full; retry the upload later."
            ) from None
        raise


def private_dir(path: Path) -> None:
    """mkdir -p with 0700 on every level created, whatever the umask."""
    missing = []
    for parent in [path, *path.parents]:
        if parent.exists():
            break
        missing.append(parent)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for created in missing:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(created, DIR_MODE)


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    storage_key: str


class BlobMissing(LookupError):
    """The store holds nothing under the key asked for."""


class BlobReader(ABC):
    """An opened blob: its size, and its bytes read as often as needed, whole or a range."""

    size: int

    @abstractmethod
    def chunks(
        self, start: int = 0, end: int | None = None, *, size: int = READ_CHUNK
    ) -> AsyncGenerator[bytes]:
        """The bytes from `start` up to (not including) `end`, in chunks of at most `size`;
        each call reads afresh, so a retried provider upload sends the blob again from its
        start."""

    @abstractmethod
    async def aclose(self) -> None: ...

    async def __aenter__(self) -> BlobReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Spool(ABC):
    """An upload being written: hashed and sized as chunks arrive, removed unless committed.
    One call at a time: each write is awaited before the next."""

    size: int

    @abstractmethod
    async def write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def sha256(self) -> str:
        """The hex sha256 of the bytes written so far (every write awaited)."""

    @abstractmethod
    async def finish(self) -> str:
        """Make the written bytes durable and return their hex sha256."""

    @abstractmethod
    async def discard(self) -> None:
        """Remove what was written, unless a commit has taken it; safe to call twice."""

    @abstractmethod
    def holds_bytes(self) -> bool:
        """True until a commit has taken the bytes into the store."""


class BlobStore(ABC):
    """Where canonical file bytes live, by content: the services use only this interface."""

    @abstractmethod
    def key_for(self, sha256: str) -> str:
        """The content-addressed key the blob of `sha256` is stored under."""

    @abstractmethod
    def new_spool(self) -> Spool:
        """Where an incoming upload is written while it is hashed."""

    @abstractmethod
    async def commit(self, spool: Spool, *, sha256: str) -> StoredBlob:
        """Place a finished spool under its hash; a stored copy failing its hash is replaced."""

    @abstractmethod
    async def open(self, storage_key: str) -> BlobReader:
        """The blob under `storage_key`, to read; BlobMissing if there is none."""

    @abstractmethod
    async def exists(self, storage_key: str) -> bool: ...

    @abstractmethod
    async def delete(self, storage_key: str) -> None: ...

    @abstractmethod
    async def set_aside(self, storage_key: str) -> str | None:
        """Move a blob out of reach until its row's deletion commits; None if absent."""

    @abstractmethod
    async def put_back(self, storage_key: str, token: str) -> None:
        """Undo set_aside after the deletion failed to commit."""

    @abstractmethod
    async def purge(self, token: str) -> None:
        """Remove a set-aside blob once its row's deletion has committed."""

    @abstractmethod
    async def rehash(self, storage_key: str) -> str:
        """Re-read the blob and return its sha256 (integrity checks); BlobMissing if absent."""

    @abstractmethod
    async def check_writable(self) -> None:
        """Raise OSError when the store cannot take new blobs (readiness)."""

    @abstractmethod
    async def sweep(self, *, max_age_seconds: float, referenced: Referenced) -> list[str]:
        """Remove what no crash-free run leaves behind, once older than max_age_seconds:
        spools of uploads never committed, blobs no row references, and blobs set aside for
        collection whose row is gone (one whose row is still there is put back). `referenced`
        answers which of a batch of sha256s have rows. Returns the paths removed."""


Referenced = Callable[[list[str]], Awaitable[set[str]]]


def leftover_kind(where: str) -> str:
    """What a path or key that sweep() returned was: a spool, a set-aside blob, an
    unreferenced blob, or an abandoned multipart upload."""
    if "?uploadId=" in where:
        return "multipart"
    name = where.rsplit("/", 1)[-1]
    if name.startswith("collect-"):
        return "set_aside"
    if name.startswith(("upload-", ".probe-")):
        return "spool"
    return "blob"


SWEEP_BATCH = 500


class SpoolFile(Spool):
    """An upload being written to a temp file on the same volume as the blobs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self._fh: BinaryIO = os.fdopen(fd, "wb")

    async def write(self, chunk: bytes) -> None:
        await to_thread.run_sync(self._write, chunk)

    def _write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        with disk_errors():
            self._fh.write(chunk)
        self.size += len(chunk)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def finish(self) -> str:
        return await to_thread.run_sync(self._finish)

    def _finish(self) -> str:
        """Flush, fsync and close the spool; return the hex sha256.

        The fsync happens here, before anyone knows whether the bytes are already stored,
        so an upload costs the same whether or not another tenant holds the same content.
        """
        with disk_errors():
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        return self._hash.hexdigest()

    async def discard(self) -> None:
        await to_thread.run_sync(self._discard)

    def _discard(self) -> None:
        if not self._fh.closed:
            # Closing flushes what is buffered; on a full disk that fails again, and the
            # bytes are being thrown away anyway.
            with contextlib.suppress(OSError):
                self._fh.close()
        self.path.unlink(missing_ok=True)

    def holds_bytes(self) -> bool:
        return self.path.exists()


class _LocalReader(BlobReader):
    """An open file descriptor: a blob deleted while it is read is still read whole."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd: int | None = fd
        self.size = size

    async def chunks(
        self, start: int = 0, end: int | None = None, *, size: int = READ_CHUNK
    ) -> AsyncGenerator[bytes]:
        stop = self.size if end is None else min(end, self.size)
        offset = start
        while offset < stop:
            fd = self._fd
            if fd is None:
                raise ValueError("the blob reader is closed")
            chunk = await to_thread.run_sync(os.pread, fd, min(size, stop - offset), offset)
            if not chunk:
                raise OSError(errno.EIO, "the blob ended before its recorded size")
            offset += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class LocalBlobStore(BlobStore):
    """Blobs under `root/blobs/ab/cd/<sha256>`, written via temp file, fsync and atomic rename."""

    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self._clock = clock
        self.blob_dir = root / "blobs"
        self.tmp_dir = root / "tmp"

    def prepare(self) -> None:
        private_dir(self.root)
        os.chmod(self.root, DIR_MODE)
        private_dir(self.blob_dir)
        private_dir(self.tmp_dir)

    def key_for(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def new_spool(self) -> SpoolFile:
        return SpoolFile(self.tmp_dir / f"upload-{secrets.token_hex(12)}.part")

    def local_path(self, storage_key: str) -> Path:
        """Where the blob sits on disk (this store's own; the services never ask)."""
        return self.blob_dir / storage_key

    async def open(self, storage_key: str) -> BlobReader:
        def _open() -> _LocalReader:
            try:
                fd = os.open(self.local_path(storage_key), os.O_RDONLY)
            except FileNotFoundError:
                raise BlobMissing(storage_key) from None
            try:
                return _LocalReader(fd, os.fstat(fd).st_size)
            except BaseException:
                os.close(fd)
                raise

        return await to_thread.run_sync(_open)

    async def commit(self, spool: Spool, *, sha256: str) -> StoredBlob:
        if not isinstance(spool, SpoolFile):
            raise TypeError("a local blob store commits only its own spools")
        key = self.key_for(sha256)
        target = self.local_path(key)

        def _place() -> None:
            # The spool was fsynced by finish(). It replaces a stored copy too, without reading
            # it: the same work whether or not anyone (another tenant) holds these bytes, and
            # a copy gone bad is replaced with bytes that hash right; readers of the old copy
            # keep their open descriptor. The fresh mtime keeps the age-based sweeper off it.
            with disk_errors():
                private_dir(target.parent)
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

    async def set_aside(self, storage_key: str) -> str | None:
        def _move() -> str | None:
            # Named by its sha256, so a sweep after a crash knows whether to restore it.
            sha = storage_key.rsplit("/", 1)[-1]
            aside = self.tmp_dir / f"collect-{sha}-{secrets.token_hex(6)}.part"
            try:
                os.replace(self.local_path(storage_key), aside)
            except FileNotFoundError:
                return None
            return aside.name

        return await to_thread.run_sync(_move)

    async def put_back(self, storage_key: str, token: str) -> None:
        def _restore() -> None:
            target = self.local_path(storage_key)
            if target.exists():  # a later upload already placed verified bytes
                (self.tmp_dir / token).unlink(missing_ok=True)
                return
            os.replace(self.tmp_dir / token, target)

        await to_thread.run_sync(_restore)

    async def purge(self, token: str) -> None:
        await to_thread.run_sync(lambda: (self.tmp_dir / token).unlink(missing_ok=True))

    async def rehash(self, storage_key: str) -> str:
        try:
            return await to_thread.run_sync(_file_sha256, self.local_path(storage_key))
        except FileNotFoundError:
            raise BlobMissing(storage_key) from None

    async def check_writable(self) -> None:
        def _probe() -> None:
            probe = self.tmp_dir / f".probe-{secrets.token_hex(4)}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)

        await to_thread.run_sync(_probe)

    async def sweep(self, *, max_age_seconds: float, referenced: Referenced) -> list[str]:
        # By age only: another process sharing the directory may be writing or committing
        # (a commit that reuses a stored blob refreshes its mtime first).
        cutoff = self._clock() - max_age_seconds

        def _stale() -> tuple[list[Path], list[Path]]:
            spools = [p for p in self.tmp_dir.glob("*.part") if _older(p, cutoff)]
            blobs = [p for p in self.blob_dir.glob("??/??/*") if _older(p, cutoff)]
            return spools, blobs

        spools, blobs = await to_thread.run_sync(_stale)
        aside = {p: p.name.split("-")[1] for p in spools if p.name.startswith("collect-")}
        named = [p.name for p in blobs] + list(aside.values())
        live: set[str] = set()
        for start in range(0, len(named), SWEEP_BATCH):
            live |= await referenced(named[start : start + SWEEP_BATCH])

        def _remove() -> list[str]:
            removed: list[str] = []
            for path in spools + [p for p in blobs if p.name not in live]:
                sha = aside.get(path)
                if sha in live:
                    target = self.local_path(self.key_for(sha))
                    if not target.exists():  # its deletion never committed: the blob goes back
                        private_dir(target.parent)
                        os.replace(path, target)
                        continue
                if _older(path, cutoff):
                    path.unlink(missing_ok=True)
                    removed.append(str(path))
            return removed

        return await to_thread.run_sync(_remove)


def _older(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
