"""Shared adapter machinery: Retry-After parsing, transport errors, observation, parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

import app.providers as providers
from app.core.errors import ProviderNotFound, ProviderUnavailable
from app.providers import ADAPTERS, MoonshotAdapter, ZaiAdapter, parse_retry_after
from app.providers.base import ProviderAdapter, error_envelope, retry_after_header
from tests.providers import Recorder, answer, assert_no_leak, json_response, mock_adapter

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        ("Fri, 02 Jan 2026 03:05:05 GMT", 60.0),
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),
        (None, None),
        ("", None),
        ("-3", None),
        ("inf", None),
        ("nan", None),
        ("soon", None),
        ("Fri, 99 Foo 2026", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_http_date_is_relative_to_now() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    seconds = parse_retry_after(later)
    assert seconds is not None
    assert 115 <= seconds <= 120


def test_retry_after_header_prefers_milliseconds() -> None:
    both = httpx.Response(429, headers={"retry-after-ms": "1500", "retry-after": "9"})
    assert retry_after_header(both) == 1.5
    assert retry_after_header(httpx.Response(429, headers={"retry-after": "9"})) == 9.0
    assert retry_after_header(httpx.Response(429, headers={"retry-after-ms": "x"})) is None
    assert retry_after_header(httpx.Response(429)) is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"error":{"message":"m","type":"t"}}', {"message": "m", "type": "t"}),
        (b'{"code":1214,"msg":"x"}', {"code": 1214, "msg": "x"}),
        (b'{"error":"flat string"}', {"error": "flat string"}),
        (b"[1,2]", {}),
        (b"<html>502 Bad Gateway</html>", {}),
        (b"", {}),
        (b"\xff\xfe not utf-8", {}),
    ],
)
def test_error_envelope_never_raises(content: bytes, expected: dict[str, object]) -> None:
    assert error_envelope(httpx.Response(400, content=content)) == expected


def test_registry_holds_classes_not_instances() -> None:
    assert ADAPTERS == {"moonshot": MoonshotAdapter, "zai": ZaiAdapter}
    assert MoonshotAdapter.name == "moonshot"
    assert ZaiAdapter.name == "zai"
    built = [v for v in vars(providers).values() if isinstance(v, ProviderAdapter)]
    assert built == []


@pytest.mark.parametrize("cls", [MoonshotAdapter, ZaiAdapter])
@pytest.mark.parametrize(
    ("error", "code"),
    [
        (httpx.ConnectError("refused"), "provider_unavailable"),
        (httpx.RemoteProtocolError("peer closed"), "provider_unavailable"),
        (httpx.ReadError("reset by peer"), "provider_unavailable"),
        (httpx.ReadTimeout("slow"), "provider_timeout"),
        (httpx.ConnectTimeout("slow"), "provider_timeout"),
        (httpx.PoolTimeout("busy"), "provider_timeout"),
        (httpx.DecodingError("bad gzip"), "provider_unavailable"),
    ],
)
async def test_transport_errors_map_to_unavailable(
    cls: type[ProviderAdapter], error: Exception, code: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    recorder = Recorder()
    adapter = await mock_adapter(cls, handler, observer=recorder)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await adapter.retrieve("file1")
    finally:
        await adapter.aclose()
    assert caught.value.error_code == code
    assert caught.value.provider == cls.name
    assert caught.value.retryable
    assert cls.name in str(caught.value)
    assert_no_leak(caught.value, "refused", "peer closed", "bad gzip")
    assert recorder.outcomes == [(cls.name, "retrieve", code)]


@pytest.mark.parametrize("cls", [MoonshotAdapter, ZaiAdapter])
async def test_observer_gets_provider_operation_outcome_seconds(
    cls: type[ProviderAdapter],
) -> None:
    obj = {"id": "f1", "bytes": 3, "created_at": 1, "filename": "a.txt", "purpose": "batch"}
    recorder = Recorder()
    adapter = await mock_adapter(cls, answer(json_response(200, obj)), observer=recorder)
    try:
        await adapter.retrieve("f1")
    finally:
        await adapter.aclose()
    ((provider, operation, outcome, seconds),) = recorder.calls
    assert (provider, operation, outcome) == (cls.name, "retrieve", "ok")
    assert isinstance(seconds, float)
    assert 0 <= seconds < 5


async def test_failing_observer_does_not_break_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def observer(provider: str, operation: str, outcome: str, seconds: float) -> None:
        raise RuntimeError("metrics backend down")

    adapter = await mock_adapter(
        MoonshotAdapter, answer(httpx.Response(200, content=b"text")), observer=observer
    )
    try:
        assert await adapter.content("f1") == b"text"
    finally:
        await adapter.aclose()
    assert "observer failed" in caplog.text


async def test_unexpected_exception_is_reported_as_internal_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise LookupError("bug in a transport")

    recorder = Recorder()
    adapter = await mock_adapter(MoonshotAdapter, handler, observer=recorder)
    try:
        with pytest.raises(LookupError):
            await adapter.content("f1")
    finally:
        await adapter.aclose()
    assert recorder.outcomes == [("moonshot", "content", "internal_error")]


@pytest.mark.parametrize("cls", [MoonshotAdapter, ZaiAdapter])
@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"id": 5}',
        b'{"id":"f1","bytes":"3","created_at":1,"filename":"a","purpose":"p"}',
        b'{"id":"f1","bytes":true,"created_at":1,"filename":"a","purpose":"p"}',
        b'{"id":"","bytes":3,"created_at":1,"filename":"a","purpose":"p"}',
        b'{"id":"f1","bytes":3,"created_at":1,"filename":null,"purpose":"p"}',
    ],
)
async def test_unparseable_success_body_is_unavailable(
    cls: type[ProviderAdapter], body: bytes
) -> None:
    recorder = Recorder()
    adapter = await mock_adapter(cls, answer(httpx.Response(200, content=body)), observer=recorder)
    try:
        with pytest.raises(ProviderUnavailable) as caught:
            await adapter.retrieve("f1")
    finally:
        await adapter.aclose()
    assert "returned an unexpected response" in str(caught.value)
    assert caught.value.error_code == "provider_bad_response"
    assert recorder.outcomes[0] == (cls.name, "retrieve", "provider_bad_response")


async def test_file_object_normalises_optional_fields() -> None:
    obj = {
        "id": "f1",
        "object": "file",
        "bytes": 3,
        "created_at": 1709378911.0,
        "filename": "a.txt",
        "purpose": "file-extract",
        "status": None,
        "status_details": None,
    }
    adapter = await mock_adapter(ZaiAdapter, answer(json_response(200, obj)))
    try:
        got = await adapter.retrieve("f1")
    finally:
        await adapter.aclose()
    assert got.created_at == 1709378911
    assert got.status is None
    assert got.status_details is None


@pytest.mark.parametrize(
    ("file_id", "path"),
    [
        ("cnhgqnucp7f5h7jfb3s0", "/v1/files/cnhgqnucp7f5h7jfb3s0"),
        ("../models", "/v1/files/..%2Fmodels"),
        ("a?b#c", "/v1/files/a%3Fb%23c"),
    ],
)
async def test_file_ids_stay_inside_the_files_path(file_id: str, path: str) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, content=b"x")

    adapter = await mock_adapter(MoonshotAdapter, handler)
    try:
        await adapter.content(file_id)
    finally:
        await adapter.aclose()
    assert seen == [path + "/content"]


@pytest.mark.parametrize("file_id", ["", ".", ".."])
async def test_degenerate_file_ids_are_not_found_without_a_call(file_id: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    adapter = await mock_adapter(MoonshotAdapter, handler)
    try:
        with pytest.raises(ProviderNotFound):
            await adapter.retrieve(file_id)
    finally:
        await adapter.aclose()
