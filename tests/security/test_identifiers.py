"""Identifiers are stored exactly or refused: no truncation, no look-alike tenants."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from app.core.db import utcnow
from app.models import ApiKey
from tests.conftest import Gateway
from tests.support.processes import gateway_env, run_cli

LOOK_ALIKES = [
    "alpha\u200b",  # zero width space
    "\u202ealpha",  # right-to-left override
    "\uff41\uff4c\uff50\uff48\uff41",  # full-width
    " alpha",
    "alpha ",
    "a" * 101,
    "bad\x01",
]


@pytest.mark.parametrize("tenant", LOOK_ALIKES)
async def test_admin_refuses_look_alike_tenant_names(gateway: Gateway, tenant: str) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        created = await ops.post("/admin/keys", json={"tenant": tenant, "name": "svc"})
        assert created.status_code == 400, created.text
        assert created.json()["error"]["param"] == "tenant"
        names = [t["name"] for t in (await ops.get("/admin/tenants")).json()["data"]]
    assert names == ["ops"]


async def test_tenant_names_compare_in_nfc_and_filters_take_names(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        first = await ops.post("/admin/keys", json={"tenant": "caf\u00e9", "name": "a"})
        second = await ops.post("/admin/keys", json={"tenant": "cafe\u0301", "name": "b"})
        assert first.status_code == second.status_code == 201
        assert first.json()["tenant_id"] == second.json()["tenant_id"]
        by_name = (await ops.get("/admin/keys", params={"tenant": "cafe\u0301"})).json()["data"]
        assert {k["name"] for k in by_name} == {"a", "b"}
        by_id = await ops.get("/admin/keys", params={"tenant_id": first.json()["tenant_id"]})
        assert {k["name"] for k in by_id.json()["data"]} == {"a", "b"}
        assert (await ops.get("/admin/keys", params={"tenant": "nobody"})).json()["data"] == []
        quota = await ops.put("/admin/tenants/cafe\u0301/quota", json={"max_files": 3})
        assert quota.status_code == 200 and quota.json()["name"] == "caf\u00e9"
        assert quota.json()["id"] == first.json()["tenant_id"]


@pytest.mark.parametrize(
    "body", [{"max_bytes": 2**63}, {"max_files": 2**31}, {"max_bytes": 10**30}]
)
async def test_quota_beyond_the_column_is_a_400(gateway: Gateway, body: dict[str, int]) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        answer = await ops.put("/admin/tenants/ops/quota", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] in body


async def test_key_names_are_never_cut(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        long = await ops.post("/admin/keys", json={"tenant": "acme", "name": "n" * 101})
        assert long.status_code in (400, 422), long.text
        fits = await ops.post("/admin/keys", json={"tenant": "acme", "name": "n" * 100})
        assert fits.status_code == 201 and fits.json()["name"] == "n" * 100


async def test_rotating_an_expired_key_is_refused(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    old = await gateway.key("acme")
    old_id = old.split("_")[1]
    async with gateway.runtime.sessionmaker() as session:
        past = utcnow() - timedelta(minutes=1)
        await session.execute(update(ApiKey).where(ApiKey.id == old_id).values(expires_at=past))
        await session.commit()
    async with gateway.client(admin) as ops:
        rotated = await ops.post(f"/admin/keys/{old_id}/rotate", json={"overlap_seconds": 0})
    assert rotated.status_code == 404, rotated.text


def test_cli_refuses_look_alike_tenant(tmp_path: Path) -> None:
    env = gateway_env(
        database_url=f"sqlite:///{tmp_path / 'cli.db'}",
        data_dir=tmp_path / "data",
        secret_key="cli-secret-key-for-hmac-0123456789",
    )
    refused = run_cli(["keys", "create", "--tenant", "alpha\u200b", "--name", "n"], env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Invalid tenant name" in refused.stderr and "Traceback" not in refused.stderr
    made = run_cli(["keys", "create", "--tenant", "alpha", "--name", "n"], env)
    assert made.returncode == 0, made.stderr
