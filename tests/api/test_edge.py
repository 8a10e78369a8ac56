"""The edge: bounded bodies, no body read before identification, NUL and control characters
refused, one error shape with a request id for every answer, framework-level ones included."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from app.core.config import Settings
from app.main import create_app
from tests.conftest import Gateway
from tests.support.servers import serve_in_thread

MiB = 1024 * 1024


def assert_envelope(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers.get("x-request-id")
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    if code is not None:
        assert error["code"] == code, error
    return error


class CountingBody:
    """A request body that counts how many of its chunks the server pulled."""

    def __init__(self, chunks: int, size: int = MiB) -> None:
        self.chunks = chunks
        self.size = size
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield b"{" + b" " * (self.size - 1)


async def test_anonymous_body_is_never_read(gateway: Gateway) -> None:
    body = CountingBody(chunks=86)
    async with gateway.client() as anon:
        resp = await anon.post(
            "/admin/keys", content=body, headers={"content-type": "application/json"}
        )
    assert_envelope(resp, 401, "invalid_api_key")
    assert body.pulled <= 1  # the transport may pre-read one chunk; the app read none


async def test_invalid_key_body_is_never_read(gateway: Gateway) -> None:
    body = CountingBody(chunks=20)
    async with gateway.client("fg_live_not_a_real_key") as anon:
        resp = await anon.post("/v1/files", content=body, headers={"content-type": "text/plain"})
    assert_envelope(resp, 401)
    assert body.pulled <= 1


async def test_json_body_over_the_limit_is_413_before_it_is_read(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    limit = gateway.runtime.settings.json_body_limit
    async with gateway.client(admin) as ops:
        before = (await ops.get("/admin/keys")).json()["data"]
        declared = await ops.post(
            "/admin/keys",
            content=b"{" + b" " * limit + b"}",
            headers={"content-type": "application/json"},
        )
        error = assert_envelope(declared, 413, "request_too_large")
        assert str(limit) in error["message"]
        body = CountingBody(chunks=50, size=64 * 1024)
        streamed = await ops.post(
            "/admin/keys", content=body, headers={"content-type": "application/json"}
        )
        assert_envelope(streamed, 413, "request_too_large")
        assert body.pulled <= 3
        assert (await ops.get("/admin/keys")).json()["data"] == before


async def test_upload_over_the_limit_gets_the_envelope_and_a_request_id(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    too_big = gateway.runtime.settings.max_upload_bytes + 2 * MiB
    resp = await client.post(
        "/v1/files",
        content=b"",
        headers={
            "content-type": "multipart/form-data; boundary=x",
            "content-length": str(too_big),
            "x-request-id": "big-upload-1",
        },
    )
    assert_envelope(resp, 413, "file_too_large")
    assert resp.headers["x-request-id"] == "big-upload-1"


async def test_duplicate_json_keys_are_refused_and_nothing_is_created(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        before = len((await ops.get("/admin/keys")).json()["data"])
        resp = await ops.post(
            "/admin/keys",
            content=b'{"tenant": "alpha", "name": "svc", "tenant": "ops"}',
            headers={"content-type": "application/json"},
        )
        error = assert_envelope(resp, 400, "invalid_request")
        assert error["param"] == "tenant"
        nested = await ops.put(
            "/admin/tenants/ops/quota",
            content=b'{"max_bytes": 1, "max_bytes": 2}',
            headers={"content-type": "application/json"},
        )
        assert_envelope(nested, 400)
        assert len((await ops.get("/admin/keys")).json()["data"]) == before


async def test_runaway_json_nesting_is_a_400(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        resp = await ops.post(
            "/admin/keys",
            content=b"[" * 30_000 + b"]" * 30_000,
            headers={"content-type": "application/json"},
        )
    assert_envelope(resp, 400)


CONTROL = ["\x00", "\x01", "\x1f", "\x7f", "\x85", "a\x00b"]


@pytest.mark.parametrize("value", CONTROL, ids=repr)
async def test_control_characters_in_queries_are_refused(gateway: Gateway, value: str) -> None:
    admin = await gateway.key("ops", ("admin", "files:read"))
    async with gateway.client(admin) as ops:
        for path, param in [
            ("/v1/files", "after"),
            ("/v1/files", "purpose"),
            ("/admin/audit", "actor"),
            ("/admin/audit", "action"),
            ("/admin/audit", "tenant_id"),
            ("/admin/keys", "tenant"),
            ("/admin/keys", "tenant_id"),
        ]:
            resp = await ops.get(path, params={param: value})
            error = assert_envelope(resp, 400, "invalid_request")
            assert error["param"] == param


@pytest.mark.parametrize("value", CONTROL, ids=repr)
async def test_control_characters_in_paths_are_refused(gateway: Gateway, value: str) -> None:
    admin = await gateway.key("ops", ("admin", "files:read", "files:write"))
    async with gateway.client(admin) as ops:
        for method, path in [
            ("GET", "/v1/files/file-{}"),
            ("GET", "/v1/files/file-{}/content"),
            ("DELETE", "/v1/files/file-{}"),
            ("DELETE", "/admin/keys/key{}"),
            ("POST", "/admin/keys/key{}/rotate"),
            ("POST", "/admin/files/file-{}/check"),
            ("PUT", "/admin/tenants/acme{}/quota"),
        ]:
            url = path.format(quote(value, safe=""))
            kwargs: dict[str, Any] = {"json": {"max_bytes": 1}} if method == "PUT" else {}
            resp = await ops.request(method, url, **kwargs)
            assert_envelope(resp, 400, "invalid_request")


@pytest.mark.parametrize("value", CONTROL, ids=repr)
async def test_control_characters_in_json_bodies_are_refused(gateway: Gateway, value: str) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        for body, param in [
            ({"tenant": value, "name": "svc"}, "tenant"),
            ({"tenant": "acme", "name": value}, "name"),
            ({"tenant": "acme", "name": "svc", "scopes": ["files:read", value]}, "scopes.1"),
        ]:
            resp = await ops.post("/admin/keys", json=body)
            error = assert_envelope(resp, 400, "invalid_request")
            assert error["param"] == param
        tenants = (await ops.get("/admin/tenants")).json()["data"]
        assert all("\x00" not in t["name"] for t in tenants)


async def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    resp = await client.get("/v1/files/", headers={"host": "evil.example"})
    assert_envelope(resp, 404, "not_found")
    assert "location" not in resp.headers


def _raw_http(port: int, requests: list[bytes]) -> list[bytes]:
    """Send requests one after another on one connection; each answer read by Content-Length."""
    answers: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for request in requests:
            sock.sendall(request)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                byte = reader.read(1)
                assert byte, f"connection closed; answers so far: {answers}"
                head += byte
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            answers.append(head + reader.read(length))
    return answers


def test_an_unexpected_error_is_an_envelope_with_a_request_id_and_the_connection_lives(
    settings: Settings,
) -> None:
    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/test/boom", boom)
    assert isinstance(app, FastAPI)
    with serve_in_thread(app) as base:
        port = int(base.rsplit(":", 1)[1])
        first, second = _raw_http(
            port,
            [
                b"GET /test/boom HTTP/1.1\r\nHost: x\r\nX-Request-ID: boom-1\r\n\r\n",
                b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n",
            ],
        )
    head, _, body = first.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500")
    assert b"x-request-id: boom-1" in head.lower()
    assert json.loads(body)["error"]["code"] == "internal_error"
    assert b"a bug" not in body
    assert second.startswith(b"HTTP/1.1 200")


@pytest.mark.settings(max_upload_bytes=4 * MiB)
def test_refused_bodies_end_in_a_clean_answer_over_a_real_connection(
    settings: Settings,
) -> None:
    app = create_app(settings)
    big = b"{" + b" " * (30 * MiB)
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=60) as http:
        anonymous = http.post(
            "/admin/keys", content=big, headers={"content-type": "application/json"}
        )
        assert_envelope(anonymous, 401)
        upload = http.post(
            "/v1/files",
            content=b"x" * (settings.max_upload_bytes + 2 * MiB),
            headers={
                "content-type": "multipart/form-data; boundary=x",
                "authorization": "Bearer fg_aaaaaaaaaaaa_" + "x" * 43,
            },
        )
        assert_envelope(upload, 401)
        # The same connection still serves the next request.
        assert http.get("/health/live").status_code == 200
