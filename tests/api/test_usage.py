"""A key reads its own tenant's usage, quotas and rate limit, never another tenant's."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway


async def _upload(gateway: Gateway, token: str, body: bytes) -> None:
    async with gateway.client(token) as c:
        resp = await c.post(
            "/v1/files",
            data={"purpose": "file-extract"},
            files={"file": ("u.txt", body, "text/plain")},
        )
        assert resp.status_code == 200, resp.text


async def test_usage_counts_only_the_callers_tenant(gateway: Gateway) -> None:
    acme = await gateway.key("acme")
    globex = await gateway.key("globex", ("files:read",))
    await _upload(gateway, acme, b"twelve bytes")
    await _upload(gateway, acme, b"four")
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        quota = await ops.put("/admin/tenants/acme/quota", json={"max_bytes": 1000, "max_files": 5})
        assert quota.status_code == 200
    async with gateway.client(acme) as c:
        mine = (await c.get("/v1/usage")).json()
    assert mine == {
        "object": "usage",
        "tenant": "acme",
        "tenant_id": mine["tenant_id"],
        "files": 2,
        "bytes": 16,
        "max_files": 5,
        "max_bytes": 1000,
        "rate_limit_per_minute": None,
    }
    async with gateway.client(globex) as c:
        theirs = (await c.get("/v1/usage")).json()
    assert (theirs["tenant"], theirs["files"], theirs["bytes"]) == ("globex", 0, 0)
    assert theirs["max_bytes"] is None and theirs["tenant_id"] != mine["tenant_id"]


@pytest.mark.settings(default_rate_limit_per_minute=40)
async def test_usage_shows_the_rate_limit_that_applies(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        created = await ops.post(
            "/admin/keys", json={"tenant": "acme", "name": "slow", "rate_limit_per_minute": 7}
        )
    async with gateway.client(created.json()["key"]) as c:
        assert (await c.get("/v1/usage")).json()["rate_limit_per_minute"] == 7
    async with gateway.client(await gateway.key("acme")) as c:
        assert (await c.get("/v1/usage")).json()["rate_limit_per_minute"] == 40


async def test_usage_needs_a_key_with_read_scope(gateway: Gateway) -> None:
    async with gateway.client() as anonymous:
        assert (await anonymous.get("/v1/usage")).status_code == 401
    async with gateway.client(await gateway.key("acme", ("files:write",))) as c:
        refused = await c.get("/v1/usage")
    assert refused.status_code == 403 and refused.json()["error"]["type"]
