"""ZaiAdapter: loopback contract tests against the sandbox, and error mapping units."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.errors import (
    ProviderAuthFailed,
    ProviderError,
    ProviderFileTooLarge,
    ProviderNotFound,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    UnsupportedPurpose,
)
from app.providers import ZaiAdapter, check_purpose
from app.providers import zai as zai_module
from app.providers.base import MiB
from tests.providers import (
    SECRET_KEY,
    Recorder,
    answer,
    assert_no_leak,
    control,
    fault,
    json_response,
    make_adapter,
    mock_adapter,
    parse_multipart,
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


async def test_round_trip(adapter: ZaiAdapter, tmp_path: Path, recorder: Recorder) -> None:
    text = b"city,temp\nBeijing,21\n"
    path = write(tmp_path, "weather.csv", text)

    uploaded = await adapter.upload(
        body=FileBody(path), filename="weather.csv", purpose="file-extract", content_type="text/csv"
    )
    assert uploaded.id
    assert uploaded.bytes == len(text)
    assert uploaded.filename == "weather.csv"
    assert uploaded.purpose == "file-extract"

    assert await adapter.retrieve(uploaded.id) == uploaded
    assert [f.id for f in await adapter.list()] == [uploaded.id]
    assert [f.id for f in await adapter.list(purpose="file-extract")] == [uploaded.id]
    assert await adapter.list(purpose="batch") == []

    extracted = json.loads(await adapter.content(uploaded.id))
    assert set(extracted) >= {"content", "file_type", "filename", "title", "type"}
    assert "Beijing" in extracted["content"]

    await adapter.delete(uploaded.id)
    with pytest.raises(ProviderNotFound):
        await adapter.retrieve(uploaded.id)
    with pytest.raises(ProviderNotFound):
        await adapter.content(uploaded.id)
    with pytest.raises(ProviderNotFound):
        await adapter.delete(uploaded.id)
    assert await adapter.list() == []
    assert all(p == PROVIDER for p, _, _ in recorder.outcomes)
    assert recorder.outcomes[0] == (PROVIDER, "upload", "ok")


async def test_unextractable_file_is_extraction_failed(
    adapter: ZaiAdapter, sandbox_server: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "scan.pdf", b"%PDF-1.7\n\xff\xfe\x00\x81binary")
    uploaded = await adapter.upload(
        body=FileBody(path),
        filename="scan.pdf",
        purpose="file-extract",
        content_type="application/pdf",
    )
    with pytest.raises(ProviderRejected) as caught:
        await adapter.content(uploaded.id)
    assert caught.value.error_code == "extraction_failed"
    stats = control(sandbox_server, PROVIDER, "_stats").json()
    assert stats["calls"]["upload"] == 1
    assert stats["calls"]["content"] == 1


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


async def test_batch_content_is_the_jsonl_itself(adapter: ZaiAdapter, tmp_path: Path) -> None:
    lines = b'{"custom_id":"1","method":"POST","url":"/v4/chat/completions","body":{}}\n'
    path = write(tmp_path, "in.jsonl", lines)
    uploaded = await adapter.upload(
        body=FileBody(path), filename="in.jsonl", purpose="batch", content_type="application/jsonl"
    )
    assert uploaded.purpose == "batch"
    assert await adapter.content(uploaded.id) == lines


@pytest.mark.parametrize(
    ("purpose", "filename", "native"),
    [
        ("assistants", "a.pdf", "file-extract"),
        ("code-interpreter", "data.csv", "code-interpreter"),
        ("agent", "glossary.txt", "agent"),
        ("fine-tune", "train.jsonl", "fine-tune"),
    ],
)
async def test_purposes_upload_natively(
    adapter: ZaiAdapter, tmp_path: Path, purpose: str, filename: str, native: str
) -> None:
    path = write(tmp_path, filename, b'{"a":1}\n')
    uploaded = await adapter.upload(
        body=FileBody(path),
        filename=filename,
        purpose=purpose,
        content_type="application/octet-stream",
    )
    assert uploaded.purpose == native
    assert [f.id for f in await adapter.list(purpose=purpose)] == [uploaded.id]


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


async def test_large_file_streams_from_disk(adapter: ZaiAdapter, tmp_path: Path) -> None:
    data = b'{"x":"' + b"y" * (3 * MiB) + b'"}\n'
    path = write(tmp_path, "big.jsonl", data)
    uploaded = await adapter.upload(
        body=FileBody(path), filename="big.jsonl", purpose="batch", content_type="application/jsonl"
    )
    assert uploaded.bytes == len(data)


async def test_missing_key_is_auth_failure(adapter: ZaiAdapter) -> None:
    del adapter.client.headers["authorization"]
    with pytest.raises(ProviderAuthFailed) as caught:
        await adapter.list()
    assert caught.value.error_code == "provider_auth_failed"
    assert_no_leak(caught.value, "Authorization Token")


async def test_unknown_file_is_not_found(adapter: ZaiAdapter) -> None:
    missing = "1741136989_8dd96cbee6274251b7e4c9568779bd6a"
    with pytest.raises(ProviderNotFound):
        await adapter.retrieve(missing)
    with pytest.raises(ProviderNotFound):
        await adapter.content(missing)


async def test_lost_file_is_not_found(
    adapter: ZaiAdapter, sandbox_server: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "a.jsonl", b"{}\n")
    uploaded = await adapter.upload(
        body=FileBody(path), filename="a.jsonl", purpose="batch", content_type="application/jsonl"
    )
    control(sandbox_server, PROVIDER, f"_lose/{uploaded.id}")
    with pytest.raises(ProviderNotFound):
        await adapter.retrieve(uploaded.id)


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


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (500, ProviderUnavailable, "provider_unavailable"),
        (503, ProviderUnavailable, "provider_unavailable"),
        (401, ProviderAuthFailed, "provider_auth_failed"),
        (434, ProviderAuthFailed, "provider_permission_denied"),
        (435, ProviderFileTooLarge, "provider_file_too_large"),
        (404, ProviderNotFound, "provider_file_not_found"),
        (400, ProviderRejected, "provider_rejected"),
    ],
)
async def test_status_faults(
    adapter: ZaiAdapter,
    sandbox_server: str,
    recorder: Recorder,
    status: int,
    error: type[ProviderError],
    code: str,
) -> None:
    fault(sandbox_server, PROVIDER, status=status)
    with pytest.raises(error) as caught:
        await adapter.list()
    assert caught.value.error_code == code
    assert caught.value.provider == PROVIDER
    assert_no_leak(caught.value)
    assert recorder.outcomes == [(PROVIDER, "list", code)]


async def test_rate_limit_fault(adapter: ZaiAdapter, sandbox_server: str) -> None:
    fault(sandbox_server, PROVIDER, status=429, retry_after=5)
    with pytest.raises(ProviderRateLimited) as caught:
        await adapter.list()
    assert caught.value.retry_after == 5
    assert_no_leak(caught.value)


async def test_quota_full_fault(adapter: ZaiAdapter, sandbox_server: str, tmp_path: Path) -> None:
    fault(sandbox_server, PROVIDER, quota_full=True)
    path = write(tmp_path, "a.jsonl", b"{}\n")
    with pytest.raises(ProviderQuotaExceeded) as caught:
        await adapter.upload(
            body=FileBody(path),
            filename="a.jsonl",
            purpose="batch",
            content_type="application/jsonl",
        )
    assert_no_leak(caught.value)


async def test_hang_fault_times_out(
    zai_base_url: str, sandbox_server: str, recorder: Recorder
) -> None:
    fault(sandbox_server, PROVIDER, hang=True)
    adapter = make_adapter(ZaiAdapter, zai_base_url, observer=recorder, first_byte_timeout=0.3)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await adapter.list()
    finally:
        await adapter.aclose()
    assert caught.value.error_code == "provider_timeout"
    assert recorder.outcomes == [(PROVIDER, "list", "provider_timeout")]


async def test_reset_fault_is_unavailable(
    adapter: ZaiAdapter, sandbox_server: str, recorder: Recorder
) -> None:
    fault(sandbox_server, PROVIDER, reset=True)
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.list()
    assert caught.value.error_code == "provider_unavailable"
    assert recorder.outcomes == [(PROVIDER, "list", "provider_unavailable")]


# --- unit tests over httpx.MockTransport -------------------------------------------------


async def test_upload_wire_shape(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(200, file_object("1741136989_8dd9", filename="季度 报告.xlsx"))

    path = write(tmp_path, "blob", b"PK\x03\x04")
    adapter = await mock_adapter(ZaiAdapter, handler, base_url=BASE)
    try:
        got = await adapter.upload(
            body=FileBody(path),
            filename="季度 报告.xlsx",
            purpose="user_data",
            content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
    finally:
        await adapter.aclose()
    assert got.filename == "季度 报告.xlsx"
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/api/paas/v4/files"
    assert request.headers["authorization"] == f"Bearer {SECRET_KEY}"
    purpose, file = parse_multipart(request)
    assert (purpose.name, purpose.filename, purpose.data) == ("purpose", None, b"file-extract")
    assert (file.name, file.filename) == ("file", "季度 报告.xlsx")
    assert file.content_type == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert file.data == b"PK\x03\x04"


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


async def test_content_returns_raw_bytes() -> None:
    body = b'{"custom_id":"1"}\n{"custom_id":"2"}\n'
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, content=body, headers={"content-type": "application/binary"})

    adapter = await mock_adapter(ZaiAdapter, handler, base_url=BASE)
    try:
        assert await adapter.content("1741136989_8dd9") == body
    finally:
        await adapter.aclose()
    assert seen == ["/api/paas/v4/files/1741136989_8dd9/content"]


@pytest.mark.parametrize(
    ("response", "ok"),
    [
        (json_response(200, {"id": "f1", "object": "file", "deleted": True}), True),
        (httpx.Response(204), True),
        (json_response(200, {"id": "f1", "object": "file", "deleted": False}), False),
        (httpx.Response(200, content=b"<html>"), False),
    ],
)
async def test_delete_checks_deleted(response: httpx.Response, ok: bool) -> None:
    adapter = await mock_adapter(ZaiAdapter, answer(response), base_url=BASE)
    try:
        if ok:
            await adapter.delete("f1")
        else:
            with pytest.raises(ProviderUnavailable, match="zai"):
                await adapter.delete("f1")
    finally:
        await adapter.aclose()


def err(code: str | int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


ERROR_CASES: list[tuple[str, int, Any, dict[str, str], type[ProviderError], str, str]] = [
    # (id, status, body, headers, error, code, words the message must contain)
    ("401-1000", 401, err("1000", "Authentication failed for key"), {}, ProviderAuthFailed, "provider_auth_failed", "API key"),  # noqa: E501
    ("401-1002-cn", 401, err("1002", "Authorization Token非法，请确认Authorization Token正确传递。"), {}, ProviderAuthFailed, "provider_auth_failed", "code 1002"),  # noqa: E501, RUF001
    ("401-1003", 401, err(1003, "Token expired"), {}, ProviderAuthFailed, "provider_auth_failed", "authentication failed"),  # noqa: E501
    ("401-1004", 401, err("1004", "Auth header invalid"), {}, ProviderAuthFailed, "provider_auth_failed", "key"),  # noqa: E501
    ("401-no-body", 401, "", {}, ProviderAuthFailed, "provider_auth_failed", "key"),
    ("434", 434, err("1220", "You do not have permission to access the files API"), {}, ProviderAuthFailed, "provider_permission_denied", "files API"),  # noqa: E501
    ("434-no-code", 434, "forbidden", {}, ProviderAuthFailed, "provider_permission_denied", "permission denied"),  # noqa: E501
    ("435", 435, err("1210", "File size exceeds 100MB"), {}, ProviderFileTooLarge, "provider_file_too_large", "too large"),  # noqa: E501
    ("429-1113", 429, err("1113", "余额不足或无可用资源包,请充值。"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "balance"),  # noqa: E501
    ("429-1110", 429, err("1110", "Your account is inactive"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "code 1110"),  # noqa: E501
    ("429-1121", 429, err(1121, "Account locked for violations"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "account"),  # noqa: E501
    ("429-1302", 429, err("1302", "High concurrency usage of this API, please reduce"), {}, ProviderRateLimited, "provider_rate_limited", "code 1302"),  # noqa: E501
    ("429-1303", 429, err("1303", "High frequency usage of this API"), {"Retry-After": "3"}, ProviderRateLimited, "provider_rate_limited", "rate limit"),  # noqa: E501
    ("429-1304", 429, err("1304", "Daily call limit reached for this API"), {}, ProviderRateLimited, "provider_rate_limited", "retry"),  # noqa: E501
    ("429-1305", 429, err("1305", "The service may be temporarily overloaded"), {}, ProviderRateLimited, "provider_rate_limited", "retry"),  # noqa: E501
    ("429-1308", 429, err("1308", "Usage limit reached for 5 hour, resets at 2026-01-01 10:00"), {}, ProviderRateLimited, "provider_rate_limited", "code 1308"),  # noqa: E501
    ("429-1310", 429, err("1310", "Weekly/Monthly limit exhausted"), {}, ProviderRateLimited, "provider_rate_limited", "code 1310"),  # noqa: E501
    ("429-no-code", 429, "Too Many Requests", {}, ProviderRateLimited, "provider_rate_limited", "rate limit"),  # noqa: E501
    ("404", 404, err("1214", "file id not exist: 17411_abc"), {}, ProviderNotFound, "provider_file_not_found", "no such file"),  # noqa: E501
    ("400-1214", 400, err("1214", "Input cannot be empty"), {}, ProviderRejected, "provider_rejected", "invalid parameters"),  # noqa: E501
    ("400-1301", 400, err("1301", "System detected potentially unsafe content"), {}, ProviderRejected, "provider_rejected", "content policy"),  # noqa: E501
    ("400-other", 400, err("1299", "Something odd, request id abc"), {}, ProviderRejected, "provider_rejected", "invalid request"),  # noqa: E501
    ("400-1234", 400, err("1234", "Network error, request id abc"), {}, ProviderUnavailable, "provider_unavailable", "code 1234"),  # noqa: E501
    ("400-file-count", 400, err("1210", "The number of files for purpose file-extract has reached the limit of 100; please delete unused files and try again"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "file count"),  # noqa: E501
    ("400-extract", 400, err("1214", "Failed to extract text from the file"), {}, ProviderRejected, "extraction_failed", "extract"),  # noqa: E501
    ("400-purpose-size", 400, err("1210", "File size exceeds the 50MB limit for purpose file-extract"), {}, ProviderRejected, "provider_rejected", "invalid parameters"),  # noqa: E501
    ("400-1113", 400, err("1113", "In arrears"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "balance"),  # noqa: E501
    ("400-top-level", 400, {"code": 1214, "msg": "bad field", "success": False}, {}, ProviderRejected, "provider_rejected", "invalid parameters"),  # noqa: E501
    ("500", 500, err("500", "Internal error, request id 20250101xyz"), {}, ProviderUnavailable, "provider_unavailable", "HTTP 500"),  # noqa: E501
    ("502-html", 502, "<html>bad gateway</html>", {}, ProviderUnavailable, "provider_unavailable", "HTTP 502"),  # noqa: E501
    ("503-retry", 503, err("1305", "Server flow exceeded"), {"Retry-After": "20"}, ProviderUnavailable, "provider_unavailable", "unavailable"),  # noqa: E501
    ("504", 504, "", {}, ProviderUnavailable, "provider_unavailable", "HTTP 504"),
    ("413-proxy", 413, "<html>413</html>", {}, ProviderFileTooLarge, "provider_file_too_large", "100 MiB"),  # noqa: E501
    ("409", 409, err("9999", "conflict thing"), {}, ProviderRejected, "provider_rejected", "rejected"),  # noqa: E501
    ("malformed", 400, '{"error": {"code": ', {}, ProviderRejected, "provider_rejected", "invalid request"),  # noqa: E501
    ("bool-code", 429, {"error": {"code": True}}, {}, ProviderRateLimited, "provider_rate_limited", "retry"),  # noqa: E501
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "code", "words"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
async def test_error_mapping(
    status: int,
    body: Any,
    headers: dict[str, str],
    error: type[ProviderError],
    code: str,
    words: str,
) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    recorder = Recorder()
    adapter = await mock_adapter(
        ZaiAdapter,
        answer(httpx.Response(status, content=content, headers=headers)),
        base_url=BASE,
        observer=recorder,
    )
    try:
        with pytest.raises(ProviderError) as caught:
            await adapter.content("1741136989_8dd9")
    finally:
        await adapter.aclose()
    exc = caught.value
    assert type(exc) is error
    assert exc.error_code == code
    assert exc.provider == PROVIDER
    assert exc.message.startswith("zai ")
    assert words in exc.message
    inner = body.get("error", body) if isinstance(body, dict) else {}
    raw = inner.get("message") or inner.get("msg") or body
    leaks = [raw] if isinstance(raw, str) and len(raw) > 12 else []
    assert_no_leak(exc, *leaks, "request id", "17411_abc")
    assert recorder.outcomes == [(PROVIDER, "content", code)]
    if "Retry-After" in headers:
        assert exc.retry_after == float(headers["Retry-After"])


# --- check_purpose -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("purpose", "filename", "size", "native"),
    [
        ("file-extract", "report.pdf", 50 * MiB, "file-extract"),
        ("file-extract", "scan.PNG", 5 * MiB, "file-extract"),
        ("file-extract", "table.csv", 1, "file-extract"),
        ("assistants", "a.pptx", 10, "file-extract"),
        ("user_data", "a.xls", 10, "file-extract"),
        ("batch", "in.jsonl", 100 * MiB, "batch"),
        ("code-interpreter", "data.txt", 20 * MiB, "code-interpreter"),
        ("code-interpreter", "chart.jpg", 5 * MiB, "code-interpreter"),
        ("agent", "glossary.xlsx", 100 * MiB, "agent"),
        ("agent", "photo.jpg", 60 * MiB, "agent"),
        ("fine-tune", "train.jsonl", 100 * MiB, "fine-tune"),
    ],
)
def test_check_purpose_accepts(purpose: str, filename: str, size: int, native: str) -> None:
    assert check_purpose(ZaiAdapter, purpose=purpose, filename=filename, size=size).native == (
        native
    )


@pytest.mark.parametrize(
    ("purpose", "filename", "size", "param", "message"),
    [
        ("vision", "a.png", 10, "purpose", "zai does not accept purpose 'vision'; it accepts: agent, assistants, batch, code-interpreter, file-extract, fine-tune, user_data."),  # noqa: E501
        ("image", "a.png", 10, "purpose", "zai does not accept purpose 'image'"),
        ("file-extract", "big.pdf", 60 * MiB, "file", "zai accepts at most 50 MiB for purpose 'file-extract' (this file is 60.0 MiB)"),  # noqa: E501
        ("file-extract", "big.jpeg", 5 * MiB + 1, "file", "zai accepts at most 5 MiB for images with purpose 'file-extract' (this file is 5.0 MiB)"),  # noqa: E501
        ("file-extract", "notes.txt", 10, "file", "zai does not accept '.txt' files for purpose 'file-extract'; allowed: .csv, .doc, .docx, .jpeg, .jpg, .pdf, .png, .ppt, .pptx, .xls, .xlsx."),  # noqa: E501
        ("file-extract", "main.py", 10, "file", "'.py' files"),
        ("code-interpreter", "big.csv", 20 * MiB + 1, "file", "at most 20 MiB"),
        ("agent", "deck.pptx", 10, "file", "zai does not accept '.pptx' files for purpose 'agent'"),
        ("agent", "huge.pdf", 100 * MiB + 1, "file", "at most 100 MiB"),
        ("batch", "in.csv", 10, "file", "allowed: .jsonl"),
        ("fine-tune", "train.json", 10, "file", "'.json' files"),
        ("batch", "empty.jsonl", 0, "file", "empty files"),
    ],
)  # fmt: skip
def test_check_purpose_refuses(
    purpose: str, filename: str, size: int, param: str, message: str
) -> None:
    with pytest.raises(UnsupportedPurpose) as caught:
        check_purpose(ZaiAdapter, purpose=purpose, filename=filename, size=size)
    assert caught.value.param == param
    assert message in caught.value.message
    assert caught.value.error_code == "unsupported_purpose"
