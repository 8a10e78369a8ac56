"""A sandboxed gateway re-checks its copies when its sandbox is new, and only then."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select

from app.core.config import Settings
from app.jobs.queue import JobKind
from app.jobs.worker import Worker
from app.main import create_app
from app.models import Job
from tests.api.test_files import upload
from tests.conftest import Gateway, settings_with, started_gateway

TEXT = b"the quarterly numbers, in prose\n"


async def queued_checks(gateway: Gateway) -> list[str]:
    async with gateway.runtime.sessionmaker() as session:
        rows = await session.execute(
            select(Job.payload).where(Job.kind == JobKind.CHECK_FILE, Job.state == "queued")
        )
        return sorted(json.loads(payload)["file_id"] for payload in rows.scalars())


async def test_a_restart_with_a_new_sandbox_replaces_every_copy(settings: Settings) -> None:
    own = settings_with(settings, sandbox_url=None)  # the gateway runs its own sandbox
    app = create_app(own)
    async with app.router.lifespan_context(app):
        first = Gateway(app=app, sandbox_url="")
        assert first.runtime.sandbox_in_process
        url = first.runtime.sandbox_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        token = await first.key()
        async with first.client(token) as client:
            created = await upload(client, TEXT, filename="q.txt")
            assert created.status_code == 200, created.text
            kept = (await upload(client, b"a,b\n", filename="t.csv", provider="zai")).json()
            gone = (await upload(client, b"gone\n", filename="g.txt")).json()
            assert (await client.delete(f"/v1/files/{gone['id']}")).status_code == 200
        assert await queued_checks(first) == []
    body = created.json()

    app = create_app(own)
    async with app.router.lifespan_context(app):
        second = Gateway(app=app, sandbox_url="")
        sandbox = second.runtime.sandbox_url
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"{sandbox}/moonshot/_stats")).json()["files"] == 0
        # Every live file with a copy on the new, empty sandbox is queued for a check.
        assert await queued_checks(second) == sorted([body["id"], kept["id"]])
        await Worker(second.runtime, concurrency=1).drain()
        async with second.client(token) as client:
            extracted = await client.get(f"/v1/files/{body['id']}/extract")
            assert extracted.status_code == 200, extracted.text
            assert extracted.json()["content"] == TEXT.decode()
            after = (await client.get(f"/v1/files/{body['id']}")).json()
            [copy] = [p for p in after["providers"] if p["status"] == "active"]
            assert copy["provider_file_id"] != body["providers"][0]["provider_file_id"]
            content = await client.get(f"/v1/files/{kept['id']}/content")
            assert content.status_code == 200 and content.content == b"a,b\n"
        async with httpx.AsyncClient() as c:
            assert (await c.get(f"{sandbox}/moonshot/_stats")).json()["files"] == 1
            assert (await c.get(f"{sandbox}/zai/_stats")).json()["files"] == 1


async def test_a_restart_against_the_same_sandbox_checks_nothing(settings: Settings) -> None:
    app = create_app(settings)  # the external sandbox of the test session
    async with app.router.lifespan_context(app):
        first = Gateway(app=app, sandbox_url="")
        assert not first.runtime.sandbox_in_process
        async with first.client(await first.key()) as client:
            assert (await upload(client)).status_code == 200
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert await queued_checks(Gateway(app=app, sandbox_url="")) == []


async def test_an_unreachable_sandbox_does_not_stop_start_up(settings: Settings) -> None:
    from tests.support.servers import free_port

    dead = settings_with(settings, sandbox_url=f"http://127.0.0.1:{free_port()}/sandbox")
    async with started_gateway(dead, "") as gateway:
        async with gateway.client() as client:
            assert (await client.get("/health/live")).status_code == 200
        assert await queued_checks(gateway) == []
