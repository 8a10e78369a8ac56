"""Bad uploads get a clear 4xx and leave no row, no blob and no provider call behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.types import Message, Scope

from app.models import AuditEvent, Blob, File, ProviderCopy
from tests.api.test_files import upload
from tests.conftest import Gateway

BOUNDARY = "testboundary123"


def multipart(*parts: tuple[str, str | None, bytes], close: bool = True) -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return out


async def raw_post(
    client: httpx.AsyncClient, body: bytes, ctype: str | None = None
) -> httpx.Response:
    return await client.post(
        "/v1/files",
        content=body,
        headers={"Content-Type": ctype or f"multipart/form-data; boundary={BOUNDARY}"},
    )


async def assert_nothing_left(gateway: Gateway) -> None:
    async with gateway.runtime.sessionmaker() as session:
        for model in (File, Blob, ProviderCopy):
            n = await session.scalar(select(func.count()).select_from(model))
            assert n == 0, f"{model.__name__} rows left behind"
    data = gateway.runtime.settings.data_dir
    assert not [p for p in (data / "blobs").rglob("*") if p.is_file()]
    assert list((data / "tmp").iterdir()) == []
    for provider in ("moonshot", "zai"):
        stats = await gateway.sandbox_stats(provider)
        assert stats["calls"]["upload"] == 0, provider


def assert_error(resp: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("parts", "status", "param", "needle"),
    [
        ([("purpose", None, b"file-extract"), ("file", "e.txt", b"")], 400, "file", "empty"),
        ([("file", "a.txt", b"hello")], 400, "purpose", "purpose"),
        ([("purpose", None, b"nonsense"), ("file", "a.txt", b"hi")], 400, "purpose", "Unknown"),
        (
            [
                ("purpose", None, b"file-extract"),
                ("provider", None, b"openai"),
                ("file", "a.txt", b"hi"),
            ],
            400,
            "provider",
            "Unknown provider",
        ),
        ([("purpose", None, b"file-extract")], 400, "file", "no 'file'"),
        ([("purpose", None, b"file-extract"), ("file", None, b"hi")], 400, "file", "filename"),
        (
            [("purpose", None, b"file-extract"), ("file", "../etc/passwd", b"hi")],
            400,
            "file",
            "separator",
        ),
        (
            [("purpose", None, b"file-extract"), ("file", "a\\b.txt", b"hi")],
            400,
            "file",
            "separator",
        ),
        (
            [("purpose", None, b"file-extract"), ("file", "bad\x07name.txt", b"hi")],
            400,
            "file",
            "control",
        ),
        (
            [("purpose", None, b"file-extract"), ("file", "a.txt", b"1"), ("file", "b.txt", b"2")],
            400,
            "file",
            "exactly one",
        ),
        (
            [
                ("purpose", None, b"file-extract"),
                ("purpose", None, b"batch"),
                ("file", "a.txt", b"x"),
            ],
            400,
            "purpose",
            "twice",
        ),
        (
            [("purpose", None, b"vision"), ("provider", None, b"zai"), ("file", "a.png", b"x")],
            400,
            "purpose",
            "zai",
        ),
        (
            [("purpose", None, b"batch"), ("file", "a.txt", b"x")],
            400,
            None,
            "jsonl",
        ),
    ],
)
async def test_bad_multipart_fields(
    gateway: Gateway,
    client: httpx.AsyncClient,
    parts: list[tuple[str, str | None, bytes]],
    status: int,
    param: str | None,
    needle: str,
) -> None:
    err = assert_error(await raw_post(client, multipart(*parts)), status, param)
    assert needle.lower() in err["message"].lower()
    await assert_nothing_left(gateway)


async def test_too_many_parts(gateway: Gateway, client: httpx.AsyncClient) -> None:
    parts = [("purpose", None, b"file-extract"), ("file", "a.txt", b"x")]
    parts += [(f"extra{i}", None, b"y") for i in range(20)]
    err = assert_error(await raw_post(client, multipart(*parts)), 400)
    assert "too many" in err["message"].lower()
    await assert_nothing_left(gateway)


async def test_truncated_body(gateway: Gateway, client: httpx.AsyncClient) -> None:
    body = multipart(
        ("purpose", None, b"file-extract"), ("file", "a.txt", b"x" * 5000), close=False
    )
    err = assert_error(await raw_post(client, body[:-10]), 400)
    assert "truncated" in err["message"]
    await assert_nothing_left(gateway)


async def test_malformed_body(gateway: Gateway, client: httpx.AsyncClient) -> None:
    err = assert_error(await raw_post(client, b"this is not multipart at all\r\n\r\n"), 400)
    assert "multipart" in err["message"]
    await assert_nothing_left(gateway)


@pytest.mark.parametrize(
    "ctype",
    ["application/json", "text/plain", "application/x-www-form-urlencoded"],
)
async def test_wrong_content_type(gateway: Gateway, client: httpx.AsyncClient, ctype: str) -> None:
    err = assert_error(await raw_post(client, b'{"purpose": "file-extract"}', ctype), 415)
    assert "multipart/form-data" in err["message"]
    await assert_nothing_left(gateway)


async def test_missing_boundary(gateway: Gateway, client: httpx.AsyncClient) -> None:
    assert_error(await raw_post(client, b"x", "multipart/form-data"), 400)
    await assert_nothing_left(gateway)


@pytest.mark.settings(max_upload_bytes=64 * 1024)
async def test_oversize_file_is_refused_while_streaming(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f"file-extract\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; "
            f'name="file"; filename="big.txt"\r\n\r\n'
        ).encode()
        for _ in range(4096):  # up to 256 MiB if the gateway kept reading
            sent += 65536
            yield b"a" * 65536

    resp = await client.post(
        "/v1/files",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    err = assert_error(resp, 413, "file")
    assert "limit" in err["message"]
    assert sent < 4 * 1024 * 1024, "the gateway kept reading after the limit"
    await assert_nothing_left(gateway)


async def test_provider_limit_checked_before_provider_call(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    # Z.ai takes at most 5 MiB images for file-extract; refuse before any provider call.
    resp = await upload(
        client, b"\x89PNG" + b"0" * (5 * 1024 * 1024 + 1), filename="big.png", provider="zai"
    )
    err = assert_error(resp, 400, "file")
    assert "zai" in err["message"]
    await assert_nothing_left(gateway)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "file-doesnotexistdoesnotexist"}, "after"),
    ],
)
async def test_list_parameters_out_of_range(
    client: httpx.AsyncClient, params: dict[str, str | int], param: str
) -> None:
    assert_error(await client.get("/v1/files", params=params), 400, param)


@pytest.mark.parametrize("bad_id", ["nope", "file-short", "file-" + "!" * 24, "x" * 300])
async def test_malformed_ids(client: httpx.AsyncClient, bad_id: str) -> None:
    for method, path in (
        ("GET", f"/v1/files/{bad_id}"),
        ("GET", f"/v1/files/{bad_id}/content"),
        ("GET", f"/v1/files/{bad_id}/extract"),
        ("DELETE", f"/v1/files/{bad_id}"),
    ):
        err = assert_error(await client.request(method, path), 400, "id")
        assert err["code"] == "invalid_file_id"


async def test_refused_mutation_is_audited(gateway: Gateway, client: httpx.AsyncClient) -> None:
    await raw_post(client, multipart(("file", "a.txt", b"hello")))
    async with gateway.runtime.sessionmaker() as session:
        rows = (await session.execute(select(AuditEvent))).scalars().all()
    assert [(r.action, r.outcome, r.status_code) for r in rows] == [
        ("POST /v1/files", "failed", 400)
    ]
    assert rows[0].actor.startswith("key:") and rows[0].request_id


async def test_client_disconnect_mid_upload_leaves_nothing(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
        f"file-extract\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; "
        f'name="file"; filename="cut.txt"\r\n\r\n'
    ).encode() + b"x" * (3 * 1024 * 1024)
    messages: list[Message] = [
        {"type": "http.request", "body": head, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    token = client.headers["authorization"]
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/files",
        "raw_path": b"/v1/files",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
            (b"authorization", token.encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("gateway", 80),
    }
    await gateway.app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    await assert_nothing_left(gateway)


def multipart_with_type(ctype: bytes, data: bytes = b"hello\n") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
        f"file-extract\r\n--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'.encode()
        + b"Content-Type: "
        + ctype
        + b"\r\n\r\n"
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


@pytest.mark.parametrize(
    "ctype",
    [
        b"text/plain\x00",
        b"text/\x01plain",
        b"text/plain; a=\x7f",
        "text/pl\u00e4in".encode(),
        "text/\u4e2d\u6587".encode(),
        b"text",
        b"text/plain; charset",
        b"text/plain\rX-Evil: 1",
        b"a/" + b"b" * 300,
    ],
    ids=repr,
)
async def test_a_part_content_type_that_is_not_a_media_type_is_refused(
    gateway: Gateway, client: httpx.AsyncClient, ctype: bytes
) -> None:
    resp = await raw_post(client, multipart_with_type(ctype))
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    # A bare CR ends the part's header line early: the multipart itself is malformed.
    assert error["param"] == "file" or "malformed" in error["message"], error
    await assert_nothing_left(gateway)


async def test_a_valid_media_type_is_kept_and_served_back(client: httpx.AsyncClient) -> None:
    resp = await raw_post(client, multipart_with_type(b'text/csv; charset="utf-8"'))
    assert resp.status_code == 200, resp.text
    got = await client.get(f"/v1/files/{resp.json()['id']}/content")
    assert got.headers["content-type"] == 'text/csv; charset="utf-8"'


@pytest.mark.parametrize("field", ["purpose", "provider", "expires_after[seconds]"])
async def test_control_characters_in_form_fields_are_refused(
    gateway: Gateway, client: httpx.AsyncClient, field: str
) -> None:
    parts: list[tuple[str, str | None, bytes]] = [("file", "a.txt", b"x\n")]
    values = {"purpose": b"file-extract", field: b"file\x00-extract"}
    parts += [(name, None, value) for name, value in values.items()]
    resp = await raw_post(client, multipart(*parts))
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == field
    await assert_nothing_left(gateway)


@pytest.mark.parametrize(
    "digits", ["\uff13\uff16\uff10\uff10", "\u0663\u0666\u0660\u0660", "3600\u00b2"]
)
async def test_expiry_seconds_take_ascii_digits_only(
    client: httpx.AsyncClient, digits: str
) -> None:
    resp = await client.post(
        "/v1/files",
        data={
            "purpose": "file-extract",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": digits,
        },
        files={"file": ("a.txt", b"x\n", "text/plain")},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "expires_after[seconds]"
