"""The expire_uploads job: uploads past their hour expire, and their parts are collected."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from app.jobs import queue
from app.jobs.queue import JobKind
from app.jobs.worker import Worker
from app.models import Upload, UploadPart
from tests.api.test_uploads import complete, create, part, stored_parts
from tests.conftest import Gateway
from tests.support.clock import FakeClock


async def run_expiry(gateway: Gateway) -> None:
    async with gateway.runtime.sessionmaker() as session:
        await queue.enqueue(session=session, kind=JobKind.EXPIRE_UPLOADS, payload={})
        await session.commit()
    assert await Worker(gateway.runtime, concurrency=1).drain() == 1


async def statuses(gateway: Gateway) -> dict[str, tuple[str, bool]]:
    async with gateway.runtime.sessionmaker() as session:
        rows = (await session.execute(select(Upload))).scalars().all()
        return {row.id: (row.status, row.parts_collected_at is not None) for row in rows}


async def test_expiry_collects_the_parts_of_uploads_past_their_hour(
    gateway: Gateway, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    old = (await create(client, 8))["id"]
    await part(client, old, b"1234")
    await part(client, old, b"5678")
    clock.advance(1800)
    young = (await create(client, 4))["id"]
    kept = await part(client, young, b"wxyz")
    await run_expiry(gateway)
    assert await statuses(gateway) == {old: ("pending", False), young: ("pending", False)}
    assert len(await stored_parts(gateway)) == 3

    clock.advance(1801)  # the first upload is an hour and a second old, the other half that
    await run_expiry(gateway)
    assert await statuses(gateway) == {old: ("expired", True), young: ("pending", False)}
    assert await stored_parts(gateway) == [f"{young}/{kept}"]
    async with gateway.runtime.sessionmaker() as session:
        left = (await session.execute(select(UploadPart.upload_id))).scalars().all()
    assert left == [young]
    resp = await complete(client, young, [kept])
    assert resp.status_code == 200, resp.text


async def test_parts_a_completion_could_not_remove_are_collected_later(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    upload_id = (await create(client, 4))["id"]
    resp = await complete(client, upload_id, [await part(client, upload_id, b"abcd")])
    assert resp.status_code == 200, resp.text
    # A part that landed after the upload finished (a replica's request in flight), with no row.
    store = gateway.runtime.blob_store
    spool = store.new_spool()
    await spool.write(b"late")
    await spool.finish()
    await store.keep_part(spool, upload_id=upload_id, part_id="part_late")
    async with gateway.runtime.sessionmaker() as session:
        row = await session.get(Upload, upload_id)
        assert row is not None
        row.parts_collected_at = None  # as if the store had been down at completion
        await session.commit()
    await run_expiry(gateway)
    assert await stored_parts(gateway) == []
    assert await statuses(gateway) == {upload_id: ("completed", True)}
