"""Upload bodies for adapter tests: a file on disk, read like a blob."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from anyio import to_thread

CHUNK = 64 * 1024


class FileBody:
    """The bytes of `path`, read afresh in chunks on every call, as a blob reader does (no
    handle is held between chunks, so an upload abandoned mid-stream leaves nothing open)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size

    def _read(self, offset: int) -> bytes:
        with self.path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(CHUNK)

    async def chunks(self) -> AsyncIterator[bytes]:
        offset = 0
        while chunk := await to_thread.run_sync(self._read, offset):
            offset += len(chunk)
            yield chunk
