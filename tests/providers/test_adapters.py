"""Behaviour both adapters share, each test run for Moonshot and for Z.ai: loopback contract
tests against the sandbox, then error mapping and wire units, then check_purpose."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.errors import (
    ProviderAccountFull,
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
from app.providers import MoonshotAdapter, ZaiAdapter, check_purpose
from app.providers.base import MiB, ProviderAdapter, ProviderFile
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


@dataclass(frozen=True)
class Sample:
    """A file to upload: its name, bytes, gateway purpose and content type."""

    filename: str
    data: bytes
    purpose: str
    content_type: str


@dataclass(frozen=True)
class Provider:
    """One adapter and what its provider answers differently."""

    name: str
    cls: type[ProviderAdapter]
    base_url_fixture: str  # the conftest fixture naming its sandbox base URL
    api_path: str  # the path of the base URL on the provider's own host
    file_id: str  # a well-formed id the provider never issued
    status: str | None  # `status` of a freshly uploaded file
    extract: Sample  # a file-extract upload with extractable text ...
    extract_word: str  # ... and a word its extracted content holds
    small: Sample  # any small accepted upload
    large: Sample  # a 3 MiB upload
    batch_line: bytes  # one JSONL line of a batch input file
    unauthenticated: str  # the sandbox's message for a request without a key
    extract_error: str  # the sandbox's message when nothing can be extracted
    quota_error: str  # the sandbox's message when uploads are over quota

    @property
    def mock_base_url(self) -> str:
        return f"https://provider.test{self.api_path}"


PROVIDERS = {
    "moonshot": Provider(
        name="moonshot",
        cls=MoonshotAdapter,
        base_url_fixture="moonshot_base_url",
        api_path="/v1",
        file_id="cnhgqnucp7f5h7jfb3s0",
        status="ok",
        extract=Sample(
            "notes.txt", b"Kimi reads this line.\nAnd this one.\n", "file-extract", "text/plain"
        ),
        extract_word="Kimi reads this line.",
        small=Sample("a.txt", b"hello", "file-extract", "text/plain"),
        large=Sample("big.txt", bytes(range(256)) * (12 * 1024), "file-extract", "text/plain"),
        batch_line=b'{"custom_id":"1","method":"POST","url":"/v1/chat/completions","body":{}}\n',
        unauthenticated="Invalid Authentication",
        extract_error="没有解析出内容",
        quota_error="please delete previous uploaded files",
    ),
    "zai": Provider(
        name="zai",
        cls=ZaiAdapter,
        base_url_fixture="zai_base_url",
        api_path="/api/paas/v4",
        file_id="1741136989_8dd96cbee6274251b7e4c9568779bd6a",
        status=None,
        extract=Sample("weather.csv", b"city,temp\nBeijing,21\n", "file-extract", "text/csv"),
        extract_word="Beijing",
        small=Sample("a.jsonl", b"{}\n", "batch", "application/jsonl"),
        large=Sample(
            "big.jsonl", b'{"x":"' + b"y" * (3 * MiB) + b'"}\n', "batch", "application/jsonl"
        ),
        batch_line=b'{"custom_id":"1","method":"POST","url":"/v4/chat/completions","body":{}}\n',
        unauthenticated="Authorization Token",
        extract_error="Failed to extract text from the file",
        quota_error="Please recharge",
    ),
}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> Provider:
    return PROVIDERS[request.param]


@pytest.fixture
def base_url(provider: Provider, sandbox_server: str, request: pytest.FixtureRequest) -> str:
    """The provider's sandbox base URL, its state fresh for this test."""
    control(sandbox_server, provider.name, "_reset")
    url: str = request.getfixturevalue(provider.base_url_fixture)
    return url


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def adapter(
    provider: Provider, base_url: str, recorder: Recorder
) -> AsyncIterator[ProviderAdapter]:
    adapter = make_adapter(provider.cls, base_url, observer=recorder)
    assert isinstance(adapter, provider.cls)
    yield adapter
    await adapter.aclose()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def put(adapter: ProviderAdapter, tmp_path: Path, sample: Sample) -> ProviderFile:
    path = write(tmp_path, sample.filename, sample.data)
    return await adapter.upload(
        body=FileBody(path),
        filename=sample.filename,
        purpose=sample.purpose,
        content_type=sample.content_type,
    )


# --- loopback contract tests -------------------------------------------------------------


async def test_round_trip(
    provider: Provider, adapter: ProviderAdapter, tmp_path: Path, recorder: Recorder
) -> None:
    sample = provider.extract
    uploaded = await put(adapter, tmp_path, sample)
    assert uploaded.id
    assert uploaded.bytes == len(sample.data)
    assert uploaded.filename == sample.filename
    assert uploaded.purpose == "file-extract"
    assert uploaded.status == provider.status
    assert uploaded.created_at > 0

    assert await adapter.retrieve(uploaded.id) == uploaded
    assert [f.id for f in await adapter.list()] == [uploaded.id]
    assert [f.id for f in await adapter.list(purpose="file-extract")] == [uploaded.id]
    assert await adapter.list(purpose="batch") == []

    extracted = json.loads(await adapter.content(uploaded.id))
    assert set(extracted) >= {"content", "file_type", "filename", "title", "type"}
    assert provider.extract_word in extracted["content"]
    assert extracted["filename"] == sample.filename

    await adapter.delete(uploaded.id)
    with pytest.raises(ProviderNotFound):
        await adapter.retrieve(uploaded.id)
    with pytest.raises(ProviderNotFound):
        await adapter.content(uploaded.id)
    assert await adapter.list() == []
    with pytest.raises(ProviderNotFound):
        await adapter.delete(uploaded.id)

    operations = [(op, out) for _, op, out in recorder.outcomes]
    assert operations[:6] == [
        ("upload", "ok"),
        ("retrieve", "ok"),
        ("list", "ok"),
        ("list", "ok"),
        ("list", "ok"),
        ("content", "ok"),
    ]
    assert ("retrieve", "provider_file_not_found") in operations
    assert all(p == provider.name for p, _, _ in recorder.outcomes)


async def test_unextractable_file_is_extraction_failed(
    provider: Provider, adapter: ProviderAdapter, sandbox_server: str, tmp_path: Path
) -> None:
    binary = b"%PDF-1.7\n\xff\xfe\x00\x81binary"
    sample = Sample("scan.pdf", binary, "file-extract", "application/pdf")
    uploaded = await put(adapter, tmp_path, sample)
    with pytest.raises(ProviderRejected) as caught:
        await adapter.content(uploaded.id)
    assert caught.value.error_code == "extraction_failed"
    assert_no_leak(caught.value, provider.extract_error)
    stats = control(sandbox_server, provider.name, "_stats").json()
    assert stats["calls"]["upload"] == 1
    assert stats["calls"]["content"] == 1


async def test_batch_content_is_the_jsonl_itself(
    provider: Provider, adapter: ProviderAdapter, tmp_path: Path
) -> None:
    sample = Sample("in.jsonl", provider.batch_line, "batch", "application/jsonl")
    uploaded = await put(adapter, tmp_path, sample)
    assert uploaded.purpose == "batch"
    assert await adapter.content(uploaded.id) == provider.batch_line


@pytest.mark.parametrize(
    ("provider", "purpose", "filename", "data", "content_type", "native"),
    [
        ("moonshot", "assistants", "a.md", b"# title\n", "text/markdown", "file-extract"),
        ("moonshot", "user_data", "a.md", b"# title\n", "text/markdown", "file-extract"),
        ("zai", "assistants", "a.pdf", b'{"a":1}\n', "application/octet-stream", "file-extract"),
        ("zai", "code-interpreter", "data.csv", b'{"a":1}\n', "application/octet-stream", "code-interpreter"),  # noqa: E501
        ("zai", "agent", "glossary.txt", b'{"a":1}\n', "application/octet-stream", "agent"),
        ("zai", "fine-tune", "train.jsonl", b'{"a":1}\n', "application/octet-stream", "fine-tune"),
    ],
    indirect=["provider"],
)  # fmt: skip
async def test_gateway_purposes_are_sent_as_native(
    adapter: ProviderAdapter,
    tmp_path: Path,
    purpose: str,
    filename: str,
    data: bytes,
    content_type: str,
    native: str,
) -> None:
    uploaded = await put(adapter, tmp_path, Sample(filename, data, purpose, content_type))
    assert uploaded.purpose == native
    assert [f.id for f in await adapter.list(purpose=purpose)] == [uploaded.id]


async def test_large_file_streams_from_disk(
    provider: Provider, adapter: ProviderAdapter, tmp_path: Path
) -> None:
    uploaded = await put(adapter, tmp_path, provider.large)
    assert len(provider.large.data) >= 3 * MiB
    assert uploaded.bytes == len(provider.large.data)


async def test_missing_key_is_auth_failure(provider: Provider, adapter: ProviderAdapter) -> None:
    del adapter.client.headers["authorization"]
    with pytest.raises(ProviderAuthFailed) as caught:
        await adapter.list()
    assert caught.value.error_code == "provider_auth_failed"
    assert_no_leak(caught.value, provider.unauthenticated)


async def test_unknown_file_is_not_found(provider: Provider, adapter: ProviderAdapter) -> None:
    with pytest.raises(ProviderNotFound):
        await adapter.retrieve(provider.file_id)
    with pytest.raises(ProviderNotFound):
        await adapter.content(provider.file_id)


async def test_lost_file_is_not_found(
    provider: Provider, adapter: ProviderAdapter, sandbox_server: str, tmp_path: Path
) -> None:
    uploaded = await put(adapter, tmp_path, provider.small)
    control(sandbox_server, provider.name, f"_lose/{uploaded.id}")
    with pytest.raises(ProviderNotFound):
        await adapter.retrieve(uploaded.id)


@pytest.mark.parametrize(
    ("provider", "status", "error", "code"),
    [
        ("moonshot", 500, ProviderUnavailable, "provider_unavailable"),
        ("moonshot", 502, ProviderUnavailable, "provider_unavailable"),
        ("moonshot", 503, ProviderUnavailable, "provider_unavailable"),
        ("moonshot", 401, ProviderAuthFailed, "provider_auth_failed"),
        ("moonshot", 403, ProviderAuthFailed, "provider_permission_denied"),
        ("moonshot", 404, ProviderNotFound, "provider_file_not_found"),
        ("moonshot", 400, ProviderRejected, "provider_rejected"),
        ("zai", 500, ProviderUnavailable, "provider_unavailable"),
        ("zai", 503, ProviderUnavailable, "provider_unavailable"),
        ("zai", 401, ProviderAuthFailed, "provider_auth_failed"),
        ("zai", 434, ProviderAuthFailed, "provider_permission_denied"),
        ("zai", 435, ProviderFileTooLarge, "provider_file_too_large"),
        ("zai", 404, ProviderNotFound, "provider_file_not_found"),
        ("zai", 400, ProviderRejected, "provider_rejected"),
    ],
    indirect=["provider"],
)
async def test_status_faults(
    provider: Provider,
    adapter: ProviderAdapter,
    sandbox_server: str,
    recorder: Recorder,
    status: int,
    error: type[ProviderError],
    code: str,
) -> None:
    fault(sandbox_server, provider.name, status=status)
    with pytest.raises(error) as caught:
        await adapter.list()
    assert caught.value.error_code == code
    assert caught.value.provider == provider.name
    assert_no_leak(caught.value)
    assert recorder.outcomes == [(provider.name, "list", code)]


@pytest.mark.parametrize("retry_after", [5, 7])
async def test_rate_limit_fault_carries_retry_after(
    provider: Provider, adapter: ProviderAdapter, sandbox_server: str, retry_after: int
) -> None:
    fault(sandbox_server, provider.name, status=429, retry_after=retry_after)
    with pytest.raises(ProviderRateLimited) as caught:
        await adapter.list()
    assert caught.value.retry_after == retry_after
    assert caught.value.headers["Retry-After"] == str(retry_after)
    assert_no_leak(caught.value, "max concurrency", "<")


async def test_fault_count_then_recovers(
    provider: Provider, adapter: ProviderAdapter, sandbox_server: str
) -> None:
    fault(sandbox_server, provider.name, status=503, count=1)
    with pytest.raises(ProviderUnavailable):
        await adapter.list()
    assert await adapter.list() == []


async def test_quota_full_fault(
    provider: Provider, adapter: ProviderAdapter, sandbox_server: str, tmp_path: Path
) -> None:
    fault(sandbox_server, provider.name, quota_full=True)
    with pytest.raises(ProviderQuotaExceeded) as caught:
        await put(adapter, tmp_path, provider.small)
    assert_no_leak(caught.value, provider.quota_error)


async def test_hang_fault_times_out(
    provider: Provider, base_url: str, sandbox_server: str, recorder: Recorder
) -> None:
    fault(sandbox_server, provider.name, hang=True)
    adapter = make_adapter(provider.cls, base_url, observer=recorder, first_byte_timeout=0.3)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await adapter.list()
    finally:
        await adapter.aclose()
    assert caught.value.error_code == "provider_timeout"
    assert recorder.outcomes == [(provider.name, "list", "provider_timeout")]


async def test_reset_fault_is_unavailable(
    provider: Provider, adapter: ProviderAdapter, sandbox_server: str, recorder: Recorder
) -> None:
    fault(sandbox_server, provider.name, reset=True)
    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.list()
    assert caught.value.error_code == "provider_unavailable"
    assert recorder.outcomes == [(provider.name, "list", "provider_unavailable")]


async def test_unreachable_provider_is_unavailable(provider: Provider, recorder: Recorder) -> None:
    from tests.support.servers import free_port

    url = f"http://127.0.0.1:{free_port()}{provider.api_path}"
    adapter = make_adapter(provider.cls, url, observer=recorder)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await adapter.list()
    finally:
        await adapter.aclose()
    assert "could not be reached" in str(caught.value)


class ShortBody:
    """A body that ends before the size it declared (a blob cut short in the store)."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data = data
        self.size = size

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.data


async def test_an_upload_body_cut_short_is_not_sent_as_a_file(
    provider: Provider, adapter: ProviderAdapter
) -> None:
    before = len(await adapter.list())
    with pytest.raises(OSError, match="declared"):
        await adapter.upload(
            body=ShortBody(provider.small.data, len(provider.small.data) + 10),
            filename=provider.small.filename,
            purpose=provider.small.purpose,
            content_type=provider.small.content_type,
        )
    assert len(await adapter.list()) == before


# --- unit tests over httpx.MockTransport -------------------------------------------------


def file_object(file_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": 4,
        "created_at": 1741136989,
        "filename": "report.pdf",
        "purpose": "file-extract",
        **fields,
    }


@pytest.mark.parametrize(
    ("provider", "filename", "purpose", "content_type", "data"),
    [
        ("moonshot", "résumé 1.pdf", "file-extract", "application/pdf", b"%PDF"),
        ("zai", "季度 报告.xlsx", "user_data", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", b"PK\x03\x04"),  # noqa: E501
    ],
    indirect=["provider"],
)  # fmt: skip
async def test_upload_wire_shape(
    provider: Provider,
    tmp_path: Path,
    filename: str,
    purpose: str,
    content_type: str,
    data: bytes,
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(200, file_object("f1", filename=filename, bytes=len(data)))

    path = write(tmp_path, "stored-blob", data)
    adapter = await mock_adapter(provider.cls, handler, base_url=provider.mock_base_url)
    try:
        got = await adapter.upload(
            body=FileBody(path), filename=filename, purpose=purpose, content_type=content_type
        )
    finally:
        await adapter.aclose()
    assert got.filename == filename
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == f"{provider.api_path}/files"
    assert request.headers["authorization"] == f"Bearer {SECRET_KEY}"
    sent_purpose, file = parse_multipart(request)
    assert (sent_purpose.name, sent_purpose.filename, sent_purpose.data) == (
        "purpose",
        None,
        b"file-extract",
    )
    assert (file.name, file.filename) == ("file", filename)
    assert file.content_type == content_type
    assert file.data == data
    assert int(request.headers["content-length"]) == len(request.content)


@pytest.mark.parametrize(
    ("provider", "file_id", "body"),
    [
        ("moonshot", "f1", b'{"content":"\xe4\xbd\xa0\xe5\xa5\xbd","file_type":"text/plain"}'),
        ("zai", "1741136989_8dd9", b'{"custom_id":"1"}\n{"custom_id":"2"}\n'),
    ],
    indirect=["provider"],
)
async def test_content_returns_raw_bytes(provider: Provider, file_id: str, body: bytes) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, content=body, headers={"content-type": "application/binary"})

    adapter = await mock_adapter(provider.cls, handler, base_url=provider.mock_base_url)
    try:
        assert await adapter.content(file_id) == body
    finally:
        await adapter.aclose()
    assert seen == [f"{provider.api_path}/files/{file_id}/content"]


async def test_list_without_data_is_unexpected(provider: Provider) -> None:
    adapter = await mock_adapter(
        provider.cls,
        answer(json_response(200, {"object": "list"})),
        base_url=provider.mock_base_url,
    )
    try:
        with pytest.raises(ProviderUnavailable, match="unexpected response"):
            await adapter.list()
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
        (httpx.Response(200, content=b"<html>"), False),
    ],
)
async def test_delete_checks_deleted(
    provider: Provider, response: httpx.Response, ok: bool
) -> None:
    recorder = Recorder()
    adapter = await mock_adapter(
        provider.cls, answer(response), base_url=provider.mock_base_url, observer=recorder
    )
    try:
        if ok:
            await adapter.delete("f1")
        else:
            with pytest.raises(ProviderUnavailable, match=provider.name):
                await adapter.delete("f1")
    finally:
        await adapter.aclose()
    assert recorder.outcomes[0][:2] == (provider.name, "delete")
    assert (recorder.outcomes[0][2] == "ok") is ok


def moonshot_err(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind}}


def zai_err(code: str | int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


CONCURRENCY = (
    "Your account cn-12345678<ak-abcdef123456> request reached max concurrency: 3, "
    "please try again after 4 seconds"
)
m, z = moonshot_err, zai_err
ERROR_CASES: list[tuple[str, str, int, Any, dict[str, str], type[ProviderError], str, str]] = [
    # (provider, id, status, body, headers, error, code, words the message must contain)
    ("moonshot", "too-large", 400, m("File size is too large, max file size is 100MB, please confirm and re-upload the file", "invalid_request_error"), {}, ProviderFileTooLarge, "provider_file_too_large", "too large"),  # noqa: E501
    ("moonshot", "file-count", 400, m("The number of files you have uploaded exceeded the max file count 1000, please delete previous uploaded files", "invalid_request_error"), {}, ProviderAccountFull, "provider_quota_exceeded", "file count"),  # noqa: E501
    ("moonshot", "total-size", 400, m("The total size of files you have uploaded exceeded the max total size 10240MB, please delete previous uploaded files", "invalid_request_error"), {}, ProviderAccountFull, "provider_quota_exceeded", "total size"),  # noqa: E501
    ("moonshot", "batch-not-jsonl", 400, m("Invalid request: batch files must be .jsonl files", "invalid_request_error"), {}, ProviderRejected, "provider_rejected", "invalid request"),  # noqa: E501
    ("moonshot", "zero-size", 400, m("File size is zero, please confirm and re-upload the file", "invalid_request_error"), {}, ProviderRejected, "provider_rejected", "empty file"),  # noqa: E501
    ("moonshot", "bad-purpose", 400, m("Invalid purpose: only 'file-extract' accepted", "invalid_request_error"), {}, ProviderRejected, "provider_rejected", "unsupported purpose"),  # noqa: E501
    ("moonshot", "bad-purpose-new", 400, m("Invalid purpose: xxx, only file-extract, batch, batch_output, lambda, image and video accepted", "invalid_request_error"), {}, ProviderRejected, "provider_rejected", "unsupported purpose"),  # noqa: E501
    ("moonshot", "extract-400", 400, m("text extract error: 没有解析出内容", "invalid_request_error"), {}, ProviderRejected, "extraction_failed", "extract"),  # noqa: E501
    ("moonshot", "other-400", 400, m("Invalid request: secret-detail-xyz", "invalid_request_error"), {}, ProviderRejected, "provider_rejected", "invalid request"),  # noqa: E501
    ("moonshot", "401-invalid", 401, m("Invalid Authentication", "invalid_authentication_error"), {}, ProviderAuthFailed, "provider_auth_failed", "API key"),  # noqa: E501
    ("moonshot", "401-incorrect", 401, m("Incorrect API key provided", "incorrect_api_key_error"), {}, ProviderAuthFailed, "provider_auth_failed", "API key"),  # noqa: E501
    ("moonshot", "403", 403, m("The API you are accessing is not open", "permission_denied_error"), {}, ProviderAuthFailed, "provider_permission_denied", "permission denied"),  # noqa: E501
    ("moonshot", "404", 404, m("Not found the model or Permission denied", "resource_not_found_error"), {}, ProviderNotFound, "provider_file_not_found", "no such file"),  # noqa: E501
    ("moonshot", "429-overloaded", 429, m("The engine is currently overloaded, please try again later", "engine_overloaded_error"), {}, ProviderRateLimited, "provider_rate_limited", "overloaded"),  # noqa: E501
    ("moonshot", "429-quota", 429, m("You exceeded your current token quota: 0, please check your account balance", "exceeded_current_quota_error"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "balance"),  # noqa: E501
    ("moonshot", "429-suspended", 429, m("Your account is suspended due to insufficient balance, please recharge your account or check your plan and billing details", "exceeded_current_quota_error"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "recharge"),  # noqa: E501
    ("moonshot", "429-concurrency", 429, m(CONCURRENCY, "rate_limit_reached_error"), {}, ProviderRateLimited, "provider_rate_limited", "rate limit"),  # noqa: E501
    ("moonshot", "500-extract", 500, m("Failed to extract file: broken xref", "server_error"), {}, ProviderRejected, "extraction_failed", "extract"),  # noqa: E501
    ("moonshot", "500-extract-task", 500, {"error": {"message": "extract task failed: failed", "type": ""}}, {}, ProviderRejected, "extraction_failed", "extract"),  # noqa: E501
    ("moonshot", "500-state", 500, m("invalid state transition", "unexpected_output"), {}, ProviderUnavailable, "provider_unavailable", "HTTP 500"),  # noqa: E501
    ("moonshot", "503", 503, "<html>Service Unavailable</html>", {"Retry-After": "30"}, ProviderUnavailable, "provider_unavailable", "unavailable"),  # noqa: E501
    ("moonshot", "502-cloudflare", 502, "<html>Bad gateway cf-ray</html>", {}, ProviderUnavailable, "provider_unavailable", "HTTP 502"),  # noqa: E501
    ("moonshot", "413-proxy", 413, "<html>Request Entity Too Large</html>", {}, ProviderFileTooLarge, "provider_file_too_large", "too large"),  # noqa: E501
    ("moonshot", "418", 418, m("teapot", "x"), {}, ProviderRejected, "provider_rejected", "HTTP 418"),  # noqa: E501
    ("moonshot", "408", 408, "", {}, ProviderUnavailable, "provider_unavailable", "HTTP 408"),
    ("moonshot", "599", 599, m("weird", "x"), {}, ProviderUnavailable, "provider_unavailable", "HTTP 599"),  # noqa: E501
    ("moonshot", "400-malformed", 400, "{not json", {}, ProviderRejected, "provider_rejected", "rejected"),  # noqa: E501
    ("moonshot", "429-malformed", 429, '{"error": "flat"}', {}, ProviderRateLimited, "provider_rate_limited", "retry"),  # noqa: E501
    ("moonshot", "401-list-body", 401, "[1, 2]", {}, ProviderAuthFailed, "provider_auth_failed", "key"),  # noqa: E501
    ("moonshot", "500-null-message", 500, {"error": {"message": None}}, {}, ProviderUnavailable, "provider_unavailable", "HTTP 500"),  # noqa: E501
    ("zai", "401-1000", 401, z("1000", "Authentication failed for key"), {}, ProviderAuthFailed, "provider_auth_failed", "API key"),  # noqa: E501
    ("zai", "401-1002-cn", 401, z("1002", "Authorization Token非法，请确认Authorization Token正确传递。"), {}, ProviderAuthFailed, "provider_auth_failed", "code 1002"),  # noqa: E501, RUF001
    ("zai", "401-1003", 401, z(1003, "Token expired"), {}, ProviderAuthFailed, "provider_auth_failed", "authentication failed"),  # noqa: E501
    ("zai", "401-1004", 401, z("1004", "Auth header invalid"), {}, ProviderAuthFailed, "provider_auth_failed", "key"),  # noqa: E501
    ("zai", "401-no-body", 401, "", {}, ProviderAuthFailed, "provider_auth_failed", "key"),
    ("zai", "434", 434, z("1220", "You do not have permission to access the files API"), {}, ProviderAuthFailed, "provider_permission_denied", "files API"),  # noqa: E501
    ("zai", "434-no-code", 434, "forbidden", {}, ProviderAuthFailed, "provider_permission_denied", "permission denied"),  # noqa: E501
    ("zai", "435", 435, z("1210", "File size exceeds 100MB"), {}, ProviderFileTooLarge, "provider_file_too_large", "too large"),  # noqa: E501
    ("zai", "429-1113", 429, z("1113", "余额不足或无可用资源包,请充值。"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "balance"),  # noqa: E501
    ("zai", "429-1110", 429, z("1110", "Your account is inactive"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "code 1110"),  # noqa: E501
    ("zai", "429-1121", 429, z(1121, "Account locked for violations"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "account"),  # noqa: E501
    ("zai", "429-1302", 429, z("1302", "High concurrency usage of this API, please reduce"), {}, ProviderRateLimited, "provider_rate_limited", "code 1302"),  # noqa: E501
    ("zai", "429-1303", 429, z("1303", "High frequency usage of this API"), {"Retry-After": "3"}, ProviderRateLimited, "provider_rate_limited", "rate limit"),  # noqa: E501
    ("zai", "429-1304", 429, z("1304", "Daily call limit reached for this API"), {}, ProviderRateLimited, "provider_rate_limited", "retry"),  # noqa: E501
    ("zai", "429-1305", 429, z("1305", "The service may be temporarily overloaded"), {}, ProviderRateLimited, "provider_rate_limited", "retry"),  # noqa: E501
    ("zai", "429-1308", 429, z("1308", "Usage limit reached for 5 hour, resets at 2026-01-01 10:00"), {}, ProviderRateLimited, "provider_rate_limited", "code 1308"),  # noqa: E501
    ("zai", "429-1310", 429, z("1310", "Weekly/Monthly limit exhausted"), {}, ProviderRateLimited, "provider_rate_limited", "code 1310"),  # noqa: E501
    ("zai", "429-no-code", 429, "Too Many Requests", {}, ProviderRateLimited, "provider_rate_limited", "rate limit"),  # noqa: E501
    ("zai", "404", 404, z("1214", "file id not exist: 17411_abc"), {}, ProviderNotFound, "provider_file_not_found", "no such file"),  # noqa: E501
    ("zai", "400-1214", 400, z("1214", "Input cannot be empty"), {}, ProviderRejected, "provider_rejected", "invalid parameters"),  # noqa: E501
    ("zai", "400-1301", 400, z("1301", "System detected potentially unsafe content"), {}, ProviderRejected, "provider_rejected", "content policy"),  # noqa: E501
    ("zai", "400-other", 400, z("1299", "Something odd, request id abc"), {}, ProviderRejected, "provider_rejected", "invalid request"),  # noqa: E501
    ("zai", "400-1234", 400, z("1234", "Network error, request id abc"), {}, ProviderUnavailable, "provider_unavailable", "code 1234"),  # noqa: E501
    ("zai", "400-file-count", 400, z("1210", "The number of files for purpose file-extract has reached the limit of 100; please delete unused files and try again"), {}, ProviderAccountFull, "provider_quota_exceeded", "file count"),  # noqa: E501
    ("zai", "400-extract", 400, z("1214", "Failed to extract text from the file"), {}, ProviderRejected, "extraction_failed", "extract"),  # noqa: E501
    ("zai", "400-purpose-size", 400, z("1210", "File size exceeds the 50MB limit for purpose file-extract"), {}, ProviderRejected, "provider_rejected", "invalid parameters"),  # noqa: E501
    ("zai", "400-1113", 400, z("1113", "In arrears"), {}, ProviderQuotaExceeded, "provider_quota_exceeded", "balance"),  # noqa: E501
    ("zai", "400-top-level", 400, {"code": 1214, "msg": "bad field", "success": False}, {}, ProviderRejected, "provider_rejected", "invalid parameters"),  # noqa: E501
    ("zai", "500", 500, z("500", "Internal error, request id 20250101xyz"), {}, ProviderUnavailable, "provider_unavailable", "HTTP 500"),  # noqa: E501
    ("zai", "502-html", 502, "<html>bad gateway</html>", {}, ProviderUnavailable, "provider_unavailable", "HTTP 502"),  # noqa: E501
    ("zai", "503-retry", 503, z("1305", "Server flow exceeded"), {"Retry-After": "20"}, ProviderUnavailable, "provider_unavailable", "unavailable"),  # noqa: E501
    ("zai", "504", 504, "", {}, ProviderUnavailable, "provider_unavailable", "HTTP 504"),
    ("zai", "413-proxy", 413, "<html>413</html>", {}, ProviderFileTooLarge, "provider_file_too_large", "100 MiB"),  # noqa: E501
    ("zai", "409", 409, z("9999", "conflict thing"), {}, ProviderRejected, "provider_rejected", "rejected"),  # noqa: E501
    ("zai", "malformed", 400, '{"error": {"code": ', {}, ProviderRejected, "provider_rejected", "invalid request"),  # noqa: E501
    ("zai", "bool-code", 429, {"error": {"code": True}}, {}, ProviderRateLimited, "provider_rate_limited", "retry"),  # noqa: E501
]  # fmt: skip
del m, z
ERROR_LEAKS = ("cn-12345678", "ak-abcdef123456", "secret-detail-xyz", "request id", "17411_abc")


@pytest.mark.parametrize(
    ("provider", "status", "body", "headers", "error", "code", "words"),
    [(case[0], *case[2:]) for case in ERROR_CASES],
    ids=[f"{case[0]}-{case[1]}" for case in ERROR_CASES],
    indirect=["provider"],
)
async def test_error_mapping(
    provider: Provider,
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
        provider.cls,
        answer(httpx.Response(status, content=content, headers=headers)),
        base_url=provider.mock_base_url,
        observer=recorder,
    )
    try:
        with pytest.raises(ProviderError) as caught:
            await adapter.content(provider.file_id)
    finally:
        await adapter.aclose()
    exc = caught.value
    assert type(exc) is error
    assert exc.error_code == code
    assert exc.provider == provider.name
    assert exc.message.startswith(f"{provider.name} ")
    assert words in exc.message
    inner = body.get("error", body) if isinstance(body, dict) else {}
    raw = inner.get("message") or inner.get("msg") or body
    leaks = [raw] if isinstance(raw, str) and len(raw) > 12 else []
    assert_no_leak(exc, *leaks, *ERROR_LEAKS)
    assert recorder.outcomes == [(provider.name, "content", code)]
    if "Retry-After" in headers:
        assert exc.retry_after == float(headers["Retry-After"])


def test_raise_for_error_ignores_success(provider: Provider) -> None:
    adapter = make_adapter(provider.cls, provider.mock_base_url)
    adapter.raise_for_error(httpx.Response(200))


# --- check_purpose -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "purpose", "filename", "size", "native"),
    [
        ("moonshot", "file-extract", "report.PDF", 1, "file-extract"),
        ("moonshot", "file-extract", "scan.jpeg", 99 * MiB, "file-extract"),
        ("moonshot", "file-extract", "main.go", 10, "file-extract"),
        ("moonshot", "file-extract", "App.tsx", 10, "file-extract"),
        ("moonshot", "file-extract", "C:\\Users\\me\\notes.md", 10, "file-extract"),
        ("moonshot", "file-extract", "exact.txt", 100 * MiB, "file-extract"),
        ("moonshot", "assistants", "a.docx", 10, "file-extract"),
        ("moonshot", "user_data", "a.csv", 10, "file-extract"),
        ("moonshot", "batch", "requests.jsonl", 100 * MiB, "batch"),
        ("moonshot", "vision", "photo.webp", 10, "image"),
        ("zai", "file-extract", "report.pdf", 50 * MiB, "file-extract"),
        ("zai", "file-extract", "scan.PNG", 5 * MiB, "file-extract"),
        ("zai", "file-extract", "table.csv", 1, "file-extract"),
        ("zai", "assistants", "a.pptx", 10, "file-extract"),
        ("zai", "user_data", "a.xls", 10, "file-extract"),
        ("zai", "batch", "in.jsonl", 100 * MiB, "batch"),
        ("zai", "code-interpreter", "data.txt", 20 * MiB, "code-interpreter"),
        ("zai", "code-interpreter", "chart.jpg", 5 * MiB, "code-interpreter"),
        ("zai", "agent", "glossary.xlsx", 100 * MiB, "agent"),
        ("zai", "agent", "photo.jpg", 60 * MiB, "agent"),
        ("zai", "fine-tune", "train.jsonl", 100 * MiB, "fine-tune"),
    ],
    indirect=["provider"],
)
def test_check_purpose_accepts(
    provider: Provider, purpose: str, filename: str, size: int, native: str
) -> None:
    rule = check_purpose(provider.cls, purpose=purpose, filename=filename, size=size)
    assert rule.native == native
    assert (
        check_purpose(
            make_adapter(provider.cls, provider.mock_base_url),
            purpose=purpose,
            filename=filename,
            size=size,
        )
        == rule
    )


@pytest.mark.parametrize(
    ("provider", "purpose", "filename", "size", "param", "message"),
    [
        ("moonshot", "code-interpreter", "a.py", 10, "purpose", "moonshot does not accept purpose 'code-interpreter'; it accepts: assistants, batch, file-extract, user_data, vision."),  # noqa: E501
        ("moonshot", "fine-tune", "a.jsonl", 10, "purpose", "moonshot does not accept purpose 'fine-tune'"),  # noqa: E501
        ("moonshot", "file-extract", "setup.exe", 10, "file", "moonshot does not accept '.exe' files for purpose 'file-extract'"),  # noqa: E501
        ("moonshot", "file-extract", "Makefile", 10, "file", "moonshot does not accept files without an extension for purpose 'file-extract'"),  # noqa: E501
        ("moonshot", "batch", "requests.json", 10, "file", "allowed: .jsonl"),
        ("moonshot", "vision", "clip.mp4", 10, "file", "moonshot does not accept '.mp4' files for purpose 'vision'"),  # noqa: E501
        ("moonshot", "file-extract", "big.pdf", 100 * MiB + 1, "file", "moonshot accepts at most 100 MiB for purpose 'file-extract' (this file is 100.0 MiB)"),  # noqa: E501
        ("moonshot", "batch", "big.jsonl", 120 * MiB, "file", "(this file is 120.0 MiB)"),
        ("moonshot", "file-extract", "empty.txt", 0, "file", "empty files"),
        ("zai", "vision", "a.png", 10, "purpose", "zai does not accept purpose 'vision'; it accepts: agent, assistants, batch, code-interpreter, file-extract, fine-tune, user_data."),  # noqa: E501
        ("zai", "image", "a.png", 10, "purpose", "zai does not accept purpose 'image'"),
        ("zai", "file-extract", "big.pdf", 60 * MiB, "file", "zai accepts at most 50 MiB for purpose 'file-extract' (this file is 60.0 MiB)"),  # noqa: E501
        ("zai", "file-extract", "big.jpeg", 5 * MiB + 1, "file", "zai accepts at most 5 MiB for images with purpose 'file-extract' (this file is 5.0 MiB)"),  # noqa: E501
        ("zai", "file-extract", "notes.txt", 10, "file", "zai does not accept '.txt' files for purpose 'file-extract'; allowed: .csv, .doc, .docx, .jpeg, .jpg, .pdf, .png, .ppt, .pptx, .xls, .xlsx."),  # noqa: E501
        ("zai", "file-extract", "main.py", 10, "file", "'.py' files"),
        ("zai", "code-interpreter", "big.csv", 20 * MiB + 1, "file", "at most 20 MiB"),
        ("zai", "agent", "deck.pptx", 10, "file", "zai does not accept '.pptx' files for purpose 'agent'"),  # noqa: E501
        ("zai", "agent", "huge.pdf", 100 * MiB + 1, "file", "at most 100 MiB"),
        ("zai", "batch", "in.csv", 10, "file", "allowed: .jsonl"),
        ("zai", "fine-tune", "train.json", 10, "file", "'.json' files"),
        ("zai", "batch", "empty.jsonl", 0, "file", "empty files"),
    ],
    indirect=["provider"],
)  # fmt: skip
def test_check_purpose_refuses(
    provider: Provider, purpose: str, filename: str, size: int, param: str, message: str
) -> None:
    with pytest.raises(UnsupportedPurpose) as caught:
        check_purpose(provider.cls, purpose=purpose, filename=filename, size=size)
    assert caught.value.param == param
    assert message in caught.value.message
    assert caught.value.error_code == "unsupported_purpose"
    assert caught.value.status_code == 400
