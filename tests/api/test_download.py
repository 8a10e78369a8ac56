"""Downloads (app/api/download.py) of blobs larger than one read, on disk and on S3: whole,
ranges across read boundaries, several ranges, ETag, 304 and If-Range."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message

from app.api.digest import repr_digest
from app.api.download import DOWNLOAD_CHUNK, BlobResponse
from app.storage.blobs import BlobReader, LocalBlobStore
from tests.conftest import Gateway

DATA = os.urandom(3 * DOWNLOAD_CHUNK + 17)


async def test_large_downloads_keep_ranges_etag_and_304(store_gateway: Gateway) -> None:
    async with store_gateway.client(await store_gateway.key()) as client:
        up = await client.post(
            "/v1/files",
            data={"purpose": "file-extract"},
            files={"file": ("big.txt", DATA, "text/plain")},
        )
        assert up.status_code == 200, up.text
        url = f"/v1/files/{up.json()['id']}/content"
        etag = f'"{hashlib.sha256(DATA).hexdigest()}"'

        whole = await client.get(url)
        assert whole.status_code == 200 and whole.content == DATA
        assert whole.headers["etag"] == etag
        assert repr_digest([whole.headers["repr-digest"]]) == hashlib.sha256(DATA).hexdigest()
        assert whole.headers["content-length"] == str(len(DATA))

        start, end = DOWNLOAD_CHUNK - 5, 2 * DOWNLOAD_CHUNK + 5  # across two read boundaries
        part = await client.get(url, headers={"Range": f"bytes={start}-{end}"})
        assert part.status_code == 206 and part.content == DATA[start : end + 1]
        assert part.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
        assert part.headers["repr-digest"] == whole.headers["repr-digest"]  # of the whole file

        tail = await client.get(url, headers={"Range": "bytes=-20"})
        assert tail.status_code == 206 and tail.content == DATA[-20:]

        several = await client.get(url, headers={"Range": f"bytes=0-1,{3 * DOWNLOAD_CHUNK}-"})
        assert several.status_code == 206
        assert several.headers["content-type"].startswith("multipart/byteranges")
        assert DATA[3 * DOWNLOAD_CHUNK :] in several.content
        assert int(several.headers["content-length"]) == len(several.content)

        cached = await client.get(url, headers={"If-None-Match": etag})
        assert cached.status_code == 304 and cached.content == b""
        stale = await client.get(url, headers={"If-Range": '"other"', "Range": "bytes=0-9"})
        assert stale.status_code == 200 and stale.content == DATA
        fresh = await client.get(url, headers={"If-Range": etag, "Range": "bytes=0-9"})
        assert fresh.status_code == 206 and fresh.content == DATA[:10]
        unsatisfiable = await client.get(url, headers={"Range": f"bytes={len(DATA)}-"})
        assert unsatisfiable.status_code == 416
        assert unsatisfiable.headers["content-range"] == f"bytes */{len(DATA)}"


class _Recorded(BlobReader):
    """A real blob reader that notes when its reads end and when it is closed."""

    def __init__(self, inner: BlobReader, log: list[str]) -> None:
        self.inner, self.log, self.size = inner, log, inner.size

    async def chunks(
        self, start: int = 0, end: int | None = None, *, size: int = DOWNLOAD_CHUNK
    ) -> AsyncGenerator[bytes]:
        try:
            async with contextlib.aclosing(self.inner.chunks(start, end, size=size)) as inner:
                async for chunk in inner:
                    yield chunk
        finally:
            self.log.append("reads ended")

    async def aclose(self) -> None:
        self.log.append("closed")
        await self.inner.aclose()


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
@pytest.mark.parametrize("ranges", [[], [(0, 10), (DOWNLOAD_CHUNK, 3 * DOWNLOAD_CHUNK)]])
async def test_a_download_cut_short_ends_its_reads_before_closing_the_blob(
    tmp_path: Path, spec_version: str, ranges: list[tuple[int, int]]
) -> None:
    """The client goes away mid-body: the read ahead is settled and the reads end before the
    blob's descriptor closes, and nothing is left running."""
    store = LocalBlobStore(tmp_path)
    store.prepare()
    spool = store.new_spool()
    await spool.write(DATA)
    sha256 = await spool.finish()
    blob = await store.commit(spool, sha256=sha256)
    log: list[str] = []
    reader = _Recorded(await store.open(blob.storage_key), log)
    response = BlobResponse(
        reader,
        ranges=ranges,
        media_type="text/plain",
        headers={},
        last_modified=datetime.now(UTC),
    )
    bodies: list[bytes] = []
    gone = asyncio.Event()

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] != "http.response.body":
            return
        if len(bodies) == 2:
            gone.set()
            raise OSError("the client went away")
        bodies.append(message["body"])

    scope = {"type": "http", "asgi": {"spec_version": spec_version}, "method": "GET"}
    with contextlib.suppress(OSError, ClientDisconnect):  # as the spec version has it
        await response(scope, receive, send)
    assert len(bodies) == 2
    assert log[-1] == "closed" and "reads ended" in log
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
