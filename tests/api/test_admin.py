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


async def test_audit_trail_filters_pages_and_exports(gateway: Gateway) -> None:
    import json

    admin = await gateway.key("ops", ("admin",))
    user = await gateway.key("acme")
    async with gateway.client(user) as acme:
        for i in range(3):
            await acme.post(
                "/v1/files",
                data={"purpose": "file-extract"},
                files={"file": (f"f{i}.txt", f"audit {i}".encode(), "text/plain")},
            )
    async with gateway.client("fg_nosuchkeyid_" + "x" * 43) as bad:
        await bad.get("/v1/files")
    async with gateway.client(admin) as ops:
        creates = (await ops.get("/admin/audit", params={"action": "file.create"})).json()
        assert len(creates["data"]) == 3 and creates["has_more"] is False
        assert all(e["actor"].startswith("key:") for e in creates["data"])
        denied = (await ops.get("/admin/audit", params={"outcome": "denied"})).json()["data"]
        assert [(e["actor"], e["status_code"]) for e in denied] == [("anonymous", 401)]
        first = (await ops.get("/admin/audit", params={"limit": 2})).json()
        assert first["has_more"] is True and len(first["data"]) == 2
        second = (
            await ops.get("/admin/audit", params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        assert {e["id"] for e in first["data"]}.isdisjoint({e["id"] for e in second["data"]})
        assert max(e["id"] for e in second["data"]) < min(e["id"] for e in first["data"])
        future = (await ops.get("/admin/audit", params={"since": "2999-01-01T00:00:00Z"})).json()
        assert future["data"] == []
        naive = await ops.get("/admin/audit", params={"since": "2026-01-01T00:00:00"})
        assert naive.status_code == 400
        export = await ops.get("/admin/audit", params={"format": "jsonl"})
        assert export.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in export.text.splitlines()]
        assert len(lines) >= 7  # 3 creates, 3 placements, 1 denial
        assert all(set(line) >= {"actor", "action", "outcome", "created_at"} for line in lines)
        assert user not in export.text
        assert (await ops.get("/admin/audit")).status_code == 200
    async with gateway.client(user) as acme:
        assert (await acme.get("/admin/audit")).status_code == 403


async def test_retrying_a_finished_job_whose_twin_is_queued_is_a_409(gateway: Gateway) -> None:
    from app.jobs import queue
    from app.jobs.queue import JobKind
    from app.models import Job, JobState

    async with gateway.runtime.sessionmaker() as session:
        await queue.enqueue(
            session=session, kind=JobKind.RECONCILE, payload={}, dedupe_key="periodic:test"
        )
        [first] = (await session.execute(select(Job))).scalars().all()
        first.state = JobState.DONE
        await session.flush()
        await queue.enqueue(
            session=session, kind=JobKind.RECONCILE, payload={}, dedupe_key="periodic:test"
        )
        await session.commit()
        first_id = first.id
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        resp = await ops.post(f"/admin/jobs/{first_id}/retry")
        assert resp.status_code == 409, resp.text
        assert resp.json()["error"]["code"] == "conflict"
        assert resp.headers["x-request-id"]
    async with gateway.runtime.sessionmaker() as session:
        states = sorted((await session.execute(select(Job.state))).scalars().all())
    assert states == [JobState.DONE, JobState.QUEUED]


async def test_audit_times_that_overflow_in_utc_are_a_400(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        for name, value in [
            ("since", "0001-01-01T00:00:00+14:00"),
            ("until", "9999-12-31T23:59:59-14:00"),
        ]:
            resp = await ops.get("/admin/audit", params={name: value})
            assert resp.status_code == 400, resp.text
            assert resp.json()["error"]["param"] == name
        ok = await ops.get("/admin/audit", params={"since": "2026-01-01T00:00:00+14:00"})
        assert ok.status_code == 200


async def test_answers_that_carry_a_secret_are_never_cached(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        created = await ops.post("/admin/keys", json={"tenant": "acme", "name": "n"})
        assert created.status_code == 201
        assert created.headers["cache-control"] == "no-store"
        rotated = await ops.post(
            f"/admin/keys/{created.json()['id']}/rotate", headers={"idempotency-key": "rot-1"}
        )
        assert rotated.status_code == 201
        assert rotated.headers["cache-control"] == "no-store"
        replay = await ops.post(
            f"/admin/keys/{created.json()['id']}/rotate", headers={"idempotency-key": "rot-1"}
        )
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.headers["cache-control"] == "no-store"


async def test_the_admin_guard_counts_one_hit_per_request(gateway: Gateway) -> None:
    # The router's guard and a route's AdminCtx are one dependency: the rate limit sees one hit.
    root = await gateway.key("ops", ("admin",))
    async with gateway.client(root) as ops:
        created = await ops.post(
            "/admin/keys",
            json={
                "tenant": "ops",
                "name": "limited-admin",
                "scopes": ["admin"],
                "rate_limit_per_minute": 3,
                "expires_at": "2099-01-01T00:00:00Z",
            },
        )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["expires_at"] == 4070908800
    assert isinstance(body["created_at"], int) and body["revoked_at"] is None
    async with gateway.client(body["key"]) as limited:
        answers = [
            await limited.get("/admin/keys"),
            await limited.put("/admin/tenants/ops/quota", json={"max_files": 10}),
            await limited.get("/admin/tenants"),
        ]
        refused = await limited.get("/admin/jobs")
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0"]
    assert refused.status_code == 429
