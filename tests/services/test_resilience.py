"""Breakers through the gateway: shared state, fallback, pending, Redis failing under it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.jobs.worker import Worker
from app.main import create_app
from app.models import File, FileStatus, Job, JobState
from tests.api.test_files import upload
from tests.conftest import REDIS_URL, Gateway, settings_with, started_gateway
from tests.support.invariants import assert_registry_sound
from tests.support.loop import Heartbeat
from tests.support.proxy import TcpProxy
from tests.support.waiting import wait_until

needs_redis = pytest.mark.skipif(not REDIS_URL, reason="FILEGATE_TEST_REDIS_URL is not set")


async def breaker_of(c: httpx.AsyncClient, provider: str) -> dict[str, Any]:
    data = (await c.get("/admin/providers")).json()["data"]
    return next(p["breaker"] for p in data if p["provider"] == provider)


@pytest.fixture
async def second_process(settings: Settings) -> AsyncIterator[Any]:
    """Another gateway on the same database and Redis, as a second process would be."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@needs_redis
async def test_faults_open_the_breaker_and_another_process_sees_it(
    gateway: Gateway, client: httpx.AsyncClient, second_process: Any
) -> None:
    settings = gateway.runtime.settings
    await gateway.sandbox_fault("moonshot", status=503, rate=1.0, operations=["upload"])
    for i in range(settings.breaker_fail_max):
        await upload(client, f"row,{i}\n".encode(), filename=f"r{i}.csv")
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        assert (await breaker_of(ops, "moonshot"))["state"] == "open"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=second_process),
        base_url="http://second",
        headers={"Authorization": f"Bearer {admin}"},
    ) as other:
        snapshot = await breaker_of(other, "moonshot")
        assert snapshot["state"] == "open" and snapshot["storage"] == "redis"
        ready = (await other.get("/health/ready")).json()
        assert ready["checks"]["provider:moonshot"]["status"] == "degraded"
    before = (await gateway.sandbox_stats("moonshot"))["calls"]["upload"]
    resp = await upload(client, b"after,open\n", filename="after.csv")
    assert resp.status_code == 200
    assert [p["provider"] for p in resp.json()["providers"] if p["status"] == "active"] == ["zai"]
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == before
    await assert_registry_sound(gateway)


async def test_forced_open_breakers_make_uploads_pending_without_provider_calls(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        for provider in ("moonshot", "zai"):
            forced = await ops.post(f"/admin/providers/{provider}/breaker", json={"action": "open"})
            assert forced.status_code == 200 and forced.json()["state"] == "open"
        resp = await upload(client, b"a,b\n", filename="t.csv")
        assert resp.status_code == 202 and resp.json()["status"] == "pending"
        explicit = await upload(client, b"c,d\n", filename="u.csv", provider="zai")
        assert explicit.status_code == 202
        assert "circuit" in explicit.json()["status_details"]
        for provider in ("moonshot", "zai"):
            assert (await gateway.sandbox_stats(provider))["calls"]["upload"] == 0
            reset = await ops.post(f"/admin/providers/{provider}/breaker", json={"action": "reset"})
            assert reset.json()["state"] == "closed"
        bad = await ops.post("/admin/providers/openai/breaker", json={"action": "open"})
        assert bad.status_code == 400
        listed = (await ops.get("/admin/providers")).json()["data"]
    moonshot = next(p for p in listed if p["provider"] == "moonshot")
    assert moonshot["quota_files"] == 1000 and moonshot["mode"] == "sandbox"


@pytest.mark.settings(redis_url="redis://127.0.0.1:1/0")
async def test_redis_unreachable_at_start_up_still_serves(gateway: Gateway) -> None:
    async with gateway.client(await gateway.key()) as c:
        assert (await upload(c)).status_code == 200
        ready = await c.get("/health/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["status"] == "degraded"


@needs_redis
async def test_redis_stopping_mid_run_keeps_uploads_working(
    settings: Settings, sandbox_reset: str
) -> None:
    assert REDIS_URL
    parts = urlsplit(REDIS_URL)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    proxy.start()
    try:
        async with started_gateway(
            settings_with(settings, redis_url=proxy.url(REDIS_URL)), sandbox_reset
        ) as gateway:
            async with gateway.client(await gateway.key()) as c:
                assert (await upload(c, b"before\n")).status_code == 200
                proxy.stop()
                for i in range(3):
                    resp = await upload(c, f"during {i}\n".encode())
                    assert resp.status_code == 200, resp.text
                ready = (await c.get("/health/ready")).json()
                assert ready["status"] == "degraded"
                assert ready["checks"]["redis"]["status"] == "degraded"
    finally:
        proxy.stop()


async def _processed(gateway: Gateway, file_ids: list[str]) -> int:
    async with gateway.runtime.sessionmaker() as session:
        rows = await session.scalars(select(File.status).where(File.id.in_(file_ids)))
        return sum(status == FileStatus.PROCESSED for status in rows)


async def _all_processed(gateway: Gateway, file_ids: list[str]) -> bool:
    return await _processed(gateway, file_ids) == len(file_ids)


async def _pending_uploads(gateway: Gateway, client: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for i in range(count):
        resp = await upload(client, f"pending {i}\n".encode(), filename=f"p{i}.txt")
        assert resp.status_code == 202 and resp.json()["status"] == "pending", resp.text
        ids.append(resp.json()["id"])
    return ids


# Only moonshot takes files, so pending placements wait for its circuit alone.
one_provider = pytest.mark.settings(provider_order=["moonshot"])


@one_provider
# Open at the first fault, half-open after 1 s; a probe may hold its claim for 60 s.
@pytest.mark.settings(breaker_fail_max=1, breaker_reset_seconds=1.0)
async def test_pending_files_are_all_placed_promptly_after_the_provider_recovers(
    gateway: Gateway,
) -> None:
    await gateway.sandbox_fault("moonshot", status=503, rate=1.0, operations=["upload"])
    async with gateway.client(await gateway.key()) as client:
        ids = await _pending_uploads(gateway, client, 6)
    # The provider is back but slow: the first placement to run is the probe, and the
    # others that run meanwhile lose the half-open race.
    await gateway.sandbox_fault("moonshot", status=None, latency_ms=500, operations=["upload"])
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(gateway.runtime, concurrency=6).run(stop))
    try:
        await wait_until(lambda: _all_processed(gateway, ids), timeout=15, every=0.1)
    finally:
        stop.set()
        await worker
    assert (await gateway.sandbox_stats("moonshot"))["files"] == len(ids)
    await assert_registry_sound(gateway)


@one_provider
@pytest.mark.settings(breaker_reset_seconds=600.0)  # left alone, the jobs would wait ten minutes
async def test_closing_the_circuit_makes_pending_placements_due_at_once(
    gateway: Gateway,
) -> None:
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        await ops.post("/admin/providers/moonshot/breaker", json={"action": "open"})
        async with gateway.client(await gateway.key()) as client:
            ids = await _pending_uploads(gateway, client, 3)
        assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 0
        assert await Worker(gateway.runtime).drain() == 0  # nothing is due
        reset = await ops.post("/admin/providers/moonshot/breaker", json={"action": "reset"})
        assert reset.json()["state"] == "closed"

    async def placed() -> bool:
        await Worker(gateway.runtime).drain()
        return await _all_processed(gateway, ids)

    await wait_until(placed)
    assert await _processed(gateway, ids) == len(ids)
    await assert_registry_sound(gateway)


@needs_redis
@pytest.mark.settings(breaker_redis_timeout_seconds=0.8)
async def test_start_up_and_requests_on_a_stalled_redis_do_not_block(
    settings: Settings, sandbox_reset: str
) -> None:
    assert REDIS_URL
    parts = urlsplit(REDIS_URL)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    proxy.start()
    proxy.freeze()  # Redis accepts connections and never answers
    stalled = settings_with(settings, redis_url=proxy.url(REDIS_URL))
    try:
        async with Heartbeat() as heart, started_gateway(stalled, sandbox_reset) as gateway:
            async with gateway.client(await gateway.key()) as c:
                resp = await upload(c, b"while redis hangs\n")
                assert resp.status_code == 200, resp.text
        # A Redis call made on the loop would stall it for a whole timeout; anything well under
        # one is the machine's own scheduling, which a loaded CI host stretches past 0.2 s.
        bound = settings.breaker_redis_timeout_seconds / 2
        assert heart.longest < bound, f"the event loop stalled for {heart.longest:.3f}s"
    finally:
        proxy.stop()


async def test_a_pending_upload_names_every_reason_and_when_to_retry(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    await gateway.sandbox_fault("moonshot", status=429, retry_after=7, rate=1.0)
    await gateway.sandbox_fault("zai", status=503, rate=1.0)
    resp = await client.post(
        "/v1/files",
        data={"purpose": "file-extract"},
        files={"file": ("both.pdf", b"%PDF-1.4 both failing\n", "application/pdf")},
    )
    assert resp.status_code == 202, resp.text
    assert resp.headers["retry-after"] == "7"
    body = resp.json()
    assert body["status"] == "pending"
    assert "moonshot" in body["status_details"] and "zai" in body["status_details"]
    # The two failed attempts are history (in /events), not copies of the file.
    assert body["providers"] == []
    events = (await client.get(f"/v1/files/{body['id']}/events")).json()["data"]
    assert {e["provider"] for e in events if e["to_status"] == "failed"} == {"moonshot", "zai"}


# --- a hung provider: detected in seconds, `auto` falls back, jobs fail their run cleanly -----


# A first-byte timeout small enough to test (the default is 10 s).
hang_timeout = pytest.mark.settings(provider_first_byte_timeout=1.0)


@pytest.fixture
async def hung(gateway: Gateway) -> AsyncIterator[Gateway]:
    """The gateway, with moonshot hanging on uploads and listings until the test ends."""
    await gateway.sandbox_fault("moonshot", hang=True, operations=["upload", "list"])
    try:
        yield gateway
    finally:
        async with httpx.AsyncClient() as c:  # release whatever still hangs
            await c.delete(f"{gateway.sandbox_url}/sandbox/moonshot/_faults")


@hang_timeout
@pytest.mark.usefixtures("hung")
async def test_an_auto_upload_falls_back_from_a_hung_provider_within_seconds(
    gateway: Gateway,
) -> None:
    async with gateway.client(await gateway.key()) as client:
        async with asyncio.timeout(10):
            resp = await upload(client, b"a,b\n1,2\n", filename="t.csv")
    assert resp.status_code == 200, resp.text
    assert [p["provider"] for p in resp.json()["providers"] if p["status"] == "active"] == ["zai"]
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 1
    await assert_registry_sound(gateway)


@hang_timeout
@pytest.mark.usefixtures("hung")
# Fewer connection slots than uploads: the rest must fail over at once, not queue.
@pytest.mark.settings(provider_max_connections=8)
async def test_concurrent_auto_uploads_against_a_hung_provider_all_land_on_the_other(
    gateway: Gateway,
) -> None:
    async with gateway.client(await gateway.key()) as client:
        async with asyncio.timeout(15):
            responses = await asyncio.gather(
                *(upload(client, f"n,{i}\n".encode(), filename=f"c{i}.csv") for i in range(20))
            )
        admin = await gateway.key("ops", ("admin",))
        async with gateway.client(admin) as ops:
            circuit = await breaker_of(ops, "moonshot")
        calls = (await gateway.sandbox_stats("moonshot"))["calls"]["upload"]
        later = await upload(client, b"n,later\n", filename="later.csv")
    assert later.status_code == 200
    # The open circuit sends later uploads straight to zai.
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == calls
    for resp in responses:
        assert resp.status_code == 200, resp.text
        active = [p["provider"] for p in resp.json()["providers"] if p["status"] == "active"]
        assert active == ["zai"]
    assert (await gateway.sandbox_stats("zai"))["files"] == 21
    # Hung calls are provider faults: enough of them open the circuit.
    assert circuit["state"] == "open"
    assert "did not start answering" in circuit["last_error"]
    await assert_registry_sound(gateway)


@hang_timeout
@pytest.mark.usefixtures("hung")
# One attempt per run; repeated hung runs open the circuit.
@pytest.mark.settings(retry_max_attempts=1, breaker_reset_seconds=1.0)
async def test_a_reconcile_run_during_a_hang_fails_cleanly_and_the_worker_carries_on(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    from app.jobs import queue
    from app.jobs.queue import JobKind

    rt = gateway.runtime
    async with rt.sessionmaker() as session:
        await queue.enqueue(
            session=session,
            kind=JobKind.RECONCILE,
            payload={"provider": "moonshot"},
            dedupe_key="reconcile:during-hang",  # not the worker's periodic ones
        )
        await session.commit()

    async def job() -> Job:
        async with rt.sessionmaker() as session:
            found = await session.scalar(
                select(Job).where(Job.dedupe_key == "reconcile:during-hang")
            )
            assert found is not None
            return found

    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(rt).run(stop))
    try:

        async def failed_once() -> bool:
            assert not worker.done(), "the worker died"
            return (await job()).last_error is not None

        await wait_until(failed_once, timeout=15)
        failed = await job()
        assert "did not start answering" in (failed.last_error or "")
        assert failed.state in (JobState.QUEUED, JobState.RUNNING)
        async with httpx.AsyncClient() as c:
            await c.delete(f"{gateway.sandbox_url}/sandbox/moonshot/_faults")

        async def done() -> bool:
            assert not worker.done(), "the worker died"
            return (await job()).state == JobState.DONE

        await wait_until(done, timeout=15)
        assert not worker.done()
    finally:
        stop.set()
        await worker
    assert "will be retried" in caplog.text
