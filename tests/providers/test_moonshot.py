"""MoonshotAdapter's own quirks: vision uploads, empty files, a single list page and waits
read from rate-limit messages. What it shares with ZaiAdapter is in test_adapters.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.errors import ProviderRateLimited, ProviderRejected
from app.providers import MoonshotAdapter
from tests.providers import (
    Recorder,
    answer,
    assert_no_leak,
    control,
    json_response,
    make_adapter,
    mock_adapter,
)
from tests.support.bodies import FileBody

PROVIDER = "moonshot"
FILE_OBJECT = {
    "id": "cnhgqnucp7f5h7jfb3s0",
    "object": "file",
    "bytes": 505444,
    "created_at": 1709378911,
    "filename": "xlnet.pdf",
    "purpose": "file-extract",
    "status": "ok",
    "status_details": "",
}


@pytest.fixture(autouse=True)
def reset_sandbox(request: pytest.FixtureRequest) -> None:
    """Give every loopback test a fresh sandbox provider (unit tests never start it)."""
    if "moonshot_base_url" in request.fixturenames:
        control(request.getfixturevalue("sandbox_server"), PROVIDER, "_reset")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def adapter(moonshot_base_url: str, recorder: Recorder) -> AsyncIterator[MoonshotAdapter]:
    adapter = make_adapter(MoonshotAdapter, moonshot_base_url, observer=recorder)
    assert isinstance(adapter, MoonshotAdapter)
    yield adapter
    await adapter.aclose()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- loopback contract tests -------------------------------------------------------------


async def test_vision_uploads_as_image(adapter: MoonshotAdapter, tmp_path: Path) -> None:
    path = write(tmp_path, "pic.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    uploaded = await adapter.upload(
        body=FileBody(path), filename="pic.png", purpose="vision", content_type="image/png"
    )
    assert uploaded.purpose == "image"


async def test_empty_file_is_rejected(adapter: MoonshotAdapter, tmp_path: Path) -> None:
    path = write(tmp_path, "empty.txt", b"")
    with pytest.raises(ProviderRejected) as caught:
        await adapter.upload(
            body=FileBody(path),
            filename="empty.txt",
            purpose="file-extract",
            content_type="text/plain",
        )
    assert "empty file" in str(caught.value)
    assert_no_leak(caught.value, "please confirm and re-upload")


# --- unit tests over httpx.MockTransport -------------------------------------------------


async def test_list_reads_only_the_first_page() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(200, {"object": "list", "data": [FILE_OBJECT], "has_more": True})

    adapter = await mock_adapter(MoonshotAdapter, handler)
    try:
        files = await adapter.list()
    finally:
        await adapter.aclose()
    assert [f.id for f in files] == [FILE_OBJECT["id"]]
    assert len(seen) == 1
    assert seen[0].url.params.get("after") is None


def err(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind}}


CONCURRENCY = (
    "Your account cn-12345678<ak-abcdef123456> request reached max concurrency: 3, "
    "please try again after 4 seconds"
)


@pytest.mark.parametrize(
    ("headers", "message", "expected"),
    [
        ({"Retry-After": "12"}, CONCURRENCY, 12.0),
        ({"retry-after-ms": "2500"}, CONCURRENCY, 2.5),
        ({}, CONCURRENCY, 4.0),
        ({}, "Your account x<y> request reached max request: 200, please try again after 1.5 seconds", 1.5),  # noqa: E501
        ({}, "The engine is currently overloaded, please try again later", None),
    ],
)  # fmt: skip
async def test_rate_limit_retry_after(
    headers: dict[str, str], message: str, expected: float | None
) -> None:
    response = json_response(429, err(message, "rate_limit_reached_error"), headers)
    adapter = await mock_adapter(MoonshotAdapter, answer(response))
    try:
        with pytest.raises(ProviderRateLimited) as caught:
            await adapter.list()
    finally:
        await adapter.aclose()
    assert caught.value.retry_after == expected
    assert_no_leak(caught.value, "max concurrency", "max request")
