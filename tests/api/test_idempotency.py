"""The Idempotency-Key dependency: final errors are stored, retryable ones free the key, and
the stored request fingerprints keep matching across versions."""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select

from app.jobs import queue
from app.jobs.queue import JobKind
from app.models import ApiKey, IdempotencyKey, Job, JobState
from tests.conftest import Gateway


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
