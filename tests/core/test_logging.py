"""Logging: one configured handler, context fields on every line, JSON when asked, no secrets."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jwt
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse

from app.api.middleware import RequestContextMiddleware
from app.auth.tokens import generate_key
from app.core.config import Settings
from app.core.errors import NotFound, ProviderUnavailable
from app.core.logging import GatewayHandler, configure_logging, log_context, log_failure
from app.main import create_app
from app.models import File
from tests.conftest import Gateway, settings_with
from tests.support.servers import serve_in_thread

TEXT_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>[A-Z]+) (?P<logger>\S+) "
    r"\[(?P<context>[^\]]*)\] (?P<message>.*)$"
)
MOONSHOT_KEY = "sk-live-moonshot-0123456789abcdef"
ZAI_KEY = "0123456789abcdef.zai-live-secret"


pytestmark = pytest.mark.usefixtures("restore_logging")


def plain_settings(**overrides: Any) -> Settings:
    return Settings(env="test", **overrides)


def json_lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_text_lines_carry_time_level_logger_and_context() -> None:
    buf = io.StringIO()
    configure_logging(plain_settings(), stream=buf)
    log = logging.getLogger("filegate.test")
    log.warning("outside any request")
    with log_context.bound(request_id="req-1", tenant_id="tenant-1", file_id=None):
        log.warning("inside %s", "a request")
    first, second = buf.getvalue().splitlines()
    outside, inside = TEXT_LINE.match(first), TEXT_LINE.match(second)
    assert outside is not None and inside is not None, buf.getvalue()
    assert outside["level"] == "WARNING" and outside["logger"] == "filegate.test"
    assert outside["context"] == "-"
    assert inside["context"] == "request_id=req-1 tenant_id=tenant-1"
    assert inside["message"] == "inside a request"
    stamp = datetime.fromisoformat(inside["time"].replace("Z", "+00:00"))
    assert stamp.tzinfo == UTC


def test_the_level_applies_to_the_app_loggers() -> None:
    buf = io.StringIO()
    configure_logging(plain_settings(), stream=buf)  # INFO by default
    logging.getLogger("filegate.breakers").info("circuit moonshot: closed -> open")
    logging.getLogger("filegate.providers").debug("not at INFO")
    assert "closed -> open" in buf.getvalue() and "not at INFO" not in buf.getvalue()

    buf = io.StringIO()
    configure_logging(plain_settings(log_level="warning"), stream=buf)
    logging.getLogger("filegate.worker").info("dropped at WARNING")
    logging.getLogger("filegate.worker").warning("kept at WARNING")
    assert "dropped" not in buf.getvalue() and "kept at WARNING" in buf.getvalue()

    buf = io.StringIO()
    configure_logging(plain_settings(log_level="DEBUG"), stream=buf)
    logging.getLogger("filegate.providers").debug("shown at DEBUG")
    assert "shown at DEBUG" in buf.getvalue()


def test_configuring_again_replaces_the_handler(tmp_path: Path) -> None:
    settings = plain_settings(data_dir=tmp_path)
    for _ in range(3):
        create_app(settings)
    root = logging.getLogger()
    assert len([h for h in root.handlers if isinstance(h, GatewayHandler)]) == 1
    buf = io.StringIO()
    configure_logging(settings, stream=buf)
    configure_logging(settings, stream=buf)
    assert len([h for h in root.handlers if isinstance(h, GatewayHandler)]) == 1
    logging.getLogger("filegate").warning("once")
    assert buf.getvalue().count("once") == 1


def test_json_lines_are_objects_with_the_documented_keys() -> None:
    buf = io.StringIO()
    configure_logging(plain_settings(log_format="json"), stream=buf)
    log = logging.getLogger("filegate.test")
    log.info("no context")
    with log_context.bound(request_id="req-2", tenant_id="tenant-2", file_id="file-2"):
        try:
            raise ValueError("bad value")
        except ValueError:
            log.exception("it failed")
    plain, failed = json_lines(buf)
    assert set(plain) == {"time", "level", "logger", "message"}
    assert plain["level"] == "INFO" and plain["message"] == "no context"
    assert set(failed) == {
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "tenant_id",
        "file_id",
        "exc_info",
    }
    assert failed["logger"] == "filegate.test" and failed["level"] == "ERROR"
    assert (failed["request_id"], failed["tenant_id"], failed["file_id"]) == (
        "req-2",
        "tenant-2",
        "file-2",
    )
    assert "ValueError: bad value" in failed["exc_info"]
    assert datetime.fromisoformat(failed["time"].replace("Z", "+00:00")).tzinfo == UTC


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_are_redacted_from_messages_access_lines_and_tracebacks(log_format: str) -> None:
    buf = io.StringIO()
    settings = plain_settings(
        log_format=log_format,
        moonshot_api_key=SecretStr(MOONSHOT_KEY),
        zai_api_key=SecretStr(ZAI_KEY),
    )
    configure_logging(settings, stream=buf)
    api_key = generate_key(hmac_key=b"test").token
    token = jwt.encode({"sub": "alice", "tenant": "acme"}, "jwt-secret", algorithm="HS256")
    log = logging.getLogger("filegate.test")
    log.warning("key %s jwt %s header Bearer opaque-token-123", api_key, token)
    log.warning("provider call with %s, cookie session_%s", MOONSHOT_KEY, token)
    try:
        raise RuntimeError(f"refused credentials {ZAI_KEY} and {api_key}")
    except RuntimeError:
        log.exception("call failed")
    logging.getLogger("uvicorn.access").warning(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", f"/v1/files?key={api_key}", "1.1", 401
    )
    out = buf.getvalue()
    for secret in (api_key, api_key.rsplit("_", 1)[1], token, "opaque-token-123"):
        assert secret not in out
    assert MOONSHOT_KEY not in out and ZAI_KEY not in out
    assert "Bearer [REDACTED]" in out and "fg_[REDACTED]" in out
    assert "RuntimeError: refused credentials [REDACTED]" in out
    assert "GET /v1/files?key=fg_[REDACTED] HTTP/1.1" in out


def test_the_access_log_is_one_json_object_a_line_with_the_request_id() -> None:
    buf = io.StringIO()
    configure_logging(plain_settings(log_format="json"), stream=buf)
    app = RequestContextMiddleware(PlainTextResponse("ok"))
    with serve_in_thread(app, log_config=None, log_level="info", lifespan="off") as url:
        resp = httpx.get(f"{url}/hello?x=1", headers={"X-Request-ID": "req-access-1"})
        assert resp.status_code == 200 and resp.headers["x-request-id"] == "req-access-1"
    lines = json_lines(buf)  # every line (uvicorn's start-up and shut-down too) is JSON
    [access] = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert access["request_id"] == "req-access-1"
    assert access["level"] == "INFO"
    assert '"GET /hello?x=1 HTTP/1.1" 200' in access["message"]
    assert any(line["logger"] == "uvicorn.error" for line in lines)


async def test_a_warning_during_a_request_carries_its_request_tenant_and_file_ids(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    uploaded = await client.post(
        "/v1/files",
        data={"purpose": "file-extract"},
        files={"file": ("notes.txt", b"some text to extract\n", "text/plain")},
    )
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    async with gateway.runtime.sessionmaker() as session:
        tenant_id = await session.scalar(select(File.tenant_id).where(File.id == file_id))
    buf = io.StringIO()
    as_json = settings_with(gateway.runtime.settings, log_format="json")
    configure_logging(as_json, stream=buf)
    await gateway.sandbox_fault("moonshot", status=503, operations=["content"])

    resp = await client.get(
        f"/v1/files/{file_id}/extract", headers={"X-Request-ID": "req-extract-1"}
    )
    assert resp.status_code == 503, resp.text
    lines = json_lines(buf)
    [warning] = [line for line in lines if line["logger"] == "filegate.errors"]
    assert warning["level"] == "WARNING" and "provider_unavailable" in warning["message"]
    assert warning["request_id"] == "req-extract-1"
    assert warning["tenant_id"] == tenant_id
    assert warning["file_id"] == file_id
    retries = [line for line in lines if line["logger"] == "filegate.providers"]
    assert retries and all(line["request_id"] == "req-extract-1" for line in retries)
    # a provider outage already answered to the caller is one line, never a traceback
    assert not [line for line in lines if "exc_info" in line]


async def test_client_errors_log_no_traceback(gateway: Gateway, client: httpx.AsyncClient) -> None:
    buf = io.StringIO()
    configure_logging(gateway.runtime.settings, stream=buf)
    assert (await client.get("/v1/files/file-" + "0" * 24)).status_code == 404
    assert (await client.get("/v1/files?limit=0")).status_code == 400
    async with gateway.client("fg_notakey000000_" + "x" * 40) as stranger:
        assert (await stranger.get("/v1/files")).status_code == 401
    async with gateway.client() as anonymous:
        assert (await anonymous.post("/v1/files", content=b"x")).status_code == 401
    assert "Traceback" not in buf.getvalue()


def test_expected_failures_are_one_line_and_bugs_keep_their_traceback() -> None:
    buf = io.StringIO()
    configure_logging(plain_settings(log_format="json"), stream=buf)
    log = logging.getLogger("filegate.test")
    outage = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    for exc in (
        NotFound("No such File object."),
        ProviderUnavailable("zai is down.", provider="zai"),
        outage,
    ):
        log_failure(log, "job %s failed", 7, exc=exc)
    log_failure(log, "job %s failed", 8, exc=KeyError("bug"))
    *expected, bug = json_lines(buf)
    assert [x["message"] for x in expected[:2]] == [
        "job 7 failed: No such File object.",
        "job 7 failed: zai is down.",
    ]
    assert all(x["level"] == "WARNING" and "exc_info" not in x for x in expected)
    assert bug["level"] == "ERROR" and "KeyError: 'bug'" in bug["exc_info"]


async def _fails_after_starting(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/gone":  # how Starlette reports a handled error it could not answer
        raise RuntimeError("response already started") from ClientDisconnect()
    raise LookupError("bug while streaming")


def test_a_disconnect_after_the_response_started_is_one_line() -> None:
    buf = io.StringIO()
    configure_logging(plain_settings(log_format="json"), stream=buf)
    app = RequestContextMiddleware(_fails_after_starting)
    with serve_in_thread(app, log_config=None, lifespan="off") as url:
        for path, request_id in (("/gone", "req-gone"), ("/bug", "req-bug")):
            with pytest.raises(httpx.TransportError):  # the server cuts the response short
                httpx.get(f"{url}{path}", headers={"X-Request-ID": request_id})
    gone, bug = [x for x in json_lines(buf) if x["logger"] == "filegate.errors"]
    assert gone["request_id"] == "req-gone" and gone["level"] == "INFO"
    assert "ClientDisconnect" in gone["message"] and "exc_info" not in gone
    assert bug["request_id"] == "req-bug" and bug["level"] == "ERROR"
    assert "LookupError: bug while streaming" in bug["exc_info"]
