"""Z.ai files API emulation: wire shapes, per-purpose limits and quirks."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.sandbox import ZAI_DEFAULT_RULES, SandboxOptions, create_sandbox_app

BASE = "/zai/api/paas/v4/files"
AUTH = {"Authorization": "Bearer 0123abcd.secretpart"}
FILE_FIELDS = {"id", "object", "bytes", "created_at", "filename", "purpose"}
MiB = 1024 * 1024


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
    content: bytes = b"a,b\n1,2\n",
    filename: str = "table.csv",
    purpose: str | None = "file-extract",
    **fields: str,
) -> httpx.Response:
    data = {"purpose": purpose, **fields} if purpose is not None else dict(fields)
    return await client.post(BASE, headers=AUTH, data=data, files={"file": (filename, content)})


def assert_error(response: httpx.Response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"] == {"code": code, "message": message}
    assert re.fullmatch(r"\d{14}[0-9a-f]{18}", body["request_id"])


def with_rule(purpose: str, **changes: Any) -> dict[str, Any]:
    """Default Z.ai rules with one purpose's rule altered."""
    rules = dict(ZAI_DEFAULT_RULES)
    rules[purpose] = dataclasses.replace(rules[purpose], **changes)
    return rules


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
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}, {"Authorization": ""}])
async def test_missing_key_is_1001(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await client.request(method, path, headers=headers)
    assert_error(
        response,
        401,
        "1001",
        "Authentication parameter not received in Header, unable to authenticate",
    )


async def test_non_bearer_scheme_is_1002(client: httpx.AsyncClient) -> None:
    response = await client.get(BASE, headers={"Authorization": "Basic abc"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "1002"


async def test_jwt_key_accepted(client: httpx.AsyncClient) -> None:
    jwt = "eyJhbGciOiJIUzI1NiIsInNpZ25fdHlwZSI6IlNJR04ifQ.eyJhcGlfa2V5IjoiaWQifQ.c2ln"
    response = await client.get(BASE, headers={"Authorization": f"Bearer {jwt}"})
    assert response.status_code == 200


async def test_upload_returns_exact_file_object(client: httpx.AsyncClient) -> None:
    before = int(time.time())
    response = await upload(client, b"a,b\n1,2\n", "table.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == FILE_FIELDS
    match = re.fullmatch(r"(\d+)_[0-9a-f]{32}", body["id"])
    assert match is not None
    assert int(match.group(1)) == body["created_at"]
    assert before <= body["created_at"] <= int(time.time())
    assert body["object"] == "file"
    assert body["bytes"] == 8
    assert body["filename"] == "table.csv"
    assert body["purpose"] == "file-extract"


@pytest.mark.parametrize(
    ("purpose", "filename", "fields"),
    [
        ("batch", "in.jsonl", {}),
        ("file-extract", "a.PDF", {}),
        ("code-interpreter", "a.txt", {}),
        ("agent", "glossary.xlsx", {}),
        ("voice-clone-input", "voice.wav", {}),
        ("fine-tune", "train.jsonl", {}),
        ("retrieval", "kb.docx", {"knowledge_id": "kb-1"}),
    ],
)
async def test_accepted_purposes(
    client: httpx.AsyncClient, purpose: str, filename: str, fields: dict[str, str]
) -> None:
    response = await upload(client, b"x", filename, purpose, **fields)
    assert response.status_code == 200, response.text
    assert response.json()["purpose"] == purpose


async def test_missing_file_is_1213(client: httpx.AsyncClient) -> None:
    response = await client.post(BASE, headers=AUTH, data={"purpose": "batch"})
    assert_error(response, 400, "1213", "Missing required parameter: file")


async def test_missing_purpose_is_1213(client: httpx.AsyncClient) -> None:
    response = await upload(client, purpose=None)
    assert_error(response, 400, "1213", "Missing required parameter: purpose")


async def test_unknown_purpose_is_1214(client: httpx.AsyncClient) -> None:
    response = await upload(client, purpose="assistants")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "1214"
    assert response.json()["error"]["message"].startswith("Invalid purpose: assistants.")


async def test_purpose_set_is_configurable() -> None:
    rules = {k: v for k, v in ZAI_DEFAULT_RULES.items() if k != "file-extract"}
    async with client_for(zai_purpose_rules=rules) as c:
        response = await upload(c)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "1214"


async def test_empty_file_is_1214(client: httpx.AsyncClient) -> None:
    response = await upload(client, b"")
    assert_error(response, 400, "1214", "File cannot be empty")


async def test_wrong_format_is_1214(client: httpx.AsyncClient) -> None:
    response = await upload(client, b"{}", "in.json", "batch")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "1214"
    assert (
        "Unsupported file format for purpose batch: 'in.json'"
        in (response.json()["error"]["message"])
    )


def test_default_limits_are_documented() -> None:
    options = SandboxOptions()
    rules = options.zai_purpose_rules
    assert options.zai_max_file_bytes == 100 * MiB
    assert options.zai_not_found_status == 404
    assert (rules["file-extract"].max_bytes, rules["file-extract"].image_max_bytes) == (
        50 * MiB,
        5 * MiB,
    )
    assert rules["file-extract"].max_files == 100
    assert rules["code-interpreter"].max_bytes == 20 * MiB
    assert rules["agent"].max_bytes == 100 * MiB
    assert rules["batch"].extensions == frozenset({"jsonl"})
    assert rules["retrieval"].needs_knowledge_id


async def test_over_100mb_is_435_inclusive() -> None:
    async with client_for(zai_max_file_bytes=MiB) as c:
        ok = await upload(c, b"x" * MiB, "in.jsonl", "batch")
        big = await upload(c, b"x" * (MiB + 1), "in.jsonl", "batch")
    assert ok.status_code == 200
    assert_error(big, 435, "1210", "File size exceeds 1MB")


async def test_image_limit_default_5mib(client: httpx.AsyncClient) -> None:
    ok = await upload(client, b"x" * (5 * MiB), "scan.png")
    big = await upload(client, b"x" * (5 * MiB + 1), "scan.png")
    assert ok.status_code == 200
    assert_error(big, 400, "1210", "File size exceeds the 5MB limit for purpose file-extract")


async def test_purpose_size_limit() -> None:
    async with client_for(zai_purpose_rules=with_rule("code-interpreter", max_bytes=10)) as c:
        ok = await upload(c, b"x" * 10, "a.txt", "code-interpreter")
        big = await upload(c, b"x" * 11, "a.txt", "code-interpreter")
    assert ok.status_code == 200
    assert_error(big, 400, "1210", "File size exceeds the 10B limit for purpose code-interpreter")


async def test_retrieval_needs_knowledge_id(client: httpx.AsyncClient) -> None:
    response = await upload(client, b"x", "kb.pdf", "retrieval")
    assert_error(response, 400, "1213", "Missing required parameter: knowledge_id")


async def test_purpose_count_limit() -> None:
    async with client_for(zai_purpose_rules=with_rule("file-extract", max_files=1)) as c:
        assert (await upload(c)).status_code == 200
        blocked = await upload(c)
        other_purpose = await upload(c, b"{}", "in.jsonl", "batch")
    assert_error(
        blocked,
        400,
        "1210",
        "The number of files for purpose file-extract has reached the limit of 1; "
        "please delete unused files and try again",
    )
    assert other_purpose.status_code == 200


async def test_list_shape_default_limit(client: httpx.AsyncClient) -> None:
    ids = [(await upload(client)).json()["id"] for _ in range(21)]
    body = (await client.get(BASE, headers=AUTH)).json()
    assert set(body) == {"object", "data", "has_more"}
    assert body["object"] == "list"
    assert body["has_more"] is True
    assert [f["id"] for f in body["data"]] == ids[::-1][:20]
    assert all(set(f) == FILE_FIELDS for f in body["data"])


async def test_list_pagination_with_after(client: httpx.AsyncClient) -> None:
    ids = [(await upload(client)).json()["id"] for _ in range(5)]
    seen: list[str] = []
    params: dict[str, str] = {"limit": "2", "order": "created_at"}
    pages = 0
    while True:
        body = (await client.get(BASE, headers=AUTH, params=params)).json()
        pages += 1
        seen += [f["id"] for f in body["data"]]
        if not body["has_more"]:
            break
        params["after"] = seen[-1]
    assert seen == ids[::-1]
    assert pages == 3


async def test_list_after_past_end_and_unknown(client: httpx.AsyncClient) -> None:
    only = (await upload(client)).json()["id"]
    for after in (only, "1_ffff"):
        body = (await client.get(BASE, headers=AUTH, params={"after": after})).json()
        assert body == {"object": "list", "data": [], "has_more": False}


async def test_list_purpose_filter(client: httpx.AsyncClient) -> None:
    await upload(client)
    batch = (await upload(client, b"{}", "in.jsonl", "batch")).json()
    body = (await client.get(BASE, headers=AUTH, params={"purpose": "batch"})).json()
    assert body["data"] == [batch]
    assert body["has_more"] is False


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1"])
async def test_list_bad_limit_is_400(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get(BASE, headers=AUTH, params={"limit": limit})
    assert_error(response, 400, "1214", f"Invalid limit: {limit}. Must be between 1 and 100")


@pytest.mark.parametrize("limit", ["1", "100"])
async def test_list_limit_bounds_accepted(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get(BASE, headers=AUTH, params={"limit": limit})
    assert response.status_code == 200


@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_list_bad_order_is_400(client: httpx.AsyncClient, order: str) -> None:
    response = await client.get(BASE, headers=AUTH, params={"order": order})
    assert_error(response, 400, "1214", f"Invalid order: {order}. Only created_at is supported")


async def test_retrieve(client: httpx.AsyncClient) -> None:
    created = (await upload(client)).json()
    response = await client.get(f"{BASE}/{created['id']}", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == created


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("GET", "/content"), ("DELETE", "")])
async def test_unknown_id_is_404_1214(client: httpx.AsyncClient, method: str, suffix: str) -> None:
    file_id = "1741136989_8dd96cbee6274251b7e4c9568779bd6a"
    response = await client.request(method, f"{BASE}/{file_id}{suffix}", headers=AUTH)
    assert_error(response, 404, "1214", f"The file does not exist or has been deleted: {file_id}")


async def test_not_found_status_is_configurable() -> None:
    async with client_for(zai_not_found_status=400) as c:
        response = await c.get(f"{BASE}/nope", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "1214"


async def test_batch_content_is_raw(client: httpx.AsyncClient) -> None:
    raw = b'{"custom_id":"1"}\n\xff\n'
    created = (await upload(client, raw, "in.jsonl", "batch")).json()
    response = await client.get(f"{BASE}/{created['id']}/content", headers=AUTH)
    assert response.status_code == 200
    assert response.content == raw


async def test_extract_content_json(client: httpx.AsyncClient) -> None:
    created = (await upload(client, "名,值\n1,2\n".encode(), "t.csv")).json()
    response = await client.get(f"{BASE}/{created['id']}/content", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "content": "名,值\n1,2\n",
        "file_type": "text/csv",
        "filename": "t.csv",
        "title": "",
        "type": "file",
    }


async def test_extract_binary_is_400(client: httpx.AsyncClient) -> None:
    created = (await upload(client, b"\x89PNG\r\n\x1a\n\xff", "scan.png")).json()
    response = await client.get(f"{BASE}/{created['id']}/content", headers=AUTH)
    assert_error(response, 400, "1214", "Failed to extract text from the file")


async def test_other_purpose_content_is_400(client: httpx.AsyncClient) -> None:
    created = (await upload(client, b"print(1)", "a.txt", "code-interpreter")).json()
    response = await client.get(f"{BASE}/{created['id']}/content", headers=AUTH)
    assert_error(
        response, 400, "1214", "File content is not available for purpose code-interpreter"
    )


async def test_delete(client: httpx.AsyncClient) -> None:
    created = (await upload(client)).json()
    response = await client.delete(f"{BASE}/{created['id']}", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"id": created["id"], "object": "file", "deleted": True}
    assert (await client.get(BASE, headers=AUTH)).json()["data"] == []
    assert (await client.delete(f"{BASE}/{created['id']}", headers=AUTH)).status_code == 404


async def test_unknown_route_uses_zai_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/zai/api/paas/v4/batches", headers=AUTH)
    assert_error(response, 404, "1222", "The API does not exist.")
