"""Downloads (app/api/download.py) of blobs larger than one read, on disk and on S3: whole,
ranges across read boundaries, several ranges, ETag, 304 and If-Range."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from app.api.download import DOWNLOAD_CHUNK
from app.core.config import Settings
from tests.api.test_files_on_s3 import on_s3
from tests.conftest import Gateway, started_gateway
from tests.support.seaweed import ObjectStore

DATA = os.urandom(3 * DOWNLOAD_CHUNK + 17)


@pytest.fixture(params=["local", "s3"])
async def store_gateway(
    request: pytest.FixtureRequest, settings: Settings, sandbox_reset: str
) -> AsyncIterator[Gateway]:
    if request.param == "s3":
        store: ObjectStore = request.getfixturevalue("object_store")
        settings = on_s3(settings, store)
    async with started_gateway(settings, sandbox_reset) as gateway:
        yield gateway


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
        assert whole.headers["content-length"] == str(len(DATA))

        start, end = DOWNLOAD_CHUNK - 5, 2 * DOWNLOAD_CHUNK + 5  # across two read boundaries
        part = await client.get(url, headers={"Range": f"bytes={start}-{end}"})
        assert part.status_code == 206 and part.content == DATA[start : end + 1]
        assert part.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"

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
