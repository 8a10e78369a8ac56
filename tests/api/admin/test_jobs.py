"""Operators list jobs by state, kind and file, page through them, and read the summary."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select, update

from app.jobs import queue
from app.jobs.queue import JobKind
from app.models import Job, JobState
from tests.conftest import Gateway


async def _upload(client: httpx.AsyncClient, body: bytes, name: str = "a.txt") -> dict[str, Any]:
    resp = await client.post(
        "/v1/files",
        data={"purpose": "file-extract"},
        files={"file": (name, body, "text/plain")},
    )
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


async def _seed_periodic(gateway: Gateway, count: int) -> None:
    async with gateway.runtime.sessionmaker() as session:
        for n in range(count):
            await queue.enqueue(
                session=session,
                kind=JobKind.RECONCILE,
                payload={"provider": "zai"},
                dedupe_key=f"test:{n}",
                delay_seconds=3600,
            )
        await session.commit()


async def test_jobs_are_listed_newest_first_and_paged(gateway: Gateway) -> None:
    await _seed_periodic(gateway, 5)
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        everything = (await ops.get("/admin/jobs", params={"limit": 500})).json()
        ids = [job["id"] for job in everything["data"]]
        assert ids == sorted(ids, reverse=True) and len(ids) >= 5
        assert everything["object"] == "list" and everything["has_more"] is False
        assert everything["next_cursor"] is None
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor is not None:
                params["cursor"] = cursor
            page = (await ops.get("/admin/jobs", params=params)).json()
            assert len(page["data"]) <= 2
            seen += [job["id"] for job in page["data"]]
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            assert page["next_cursor"] == page["data"][-1]["id"]
            cursor = page["next_cursor"]
        assert seen == ids


async def test_jobs_filter_by_state_kind_and_file(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    mine = await _upload(client, b"jobs of one file\n")
    other = await _upload(client, b"jobs of another file\n", "b.txt")
    await _seed_periodic(gateway, 2)
    async with gateway.runtime.sessionmaker() as session:
        await session.execute(
            update(Job).where(Job.dedupe_key == "test:0").values(state=JobState.DEAD)
        )
        await session.commit()
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        dead = (await ops.get("/admin/jobs", params={"state": "dead"})).json()["data"]
        assert [(j["kind"], j["state"]) for j in dead] == [("reconcile", "dead")]
        reconciles = (await ops.get("/admin/jobs", params={"kind": "reconcile"})).json()["data"]
        assert {j["kind"] for j in reconciles} == {"reconcile"} and len(reconciles) == 2
        both = await ops.get("/admin/jobs", params={"kind": "reconcile", "state": "queued"})
        assert len(both.json()["data"]) == 1
        placed = (await ops.get("/admin/jobs", params={"file_id": mine["id"]})).json()["data"]
        assert placed and {j["payload"]["file_id"] for j in placed} == {mine["id"]}
        assert {j["kind"] for j in placed} == {"place"}
        # A deleted file's copy removals name its copies, not the file: they are found too.
        assert (await client.delete(f"/v1/files/{mine['id']}")).status_code == 200
        after = (await ops.get("/admin/jobs", params={"file_id": mine["id"]})).json()["data"]
        assert {j["kind"] for j in after} == {"place", "delete_copy"}
        untouched = (await ops.get("/admin/jobs", params={"file_id": other["id"]})).json()
        assert {j["kind"] for j in untouched["data"]} == {"place"}
        nobody = (await ops.get("/admin/jobs", params={"file_id": "file-" + "Z" * 24})).json()
        assert nobody["data"] == []


async def test_bad_job_filters_are_4xx_in_the_error_shape(gateway: Gateway) -> None:
    admin = await gateway.key("ops", ("admin",))
    user = await gateway.key("acme")
    async with gateway.client(admin) as ops:
        for params, param in [
            ({"state": "sleeping"}, "state"),
            ({"kind": "mine_bitcoin"}, "kind"),
            ({"file_id": "file-short"}, "file_id"),
            ({"file_id": "../etc/passwd"}, "file_id"),
            ({"cursor": "0"}, "cursor"),
            ({"cursor": "x"}, "cursor"),
            ({"limit": "0"}, "limit"),
            ({"limit": "501"}, "limit"),
        ]:
            resp = await ops.get("/admin/jobs", params=params)
            assert resp.status_code in (400, 422), (params, resp.text)
            error = resp.json()["error"]
            assert set(error) == {"message", "type", "code", "param"}
            assert error["param"] == param, (params, error)
    async with gateway.client(user) as acme:
        refused = await acme.get("/admin/jobs")
        assert refused.status_code == 403 and refused.json()["error"]["type"]


async def test_the_summary_counts_states_and_lists_dead_letters(gateway: Gateway) -> None:
    await _seed_periodic(gateway, 3)
    async with gateway.runtime.sessionmaker() as session:
        await session.execute(
            update(Job).where(Job.dedupe_key == "test:1").values(state=JobState.DEAD)
        )
        await session.commit()
        dead_id = (
            await session.execute(select(Job.id).where(Job.dedupe_key == "test:1"))
        ).scalar_one()
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        summary = (await ops.get("/admin/jobs/summary")).json()
    assert summary["object"] == "jobs.summary"
    assert summary["counts"]["dead"] == 1 and summary["counts"]["queued"] >= 2
    assert set(summary["counts"]) == {state.value for state in JobState}
    assert [j["id"] for j in summary["dead_letters"]] == [dead_id]
    assert summary["oldest_queued_age_seconds"] is not None
