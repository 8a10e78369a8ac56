"""MoonshotAdapter: loopback contract tests against the sandbox, and error mapping units."""

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
from app.providers import MoonshotAdapter, check_purpose
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


async def test_round_trip(adapter: MoonshotAdapter, tmp_path: Path, recorder: Recorder) -> None:
    text = b"Kimi reads this line.\nAnd this one.\n"
    path = write(tmp_path, "notes.txt", text)

    uploaded = await adapter.upload(
        body=FileBody(path), filename="notes.txt", purpose="file-extract", content_type="text/plain"
    )
    assert uploaded.id
    assert uploaded.bytes == len(text)
    assert uploaded.filename == "notes.txt"
    assert uploaded.purpose == "file-extract"
    assert uploaded.status == "ok"
    assert uploaded.created_at > 0

    assert await adapter.retrieve(uploaded.id) == uploaded
    assert uploaded.id in [f.id for f in await adapter.list()]
    assert [f.id for f in await adapter.list(purpose="batch")] == []

    extracted = json.loads(await adapter.content(uploaded.id))
    assert set(extracted) >= {"content", "file_type", "filename", "title", "type"}
    assert "Kimi reads this line." in extracted["content"]
    assert extracted["filename"] == "notes.txt"

    await adapter.delete(uploaded.id)
    with pytest.raises(ProviderNotFound):
        await adapter.retrieve(uploaded.id)
    assert uploaded.id not in [f.id for f in await adapter.list()]
    with pytest.raises(ProviderNotFound):
        await adapter.delete(uploaded.id)

    operations = [(op, out) for _, op, out in recorder.outcomes]
    assert operations[:5] == [
        ("upload", "ok"),
        ("retrieve", "ok"),
        ("list", "ok"),
        ("list", "ok"),
        ("content", "ok"),
    ]
    assert ("retrieve", "provider_file_not_found") in operations
    assert all(p == PROVIDER for p, _, _ in recorder.outcomes)


async def test_unextractable_file_is_extraction_failed(
    adapter: MoonshotAdapter, sandbox_server: str, tmp_path: Path
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
    assert_no_leak(caught.value, "没有解析出内容")
    stats = control(sandbox_server, PROVIDER, "_stats").json()
    assert stats["calls"]["upload"] == 1
    assert stats["calls"]["content"] == 1


async def test_batch_content_is_the_jsonl_itself(adapter: MoonshotAdapter, tmp_path: Path) -> None:
    lines = b'{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{}}\n'
    path = write(tmp_path, "in.jsonl", lines)
    uploaded = await adapter.upload(
        body=FileBody(path), filename="in.jsonl", purpose="batch", content_type="application/jsonl"
    )
    assert uploaded.purpose == "batch"
    assert await adapter.content(uploaded.id) == lines


@pytest.mark.parametrize(
    ("purpose", "native", "name"),
    [("assistants", "file-extract", "a.md"), ("user_data", "file-extract", "a.md")],
)
async def test_gateway_purposes_are_sent_as_native(
    adapter: MoonshotAdapter, tmp_path: Path, purpose: str, native: str, name: str
) -> None:
    path = write(tmp_path, name, b"# title\n")
    uploaded = await adapter.upload(
        body=FileBody(path), filename=name, purpose=purpose, content_type="text/markdown"
    )
    assert uploaded.purpose == native
    assert [f.id for f in await adapter.list(purpose=purpose)] == [uploaded.id]


async def test_vision_uploads_as_image(adapter: MoonshotAdapter, tmp_path: Path) -> None:
    path = write(tmp_path, "pic.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    uploaded = await adapter.upload(
        body=FileBody(path), filename="pic.png", purpose="vision", content_type="image/png"
    )
    assert uploaded.purpose == "image"


async def test_large_file_streams_from_disk(adapter: MoonshotAdapter, tmp_path: Path) -> None:
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB
    path = write(tmp_path, "big.txt", data)
    uploaded = await adapter.upload(
        body=FileBody(path), filename="big.txt", purpose="file-extract", content_type="text/plain"
    )
    assert uploaded.bytes == len(data)


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


async def test_missing_key_is_auth_failure(adapter: MoonshotAdapter) -> None:
    del adapter.client.headers["authorization"]
    with pytest.raises(ProviderAuthFailed) as caught:
        await adapter.list()
    assert_no_leak(caught.value, "Invalid Authentication")


async def test_unknown_file_is_not_found(adapter: MoonshotAdapter) -> None:
    with pytest.raises(ProviderNotFound):
        await adapter.retrieve("cnhgqnucp7f5h7jfb3s0")
    with pytest.raises(ProviderNotFound):
        await adapter.content("cnhgqnucp7f5h7jfb3s0")


async def test_lost_file_is_not_found(
    adapter: MoonshotAdapter, sandbox_server: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "a.txt", b"hello")
    uploaded = await adapter.upload(
        body=FileBody(path), filename="a.txt", purpose="file-extract", content_type="text/plain"
    )
    control(sandbox_server, PROVIDER, f"_lose/{uploaded.id}")
    with pytest.raises(ProviderNotFound):
        await adapter.retrieve(uploaded.id)


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (500, ProviderUnavailable, "provider_unavailable"),
        (502, ProviderUnavailable, "provider_unavailable"),
        (503, ProviderUnavailable, "provider_unavailable"),
        (401, ProviderAuthFailed, "provider_auth_failed"),
        (403, ProviderAuthFailed, "provider_permission_denied"),
        (404, ProviderNotFound, "provider_file_not_found"),
        (400, ProviderRejected, "provider_rejected"),
    ],
)
async def test_status_faults(
    adapter: MoonshotAdapter,
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


async def test_rate_limit_fault_carries_retry_after(
    adapter: MoonshotAdapter, sandbox_server: str
) -> None:
    fault(sandbox_server, PROVIDER, status=429, retry_after=7)
    with pytest.raises(ProviderRateLimited) as caught:
        await adapter.list()
    assert caught.value.retry_after == 7
    assert caught.value.headers["Retry-After"] == "7"
    assert_no_leak(caught.value, "max concurrency", "<")


async def test_fault_count_then_recovers(adapter: MoonshotAdapter, sandbox_server: str) -> None:
    fault(sandbox_server, PROVIDER, status=503, count=1)
    with pytest.raises(ProviderUnavailable):
        await adapter.list()
    assert await adapter.list() == []


async def test_quota_full_fault(
    adapter: MoonshotAdapter, sandbox_server: str, tmp_path: Path
) -> None:
    fault(sandbox_server, PROVIDER, quota_full=True)
    path = write(tmp_path, "a.txt", b"hello")
    with pytest.raises(ProviderQuotaExceeded) as caught:
        await adapter.upload(
            body=FileBody(path), filename="a.txt", purpose="file-extract", content_type="text/plain"
        )
    assert_no_leak(caught.value, "please delete previous uploaded files")


async def test_hang_fault_times_out(
    moonshot_base_url: str, sandbox_server: str, recorder: Recorder
) -> None:
    fault(sandbox_server, PROVIDER, hang=True)
    adapter = make_adapter(
        MoonshotAdapter, moonshot_base_url, observer=recorder, first_byte_timeout=0.3
    )
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await adapter.list()
    finally:
        await adapter.aclose()
    assert caught.value.error_code == "provider_timeout"
    assert recorder.outcomes == [(PROVIDER, "list", "provider_timeout")]


async def test_reset_fault_is_unavailable(adapter: MoonshotAdapter, sandbox_server: str) -> None:
    fault(sandbox_server, PROVIDER, reset=True)
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.list()
    assert caught.value.error_code == "provider_unavailable"


async def test_unreachable_provider_is_unavailable(recorder: Recorder) -> None:
    from tests.support.servers import free_port

    adapter = make_adapter(MoonshotAdapter, f"http://127.0.0.1:{free_port()}/v1", observer=recorder)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await adapter.list()
    finally:
        await adapter.aclose()
    assert "could not be reached" in str(caught.value)


# --- unit tests over httpx.MockTransport -------------------------------------------------


async def test_upload_wire_shape(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(200, {**FILE_OBJECT, "filename": "résumé 1.pdf", "bytes": 4})

    path = write(tmp_path, "stored-blob", b"%PDF")
    adapter = await mock_adapter(MoonshotAdapter, handler)
    try:
        got = await adapter.upload(
            body=FileBody(path),
            filename="résumé 1.pdf",
            purpose="file-extract",
            content_type="application/pdf",
        )
    finally:
        await adapter.aclose()
    assert got.filename == "résumé 1.pdf"
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/v1/files"
    assert request.headers["authorization"] == f"Bearer {SECRET_KEY}"
    purpose, file = parse_multipart(request)
    assert (purpose.name, purpose.filename, purpose.data) == ("purpose", None, b"file-extract")
    assert file.name == "file"
    assert file.filename == "résumé 1.pdf"
    assert file.content_type == "application/pdf"
    assert file.data == b"%PDF"
    assert int(request.headers["content-length"]) == len(request.content)


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


async def test_list_without_data_is_unexpected() -> None:
    adapter = await mock_adapter(MoonshotAdapter, answer(json_response(200, {"object": "list"})))
    try:
        with pytest.raises(ProviderUnavailable, match="unexpected response"):
            await adapter.list()
    finally:
        await adapter.aclose()


async def test_content_returns_raw_bytes() -> None:
    body = b'{"content":"\xe4\xbd\xa0\xe5\xa5\xbd","file_type":"text/plain"}'
    adapter = await mock_adapter(MoonshotAdapter, answer(httpx.Response(200, content=body)))
    try:
        assert await adapter.content("f1") == body
    finally:
        await adapter.aclose()


@pytest.mark.parametrize(
    ("response", "ok"),
    [
        (json_response(200, {"id": "f1", "object": "file", "deleted": True}), True),
        (httpx.Response(204), True),
        (json_response(200, {"id": "f1", "object": "file", "deleted": False}), False),
        (json_response(200, {"id": "f1"}), False),
        (httpx.Response(200, content=b"ok"), False),
    ],
)
async def test_delete_checks_deleted(response: httpx.Response, ok: bool) -> None:
    recorder = Recorder()
    adapter = await mock_adapter(MoonshotAdapter, answer(response), observer=recorder)
    try:
        if ok:
            await adapter.delete("f1")
        else:
            with pytest.raises(ProviderUnavailable):
                await adapter.delete("f1")
    finally:
        await adapter.aclose()
    assert recorder.outcomes[0][:2] == (PROVIDER, "delete")
    assert (recorder.outcomes[0][2] == "ok") is ok


def err(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind}}


CONCURRENCY = (
    "Your account cn-12345678<ak-abcdef123456> request reached max concurrency: 3, "
    "please try again after 4 seconds"
)
ERROR_CASES: list[tuple[str, int, Any, dict[str, str], type[ProviderError], str, str]] = [
    # (id, status, body, headers, error, code, words the message must contain)
    ("too-large", 400, err("File size is too large, max file size is 100MB, please confirm and re-upload the file", "invalid_request_error"), {}, ProviderFileTooLarge, "provider_file_too_large", "too large"),  # noqa: E501
    ("file-count", 400, err("The number of files you have uploaded exceeded the max file count 1000, please delete previous uploaded files", "invalid_request_error"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "file count"),  # noqa: E501
    ("total-size", 400, err("The total size of files you have uploaded exceeded the max total size 10240MB, please delete previous uploaded files", "invalid_request_error"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "total size"),  # noqa: E501
    ("batch-not-jsonl", 400, err("Invalid request: batch files must be .jsonl files", "invalid_request_error"), {}, ProviderRejected, "provider_rejected", "invalid request"),  # noqa: E501
    ("zero-size", 400, err("File size is zero, please confirm and re-upload the file", "invalid_request_error"), {}, ProviderRejected, "provider_rejected", "empty file"),  # noqa: E501
    ("bad-purpose", 400, err("Invalid purpose: only 'file-extract' accepted", "invalid_request_error"), {}, ProviderRejected, "provider_rejected", "unsupported purpose"),  # noqa: E501
    ("bad-purpose-new", 400, err("Invalid purpose: xxx, only file-extract, batch, batch_output, lambda, image and video accepted", "invalid_request_error"), {}, ProviderRejected, "provider_rejected", "unsupported purpose"),  # noqa: E501
    ("extract-400", 400, err("text extract error: 没有解析出内容", "invalid_request_error"), {}, ProviderRejected, "extraction_failed", "extract"),  # noqa: E501
    ("other-400", 400, err("Invalid request: secret-detail-xyz", "invalid_request_error"), {}, ProviderRejected, "provider_rejected", "invalid request"),  # noqa: E501
    ("401-invalid", 401, err("Invalid Authentication", "invalid_authentication_error"), {}, ProviderAuthFailed, "provider_auth_failed", "API key"),  # noqa: E501
    ("401-incorrect", 401, err("Incorrect API key provided", "incorrect_api_key_error"), {}, ProviderAuthFailed, "provider_auth_failed", "API key"),  # noqa: E501
    ("403", 403, err("The API you are accessing is not open", "permission_denied_error"), {}, ProviderAuthFailed, "provider_permission_denied", "permission denied"),  # noqa: E501
    ("404", 404, err("Not found the model or Permission denied", "resource_not_found_error"), {}, ProviderNotFound, "provider_file_not_found", "no such file"),  # noqa: E501
    ("429-overloaded", 429, err("The engine is currently overloaded, please try again later", "engine_overloaded_error"), {}, ProviderRateLimited, "provider_rate_limited", "overloaded"),  # noqa: E501
    ("429-quota", 429, err("You exceeded your current token quota: 0, please check your account balance", "exceeded_current_quota_error"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "balance"),  # noqa: E501
    ("429-suspended", 429, err("Your account is suspended due to insufficient balance, please recharge your account or check your plan and billing details", "exceeded_current_quota_error"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "recharge"),  # noqa: E501
    ("429-concurrency", 429, err(CONCURRENCY, "rate_limit_reached_error"), {}, ProviderRateLimited, "provider_rate_limited", "rate limit"),  # noqa: E501
    ("500-extract", 500, err("Failed to extract file: broken xref", "server_error"), {}, ProviderRejected, "extraction_failed", "extract"),  # noqa: E501
    ("500-extract-task", 500, {"error": {"message": "extract task failed: failed", "type": ""}}, {}, ProviderRejected, "extraction_failed", "extract"),  # noqa: E501
    ("500-state", 500, err("invalid state transition", "unexpected_output"), {}, ProviderUnavailable, "provider_unavailable", "HTTP 500"),  # noqa: E501
    ("503", 503, "<html>Service Unavailable</html>", {"Retry-After": "30"}, ProviderUnavailable, "provider_unavailable", "unavailable"),  # noqa: E501
    ("502-cloudflare", 502, "<html>Bad gateway cf-ray</html>", {}, ProviderUnavailable, "provider_unavailable", "HTTP 502"),  # noqa: E501
    ("413-proxy", 413, "<html>Request Entity Too Large</html>", {}, ProviderFileTooLarge, "provider_file_too_large", "too large"),  # noqa: E501
    ("418", 418, err("teapot", "x"), {}, ProviderRejected, "provider_rejected", "HTTP 418"),
    ("408", 408, "", {}, ProviderUnavailable, "provider_unavailable", "HTTP 408"),
    ("599", 599, err("weird", "x"), {}, ProviderUnavailable, "provider_unavailable", "HTTP 599"),
    ("400-malformed", 400, "{not json", {}, ProviderRejected, "provider_rejected", "rejected"),
    ("429-malformed", 429, '{"error": "flat"}', {}, ProviderRateLimited, "provider_rate_limited", "retry"),  # noqa: E501
    ("401-list-body", 401, "[1, 2]", {}, ProviderAuthFailed, "provider_auth_failed", "key"),
    ("500-null-message", 500, {"error": {"message": None}}, {}, ProviderUnavailable, "provider_unavailable", "HTTP 500"),  # noqa: E501
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
        MoonshotAdapter,
        answer(httpx.Response(status, content=content, headers=headers)),
        observer=recorder,
    )
    try:
        with pytest.raises(ProviderError) as caught:
            await adapter.content("cnhgqnucp7f5h7jfb3s0")
    finally:
        await adapter.aclose()
    exc = caught.value
    assert type(exc) is error
    assert exc.error_code == code
    assert exc.provider == PROVIDER
    assert "moonshot" in exc.message
    assert words in exc.message
    raw = body["error"]["message"] if isinstance(body, dict) else body
    leaks = [raw] if raw and len(raw) > 12 else []
    assert_no_leak(exc, *leaks, "cn-12345678", "ak-abcdef123456", "secret-detail-xyz")
    assert recorder.outcomes == [(PROVIDER, "content", code)]


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


def test_raise_for_error_ignores_success() -> None:
    adapter = make_adapter(MoonshotAdapter, "https://provider.test/v1")
    adapter.raise_for_error(httpx.Response(200))


# --- check_purpose -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("purpose", "filename", "size", "native"),
    [
        ("file-extract", "report.PDF", 1, "file-extract"),
        ("file-extract", "scan.jpeg", 99 * MiB, "file-extract"),
        ("file-extract", "main.go", 10, "file-extract"),
        ("file-extract", "App.tsx", 10, "file-extract"),
        ("file-extract", "C:\\Users\\me\\notes.md", 10, "file-extract"),
        ("file-extract", "exact.txt", 100 * MiB, "file-extract"),
        ("assistants", "a.docx", 10, "file-extract"),
        ("user_data", "a.csv", 10, "file-extract"),
        ("batch", "requests.jsonl", 100 * MiB, "batch"),
        ("vision", "photo.webp", 10, "image"),
    ],
)
def test_check_purpose_accepts(purpose: str, filename: str, size: int, native: str) -> None:
    rule = check_purpose(MoonshotAdapter, purpose=purpose, filename=filename, size=size)
    assert rule.native == native
    assert (
        check_purpose(
            make_adapter(MoonshotAdapter, "https://provider.test/v1"),
            purpose=purpose,
            filename=filename,
            size=size,
        )
        == rule
    )


@pytest.mark.parametrize(
    ("purpose", "filename", "size", "param", "message"),
    [
        ("code-interpreter", "a.py", 10, "purpose", "moonshot does not accept purpose 'code-interpreter'; it accepts: assistants, batch, file-extract, user_data, vision."),  # noqa: E501
        ("fine-tune", "a.jsonl", 10, "purpose", "moonshot does not accept purpose 'fine-tune'"),
        ("file-extract", "setup.exe", 10, "file", "moonshot does not accept '.exe' files for purpose 'file-extract'"),  # noqa: E501
        ("file-extract", "Makefile", 10, "file", "moonshot does not accept files without an extension for purpose 'file-extract'"),  # noqa: E501
        ("batch", "requests.json", 10, "file", "allowed: .jsonl"),
        ("vision", "clip.mp4", 10, "file", "moonshot does not accept '.mp4' files for purpose 'vision'"),  # noqa: E501
        ("file-extract", "big.pdf", 100 * MiB + 1, "file", "moonshot accepts at most 100 MiB for purpose 'file-extract' (this file is 100.0 MiB)"),  # noqa: E501
        ("batch", "big.jsonl", 120 * MiB, "file", "(this file is 120.0 MiB)"),
        ("file-extract", "empty.txt", 0, "file", "empty files"),
    ],
)  # fmt: skip
def test_check_purpose_refuses(
    purpose: str, filename: str, size: int, param: str, message: str
) -> None:
    with pytest.raises(UnsupportedPurpose) as caught:
        check_purpose(MoonshotAdapter, purpose=purpose, filename=filename, size=size)
    assert caught.value.param == param
    assert message in caught.value.message
    assert caught.value.status_code == 400
