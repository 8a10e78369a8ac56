"""Moonshot (Kimi) files API emulation: its own quirks (the byte-exact 401, status fields,
configurable purposes, account-wide limits, unpaged lists, the openai SDK). What it shares
with the Z.ai emulation is in test_sandboxes.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from app.sandbox import SandboxOptions, create_sandbox_app

BASE = "/moonshot/v1/files"
AUTH = {"Authorization": "Bearer sk-test"}
FILE_FIELDS = {
    "id",
    "object",
    "bytes",
    "created_at",
    "filename",
    "purpose",
    "status",
    "status_details",
}
JSON_UTF8 = "application/json; charset=utf-8"


def client_for(**options: Any) -> httpx.AsyncClient:
    """An in-process client for a fresh sandbox."""
    transport = httpx.ASGITransport(app=create_sandbox_app(**options))
    return httpx.AsyncClient(transport=transport, base_url="http://sandbox")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for() as c:
        yield c


async def upload(
    client: httpx.AsyncClient,
    content: bytes = b"hello world",
    filename: str = "notes.txt",
    purpose: str | None = "file-extract",
) -> httpx.Response:
    data = {"purpose": purpose} if purpose is not None else {}
    return await client.post(
        BASE, headers=AUTH, data=data, files={"file": (filename, content, "text/plain")}
    )


def assert_error(response: httpx.Response, status: int, type_: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": {"message": message, "type": type_}}
    assert response.headers["content-type"] == JSON_UTF8
    assert response.headers["msh-request-id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", BASE),
        ("GET", BASE),
        ("GET", f"{BASE}/x"),
        ("GET", f"{BASE}/x/content"),
        ("DELETE", f"{BASE}/x"),
    ],
)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "sk-1"}])
async def test_auth_401_is_the_exact_84_byte_body(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.content == (
        b'{"error":{"message":"Invalid Authentication","type":"invalid_authentication_error"}}'
    )
    assert len(response.content) == 84


async def test_a_new_file_reports_status_ok(client: httpx.AsyncClient) -> None:
    response = await upload(client, b"hello world", "notes.txt")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["status_details"] == ""


async def test_missing_purpose_defaults_when_configured() -> None:
    async with client_for(moonshot_default_purpose="file-extract") as c:
        response = await upload(c, purpose=None)
    assert response.status_code == 200
    assert response.json()["purpose"] == "file-extract"


async def test_purposes_option_restricts() -> None:
    async with client_for(moonshot_purposes=("file-extract",)) as c:
        response = await upload(c, b"{}", "a.jsonl", "batch")
    assert response.json()["error"]["message"] == (
        "Invalid purpose: batch, only file-extract accepted"
    )


def test_default_limits_are_documented() -> None:
    options = SandboxOptions()
    assert options.moonshot_max_file_bytes == 100 * 1024 * 1024
    assert options.moonshot_max_files == 1000
    assert options.moonshot_max_total_bytes == 10 * 1024 * 1024 * 1024
    assert options.moonshot_default_purpose is None


async def test_max_file_count() -> None:
    async with client_for(moonshot_max_files=2) as c:
        assert (await upload(c)).status_code == 200
        assert (await upload(c)).status_code == 200
        response = await upload(c)
        stats = (await c.get("/moonshot/_stats")).json()
    assert_error(
        response,
        400,
        "invalid_request_error",
        "The number of files you have uploaded exceeded the max file count 2, "
        "please delete previous uploaded files",
    )
    assert stats["files"] == 2


async def test_max_total_bytes() -> None:
    async with client_for(moonshot_max_total_bytes=10) as c:
        assert (await upload(c, b"123456")).status_code == 200
        response = await upload(c, b"12345")
        assert (await upload(c, b"1234")).status_code == 200
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["message"].startswith(
        "The total size of files you have uploaded exceeded the max total size 10B"
    )


async def test_non_multipart_body_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(BASE, headers=AUTH, json={"purpose": "file-extract"})
    assert_error(response, 400, "invalid_request_error", "Invalid request: file is required")


async def test_list_shape_and_order(client: httpx.AsyncClient) -> None:
    first = (await upload(client, filename="1.txt")).json()
    second = (await upload(client, filename="2.txt")).json()
    response = await client.get(BASE, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"object", "data"}
    assert body["object"] == "list"
    assert body["data"] == [second, first]


async def test_list_honours_after(client: httpx.AsyncClient) -> None:
    ids = [(await upload(client)).json()["id"] for _ in range(3)]
    newest_first = ids[::-1]
    page = (await client.get(BASE, headers=AUTH, params={"after": newest_first[0]})).json()
    assert [f["id"] for f in page["data"]] == newest_first[1:]
    last = (await client.get(BASE, headers=AUTH, params={"after": newest_first[-1]})).json()
    assert last == {"object": "list", "data": []}
    unknown = (await client.get(BASE, headers=AUTH, params={"after": "nope"})).json()
    assert unknown["data"] == []


async def test_list_empty(client: httpx.AsyncClient) -> None:
    response = await client.get(BASE, headers=AUTH)
    assert response.json() == {"object": "list", "data": []}


async def test_extract_content_file_type_follows_extension(client: httpx.AsyncClient) -> None:
    created = (await upload(client, b"%PDF-1.4 text", "x.pdf")).json()
    body = (await client.get(f"{BASE}/{created['id']}/content", headers=AUTH)).json()
    assert body["file_type"] == "application/pdf"
    assert body["content"] == "%PDF-1.4 text"


async def test_id_prefix_option() -> None:
    async with client_for(moonshot_id_prefix="file_") as c:
        file_id = (await upload(c)).json()["id"]
    assert re.fullmatch(r"file_[0-9a-z]{20}", file_id)


async def test_apps_have_independent_stores() -> None:
    async with client_for() as a, client_for() as b:
        await upload(a)
        assert len((await a.get(BASE, headers=AUTH)).json()["data"]) == 1
        assert (await b.get(BASE, headers=AUTH)).json()["data"] == []


# Moonshot's purpose is outside openai-python's Literal; the SDK sends it as-is.
MOONSHOT_PURPOSE: Any = "file-extract"


async def test_openai_sdk_roundtrip(sandbox_server: str) -> None:
    async with httpx.AsyncClient(base_url=f"{sandbox_server}/sandbox") as control:
        assert (await control.post("/moonshot/_reset")).status_code == 200
    async with openai.AsyncOpenAI(
        api_key="sk-test", base_url=f"{sandbox_server}/sandbox/moonshot/v1", max_retries=0
    ) as sdk:
        created = await sdk.files.create(
            file=("notes.txt", b"the quick brown fox", "text/plain"), purpose=MOONSHOT_PURPOSE
        )
        other = await sdk.files.create(file=b"second file", purpose=MOONSHOT_PURPOSE)
        assert created.model_dump()["status"] == "ok"
        assert other.filename == "upload"
        listed = [f.id async for f in sdk.files.list()]
        assert listed == [other.id, created.id]
        retrieved = await sdk.files.retrieve(created.id)
        assert retrieved.bytes == 19
        assert retrieved.filename == "notes.txt"
        content = await sdk.files.content(created.id)
        assert '"content":"the quick brown fox"' in content.text
        deleted = await sdk.files.delete(created.id)
        assert deleted.deleted is True
        assert [f.id async for f in sdk.files.list()] == [other.id]
        with pytest.raises(openai.NotFoundError):
            await sdk.files.retrieve(created.id)
