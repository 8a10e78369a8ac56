"""Operators issue, list and revoke API keys."""

from __future__ import annotations

from sqlalchemy import select

from app.models import AuditEvent
from tests.conftest import Gateway


async def test_issue_list_and_revoke_keys(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        created = await ops.post(
            "/admin/keys", json={"tenant": "acme", "name": "ingest", "scopes": ["files:read"]}
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["key"].startswith(f"fg_{body['id']}_")
        assert body["scopes"] == ["files:read"]
        listed = (await ops.get("/admin/keys")).json()["data"]
        assert body["id"] in {k["id"] for k in listed}
        assert all("key" not in k for k in listed)
        async with gateway.client(body["key"]) as new:
            assert (await new.get("/v1/files")).status_code == 200
        assert (await ops.delete(f"/admin/keys/{body['id']}")).status_code == 200
        assert (await ops.delete("/admin/keys/zzzzzzzzzzzz")).status_code == 404
    async with gateway.runtime.sessionmaker() as session:
        actions = (await session.execute(select(AuditEvent.action))).scalars().all()
    assert "key.create" in actions and "key.revoke" in actions
    async with gateway.runtime.sessionmaker() as session:
        details = (await session.execute(select(AuditEvent.detail))).scalars().all()
    assert all(body["key"] not in (d or "") for d in details)


async def test_key_create_rejects_unknown_fields_and_scopes(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        bad_scope = await ops.post(
            "/admin/keys", json={"tenant": "acme", "name": "n", "scopes": ["root"]}
        )
        assert bad_scope.status_code == 400
        extra = await ops.post(
            "/admin/keys", json={"tenant": "acme", "name": "n", "tenant_id": "ten_x"}
        )
        assert extra.status_code == 400
        assert extra.json()["error"]["param"] == "tenant_id"
