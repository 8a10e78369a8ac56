"""Z.ai files API emulation: its own quirks (non-bearer and JWT keys, time-prefixed ids,
per-purpose rules and limits, paged lists). What it shares with the Moonshot emulation is in
test_sandboxes.py."""

from __future__ import annotations

import dataclasses
import re
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


async def test_non_bearer_scheme_is_1002(client: httpx.AsyncClient) -> None:
    response = await client.get(BASE, headers={"Authorization": "Basic abc"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "1002"


async def test_jwt_key_accepted(client: httpx.AsyncClient) -> None:
    jwt = "eyJhbGciOiJIUzI1NiIsInNpZ25fdHlwZSI6IlNJR04ifQ.eyJhcGlfa2V5IjoiaWQifQ.c2ln"
    response = await client.get(BASE, headers={"Authorization": f"Bearer {jwt}"})
    assert response.status_code == 200


async def test_an_id_starts_with_its_created_at(client: httpx.AsyncClient) -> None:
    response = await upload(client, b"a,b\n1,2\n", "table.csv")
    assert response.status_code == 200
    body = response.json()
    match = re.fullmatch(r"(\d+)_[0-9a-f]{32}", body["id"])
    assert match is not None
    assert int(match.group(1)) == body["created_at"]


async def test_purpose_set_is_configurable() -> None:
    rules = {k: v for k, v in ZAI_DEFAULT_RULES.items() if k != "file-extract"}
    async with client_for(zai_purpose_rules=rules) as c:
        response = await upload(c)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "1214"


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


async def test_zai_max_files_caps_each_counted_purpose_alone() -> None:
    async with client_for(zai_max_files=1) as c:
        first = [await upload(c, f"a,{n}\n".encode(), f"t{n}.csv") for n in range(2)]
        agent = [await upload(c, f"{n}".encode(), f"g{n}.txt", "agent") for n in range(2)]
        batches = [await upload(c, b"{}", f"in{n}.jsonl", "batch") for n in range(2)]
    assert [r.status_code for r in first] == [200, 400]
    assert [r.status_code for r in agent] == [200, 400]
    assert_error(
        agent[1],
        400,
        "1210",
        "The number of files for purpose agent has reached the limit of 1; "
        "please delete unused files and try again",
    )
    assert [r.status_code for r in batches] == [200, 200]  # batch keeps its 1,000


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


async def test_not_found_status_is_configurable() -> None:
    async with client_for(zai_not_found_status=400) as c:
        response = await c.get(f"{BASE}/nope", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "1214"
