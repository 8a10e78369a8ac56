"""ZaiAdapter's own quirks: per-purpose formats, HTTP 435 for oversized files, paging through
lists and retrieve answered from the list. What it shares with MoonshotAdapter is in
test_adapters.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.errors import ProviderFileTooLarge, ProviderNotFound, ProviderRejected
from app.providers import ZaiAdapter
from app.providers import zai as zai_module
from app.providers.base import MiB
from tests.providers import (
    Recorder,
    assert_no_leak,
    control,
    json_response,
    make_adapter,
    mock_adapter,
)
from tests.support.bodies import FileBody

PROVIDER = "zai"
BASE = "https://provider.test/api/paas/v4"


def file_object(file_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": 82947,
        "created_at": 1741136989,
        "filename": "report.pdf",
        "purpose": "file-extract",
        **fields,
    }


@pytest.fixture(autouse=True)
def reset_sandbox(request: pytest.FixtureRequest) -> None:
    """Give every loopback test a fresh sandbox provider (unit tests never start it)."""
    if "zai_base_url" in request.fixturenames:
        control(request.getfixturevalue("sandbox_server"), PROVIDER, "_reset")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def adapter(zai_base_url: str, recorder: Recorder) -> AsyncIterator[ZaiAdapter]:
    adapter = make_adapter(ZaiAdapter, zai_base_url, observer=recorder)
    assert isinstance(adapter, ZaiAdapter)
    yield adapter
    await adapter.aclose()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- loopback contract tests -------------------------------------------------------------


async def test_sandbox_enforces_purpose_formats(adapter: ZaiAdapter, tmp_path: Path) -> None:
    path = write(tmp_path, "notes.txt", b"plain text")
    with pytest.raises(ProviderRejected) as caught:
        await adapter.upload(
            body=FileBody(path),
            filename="notes.txt",
            purpose="file-extract",
            content_type="text/plain",
        )
    assert caught.value.error_code == "provider_rejected"
    assert_no_leak(caught.value, "Unsupported file format")


async def test_list_follows_pages(adapter: ZaiAdapter, tmp_path: Path, recorder: Recorder) -> None:
    ids = set()
    for i in range(105):
        path = write(tmp_path, f"b{i}.jsonl", b"{}\n")
        uploaded = await adapter.upload(
            body=FileBody(path),
            filename=path.name,
            purpose="batch",
            content_type="application/jsonl",
        )
        ids.add(uploaded.id)
    recorder.calls.clear()
    listed = await adapter.list()
    assert len(listed) == 105
    assert {f.id for f in listed} == ids
    assert [op for _, op, _ in recorder.outcomes] == ["list", "list"]


async def test_oversized_file_is_too_large(
    zai_base_url: str, sandbox_server: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "huge.jsonl", b"{}\n" * (35 * MiB))  # 105 MiB, over 100 MiB
    adapter = make_adapter(ZaiAdapter, zai_base_url)
    try:
        with pytest.raises(ProviderFileTooLarge) as caught:
            await adapter.upload(
                body=FileBody(path),
                filename="huge.jsonl",
                purpose="batch",
                content_type="application/jsonl",
            )
    finally:
        await adapter.aclose()
    assert caught.value.param == "file"
    assert_no_leak(caught.value, "File size exceeds")


# --- unit tests over httpx.MockTransport -------------------------------------------------


async def test_list_paginates_with_after_and_limit() -> None:
    pages = {
        None: ([file_object("a"), file_object("b")], True),
        "b": ([file_object("c")], True),
        "c": ([file_object("d", purpose="batch")], False),
    }
    seen: list[httpx.QueryParams] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.params)
        data, more = pages[request.url.params.get("after")]
        return json_response(200, {"object": "list", "data": data, "has_more": more})

    recorder = Recorder()
    adapter = await mock_adapter(ZaiAdapter, handler, base_url=BASE, observer=recorder)
    try:
        files = await adapter.list()
        seen_all = list(seen)
        seen.clear()
        batch = await adapter.list(purpose="batch")
    finally:
        await adapter.aclose()
    assert [f.id for f in files] == ["a", "b", "c", "d"]
    assert [p.get("after") for p in seen_all] == [None, "b", "c"]
    assert all(p.get("limit") == "100" for p in seen_all)
    assert all("purpose" not in p for p in seen_all)
    assert [f.id for f in batch] == ["d"]
    assert all(p.get("purpose") == "batch" for p in seen)
    assert [op for _, op, _ in recorder.outcomes] == ["list"] * 6


async def test_list_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zai_module, "MAX_PAGES", 5)
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        page = [file_object(f"f{calls}")]
        return json_response(200, {"object": "list", "data": page, "has_more": True})

    adapter = await mock_adapter(ZaiAdapter, handler, base_url=BASE)
    try:
        files = await adapter.list()
    finally:
        await adapter.aclose()
    assert calls == 5
    assert len(files) == 5


async def test_list_stops_when_after_is_ignored() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        page = [file_object("a"), file_object("b")]
        return json_response(200, {"object": "list", "data": page, "has_more": True})

    adapter = await mock_adapter(ZaiAdapter, handler, base_url=BASE)
    try:
        files = await adapter.list()
    finally:
        await adapter.aclose()
    assert [f.id for f in files] == ["a", "b"]
    assert calls == 2


@pytest.mark.parametrize(
    "body",
    [
        {"object": "list", "data": [], "has_more": True},
        {"object": "list", "data": [file_object("a")]},
        {"object": "list", "data": [file_object("a")], "has_more": "yes"},
    ],
)
async def test_list_stops_without_a_clear_has_more(body: dict[str, Any]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return json_response(200, body)

    adapter = await mock_adapter(ZaiAdapter, handler, base_url=BASE)
    try:
        await adapter.list()
    finally:
        await adapter.aclose()
    assert calls == 1


@pytest.mark.parametrize("status", [404, 405])
async def test_retrieve_falls_back_to_list(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/files"):
            data = [file_object("other"), file_object("wanted", bytes=5)]
            return json_response(200, {"object": "list", "data": data, "has_more": False})
        return httpx.Response(status, content=b"404 page not found")

    adapter = await mock_adapter(ZaiAdapter, handler, base_url=BASE)
    try:
        got = await adapter.retrieve("wanted")
        with pytest.raises(ProviderNotFound) as caught:
            await adapter.retrieve("absent")
    finally:
        await adapter.aclose()
    assert (got.id, got.bytes) == ("wanted", 5)
    assert_no_leak(caught.value, "page not found")
