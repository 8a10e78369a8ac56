"""A stored blob as an HTTP response: whole, one byte range (206) or several (byteranges).

The bytes stream from whichever blob store holds them, in bounded chunks; the reader is
closed when the response ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncGenerator, Mapping
from datetime import datetime
from email.utils import format_datetime

from starlette.responses import FileResponse, MalformedRangeHeader, StreamingResponse
from starlette.responses import RangeNotSatisfiable as StarletteRangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from app.core.errors import RangeNotSatisfiable
from app.storage.blobs import BlobReader

Ranges = list[tuple[int, int]]  # [start, end) pairs
# Few large reads and sends: per-chunk costs (a thread hop, a trip through the middleware)
# stay small beside the copying.
DOWNLOAD_CHUNK = 1024 * 1024


def byte_ranges(value: str | None, size: int) -> Ranges:
    """The ranges a Range header asks for ([] for the whole body); RangeNotSatisfiable for a
    malformed or unsatisfiable one, in the gateway's own error shape."""
    if value is None:
        return []
    try:
        # Starlette's parser: overlapping ranges merged, more than 100 ignored.
        return FileResponse._parse_range_header(value, size)
    except (StarletteRangeNotSatisfiable, MalformedRangeHeader) as exc:
        raise RangeNotSatisfiable(
            f"The range '{value[:100]}' cannot be served from {size} bytes.",
            param="Range",
            headers={"Content-Range": f"bytes */{size}"},
        ) from exc


class BlobResponse(StreamingResponse):
    """Serve `reader`'s bytes; `ranges` as byte_ranges() returned them ([] for all)."""

    def __init__(
        self,
        reader: BlobReader,
        *,
        ranges: Ranges,
        media_type: str,
        headers: Mapping[str, str],
        last_modified: datetime,
        head: bool = False,
    ) -> None:
        self._reader = reader
        size = reader.size
        merged = {
            **headers,
            "Accept-Ranges": "bytes",
            "Last-Modified": format_datetime(last_modified, usegmt=True),
        }
        if not ranges:
            status, length, body = 200, size, self._span(0, size)
        elif len(ranges) == 1:
            start, end = ranges[0]
            merged["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            status, length, body = 206, end - start, self._span(start, end)
        else:
            boundary = secrets.token_hex(13)
            parts = [
                (
                    f"--{boundary}\r\nContent-Type: {media_type}\r\n"
                    f"Content-Range: bytes {start}-{end - 1}/{size}\r\n\r\n"
                ).encode("latin-1")
                for start, end in ranges
            ]
            closing = f"--{boundary}--".encode("latin-1")
            status = 206
            length = sum(
                len(p) + (end - start) + 2 for p, (start, end) in zip(parts, ranges, strict=True)
            )
            length += len(closing)
            body = self._multipart(parts, ranges, closing)
            media_type = f"multipart/byteranges; boundary={boundary}"
        merged["Content-Length"] = str(length)
        super().__init__(
            _nothing() if head else body, status_code=status, headers=merged, media_type=media_type
        )

    async def _span(self, start: int, end: int) -> AsyncGenerator[bytes]:
        chunks = self._reader.chunks(start, end, size=DOWNLOAD_CHUNK)
        async with contextlib.aclosing(_read_ahead(chunks)) as ahead:
            async for chunk in ahead:
                yield chunk

    async def _multipart(
        self, parts: list[bytes], ranges: Ranges, closing: bytes
    ) -> AsyncGenerator[bytes]:
        for header, (start, end) in zip(parts, ranges, strict=True):
            yield header
            async with contextlib.aclosing(self._span(start, end)) as span:
                async for chunk in span:
                    yield chunk
            yield b"\r\n"
        yield closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A response cut short leaves its body mid-read: end it (and the read ahead in a
            # thread) before the blob's descriptor closes under it.
            if isinstance(self.body_iterator, AsyncGenerator):
                await self.body_iterator.aclose()
            await self._reader.aclose()


async def _read_ahead(chunks: AsyncGenerator[bytes]) -> AsyncGenerator[bytes]:
    """`chunks`, each read while the one before it is being sent: the wait for a reader
    thread overlaps the socket write instead of adding to it."""
    ahead: asyncio.Future[bytes | None] = asyncio.ensure_future(anext(chunks, None))
    try:
        while (chunk := await ahead) is not None:
            ahead = asyncio.ensure_future(anext(chunks, None))
            yield chunk
    finally:
        if not ahead.done():
            ahead.cancel()
        with contextlib.suppress(BaseException):  # its outcome no longer matters
            await ahead
        await chunks.aclose()


async def _nothing() -> AsyncGenerator[bytes]:
    return
    yield  # an async generator with no items
