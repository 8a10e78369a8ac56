"""Idempotent POSTs, tenant quotas, key expiry and rotation, last-used tracking."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from time import time_ns

import httpx
from sqlalchemy import func, select

from app.core.config import Settings
from app.models import ApiKey, File, IdempotencyKey
from tests.api.test_files import TEXT, upload
from tests.conftest import Gateway, started_gateway
from tests.support.clock import FakeClock


async def test_idempotent_upload_replays_and_creates_nothing(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    headers = {"Idempotency-Key": "upload-1"}
    first = await client.post(
        "/v1/files",
        data={"purpose": "file-extract"},
        files={"file": ("a.txt", TEXT, "text/plain")},
        headers=headers,
    )
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    # A new multipart boundary (httpx picks one per request) still matches.
    second = await client.post(
        "/v1/files",
        data={"purpose": "file-extract"},
        files={"file": ("a.txt", TEXT, "text/plain")},
        headers=headers,
    )
    assert second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 1
    different = await client.post(
        "/v1/files",
        data={"purpose": "file-extract"},
        files={"file": ("a.txt", b"other bytes", "text/plain")},
        headers=headers,
    )
    assert different.status_code == 422
    assert different.json()["error"]["code"] == "idempotency_key_reused"


async def test_concurrent_same_key_one_runs_other_conflicts_or_replays(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    await gateway.sandbox_fault("moonshot", status=None, latency_ms=300, rate=1.0)
    headers = {"Idempotency-Key": "race"}

    async def send() -> httpx.Response:
        return await client.post(
            "/v1/files",
            data={"purpose": "file-extract"},
            files={"file": ("a.txt", TEXT, "text/plain")},
            headers=headers,
        )

    results = await asyncio.gather(send(), send())
    codes = sorted(r.status_code for r in results)
    assert codes in ([200, 409], [200, 200]), codes
    if codes == [200, 409]:
        conflict = next(r for r in results if r.status_code == 409)
        assert conflict.json()["error"]["code"] == "idempotency_key_in_use"
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 1


async def test_tenant_quota_on_files_and_bytes(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    token = await gateway.key("acme")
    async with gateway.client(admin) as ops, gateway.client(token) as acme:
        set_files = await ops.put("/admin/tenants/acme/quota", json={"max_files": 1})
        assert set_files.status_code == 200 and set_files.json()["max_files"] == 1
        assert (await upload(acme, b"first\n")).status_code == 200
        refused = await upload(acme, b"second\n")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "quota_exceeded"
        # a dedup hit adds nothing, so it is still answered
        assert (await upload(acme, b"first\n")).status_code == 200
        await ops.put("/admin/tenants/acme/quota", json={"max_files": None, "max_bytes": 10})
        too_big = await upload(acme, b"more than ten bytes\n")
        assert too_big.status_code == 403 and "quota" in too_big.json()["error"]["message"]
        tenants = (await ops.get("/admin/tenants")).json()["data"]
        acme_row = next(t for t in tenants if t["name"] == "acme")
        assert acme_row["used_files"] == 1 and acme_row["max_bytes"] == 10
        assert (await ops.put("/admin/tenants/nobody/quota", json={})).status_code == 404
    async with gateway.runtime.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(File)) == 1
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 1


async def test_expired_key_is_refused(gateway: Gateway, clock: FakeClock) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        past = await ops.post(
            "/admin/keys",
            json={"tenant": "acme", "name": "n", "expires_at": "2020-01-01T00:00:00Z"},
        )
        assert past.status_code == 400 and past.json()["error"]["param"] == "expires_at"
        soon = clock.now() + timedelta(seconds=2)
        created = await ops.post(
            "/admin/keys",
            json={"tenant": "acme", "name": "n", "expires_at": soon.isoformat()},
        )
        token = created.json()["key"]
    async with gateway.client(token) as c:
        assert (await c.get("/v1/files")).status_code == 200
        clock.advance(2.2)
        gateway.runtime.identity.forget_keys()
        assert (await c.get("/v1/files")).status_code == 401


async def test_rotation_keeps_old_key_during_overlap_only(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    old = await gateway.key("acme")
    old_id = old.split("_")[1]
    async with gateway.client(admin) as ops:
        rotated = await ops.post(f"/admin/keys/{old_id}/rotate", json={"overlap_seconds": 0})
        assert rotated.status_code == 201
        assert rotated.json()["rotated_from"] == old_id
        new = rotated.json()["key"]
    gateway.runtime.identity.forget_keys()
    async with gateway.client(new) as c:
        assert (await c.get("/v1/files")).status_code == 200
    async with gateway.client(old) as c:
        assert (await c.get("/v1/files")).status_code == 401
    other = await gateway.key("acme")
    async with gateway.client(admin) as ops:
        overlap = await ops.post(
            f"/admin/keys/{other.split('_')[1]}/rotate", json={"overlap_seconds": 3600}
        )
    assert overlap.json()["key"] != other
    gateway.runtime.identity.forget_keys()
    async with gateway.client(other) as c:
        assert (await c.get("/v1/files")).status_code == 200


async def test_last_used_is_recorded(gateway: Gateway, client: httpx.AsyncClient) -> None:
    await client.get("/v1/files")
    async with gateway.runtime.sessionmaker() as session:
        used = (await session.execute(select(ApiKey.last_used_at))).scalars().all()
    assert [u for u in used if u is not None]


async def test_per_key_rate_limit_is_shared_by_processes(
    gateway: Gateway, settings: Settings
) -> None:
    from app.main import create_app
    from tests.conftest import REDIS_URL

    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        created = await ops.post(
            "/admin/keys",
            json={"tenant": "acme", "name": f"limited-{time_ns()}", "rate_limit_per_minute": 3},
        )
    token = created.json()["key"]
    async with gateway.client(token) as c:
        codes = [(await c.get("/v1/files")).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        ok_headers = (await c.get("/health/live")).headers
        refused = await c.get("/v1/files")
    assert "ratelimit-limit" not in ok_headers  # only routes that authenticate count
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "3"
    assert refused.headers["ratelimit-remaining"] == "0"
    if REDIS_URL:
        other = create_app(settings)  # a second process on the same Redis
        async with other.router.lifespan_context(other):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=other),
                base_url="http://g",
                headers={"Authorization": f"Bearer {token}"},
            ) as c2:
                assert (await c2.get("/v1/files")).status_code == 429


async def test_revocation_reaches_every_process_within_five_seconds(
    gateway: Gateway, settings: Settings, sandbox_reset: str
) -> None:
    admin = await gateway.key("ops", ("admin",))
    token = await gateway.key("acme")
    clock = FakeClock()  # the other process's
    async with started_gateway(settings, sandbox_reset, clock=clock) as other:
        async with other.client(token) as c:
            assert (await c.get("/v1/files")).status_code == 200  # now cached there
            async with gateway.client(admin) as ops:
                await ops.delete(f"/admin/keys/{token.split('_')[1]}")
            clock.advance(5)
            assert (await c.get("/v1/files")).status_code == 401, "revocation not seen within 5 s"


async def test_old_idempotency_keys_are_forgotten(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    from app.jobs import queue
    from app.jobs.queue import JobKind
    from app.jobs.worker import Worker

    headers = {"Idempotency-Key": "old"}
    await client.post(
        "/v1/files",
        data={"purpose": "file-extract"},
        files={"file": ("a.txt", b"x1", "text/plain")},
        headers=headers,
    )
    async with gateway.runtime.sessionmaker() as session:
        row = (await session.execute(select(IdempotencyKey))).scalar_one()
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        await queue.enqueue(session=session, kind=JobKind.EXPIRE, payload={})
        await session.commit()
    await Worker(gateway.runtime).drain()
    async with gateway.runtime.sessionmaker() as session:
        assert (await session.execute(select(IdempotencyKey))).first() is None
