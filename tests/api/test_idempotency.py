"""The Idempotency-Key dependency: final errors are stored, retryable ones free the key, keys
are per tenant, and the stored request fingerprints keep matching across versions."""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select

from app.jobs import queue
from app.jobs.queue import JobKind
from app.models import ApiKey, IdempotencyKey, Job, JobState
from tests.conftest import Gateway
from tests.security.conftest import table_rows, upload
from tests.security.test_tenant_isolation import two_tenants


def digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


async def stored_keys(gateway: Gateway) -> list[IdempotencyKey]:
    async with gateway.runtime.sessionmaker() as session:
        return list((await session.execute(select(IdempotencyKey))).scalars().all())


async def test_a_final_client_error_is_stored_and_replayed(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    headers = {"Idempotency-Key": "retry-missing"}
    async with gateway.client(admin) as ops:
        first = await ops.post("/admin/jobs/999999/retry", headers=headers)
        again = await ops.post("/admin/jobs/999999/retry", headers=headers)
    assert first.status_code == again.status_code == 404
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    [row] = await stored_keys(gateway)
    assert (row.state, row.status_code) == ("done", 404)
    assert row.fingerprint == digest('{"id":999999,"route":"POST /admin/jobs/retry"}')


async def test_a_conflict_frees_the_key_so_the_retry_runs(gateway: Gateway) -> None:
    async with gateway.runtime.sessionmaker() as session:
        await queue.enqueue(
            session=session, kind=JobKind.RECONCILE, payload={}, dedupe_key="idem:t"
        )
        [done] = (await session.execute(select(Job))).scalars().all()
        done.state = JobState.DONE
        await session.flush()
        await queue.enqueue(
            session=session, kind=JobKind.RECONCILE, payload={}, dedupe_key="idem:t"
        )
        await session.commit()
        done_id = done.id
    admin = await gateway.key("ops", ("admin",))
    headers = {"Idempotency-Key": "retry-twin"}
    async with gateway.client(admin) as ops:
        refused = await ops.post(f"/admin/jobs/{done_id}/retry", headers=headers)
        assert refused.status_code == 409, refused.text
        assert await stored_keys(gateway) == []
        async with gateway.runtime.sessionmaker() as session:
            twin = (
                await session.execute(select(Job).where(Job.state == JobState.QUEUED))
            ).scalar_one()
            twin.state = JobState.DONE
            await session.commit()
        retried = await ops.post(f"/admin/jobs/{done_id}/retry", headers=headers)
    assert retried.status_code == 200, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert retried.json()["state"] == JobState.QUEUED
    [row] = await stored_keys(gateway)
    assert (row.state, row.status_code) == ("done", 200)


async def test_a_secret_answer_is_stored_without_its_secret(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        body = {"tenant": "acme", "name": "svc"}
        headers = {"Idempotency-Key": "issue-1"}
        created = await ops.post("/admin/keys", json=body, headers=headers)
        again = await ops.post("/admin/keys", json=body, headers=headers)
    assert created.status_code == again.status_code == 201
    assert created.json()["key"].startswith("fg_")
    # The replay names the same key but cannot give its secret again.
    assert again.json()["key"] is None and again.json()["id"] == created.json()["id"]
    [row] = await stored_keys(gateway)
    assert row.fingerprint == digest(
        '{"body":{"expires_at":null,"name":"svc","rate_limit_per_minute":null,'
        '"scopes":["files:read","files:write"],"tenant":"acme"},"route":"POST /admin/keys"}'
    )
    assert created.json()["key"] not in (row.response_body or "")
    assert '"key": null' in (row.response_body or "")
    async with gateway.runtime.sessionmaker() as session:
        keys = await session.scalar(select(func.count()).select_from(ApiKey))
    assert keys == 2  # the admin key and one issued key


async def test_idempotency_keys_are_per_tenant(gateway: Gateway) -> None:
    t = await two_tenants(gateway)
    async with gateway.client(t.acme) as a, gateway.client(t.globex) as g:
        # The same key and the same request from two tenants: two files, no replay across.
        first = await upload(a, b"shared bytes\n", headers={"Idempotency-Key": "k-same"})
        second = await upload(g, b"shared bytes\n", headers={"Idempotency-Key": "k-same"})
        assert first.status_code == second.status_code == 200
        assert "idempotent-replayed" not in second.headers
        assert second.json()["id"] != first.json()["id"]
        assert (await g.get(f"/v1/files/{second.json()['id']}")).status_code == 200
        assert (await g.get(f"/v1/files/{first.json()['id']}")).status_code == 404

        # A key another tenant used for a different request is free: no 422 "key reused".
        theirs = await upload(g, b"globex only\n", headers={"Idempotency-Key": "k-other"})
        mine = await upload(a, b"acme only\n", headers={"Idempotency-Key": "k-other"})
        assert theirs.status_code == mine.status_code == 200, mine.text
        assert "idempotent-replayed" not in mine.headers
        assert mine.json()["id"] != theirs.json()["id"]
        assert mine.json()["sha256"] == hashlib.sha256(b"acme only\n").hexdigest()

        # The same key on a replication answers each tenant about its own file.
        ra = await a.post(
            f"/v1/files/{t.acme_file}/providers",
            json={"provider": "zai"},
            headers={"Idempotency-Key": "k-copy"},
        )
        rg = await g.post(
            f"/v1/files/{t.globex_file['id']}/providers",
            json={"provider": "moonshot"},
            headers={"Idempotency-Key": "k-copy"},
        )
        assert ra.status_code == rg.status_code == 200
        assert ra.json()["id"] == t.acme_file and rg.json()["id"] == t.globex_file["id"]
        assert "idempotent-replayed" not in rg.headers

        # Control: within one tenant the key does replay.
        again = await upload(a, b"shared bytes\n", headers={"Idempotency-Key": "k-same"})
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.json() == first.json()
        reused = await upload(a, b"other bytes\n", headers={"Idempotency-Key": "k-same"})
        assert reused.status_code == 422
        assert reused.json()["error"]["code"] == "idempotency_key_reused"

    rows = await table_rows(gateway, "idempotency_keys")
    by_key: dict[str, set[str]] = {}
    for row in rows:
        by_key.setdefault(row["key"], set()).add(row["tenant_id"])
    assert {k: len(v) for k, v in by_key.items()} == {"k-same": 2, "k-other": 2, "k-copy": 2}
