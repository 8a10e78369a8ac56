"""Idempotency-Key claims carry a lease: renewed while their request runs, taken over as soon
as it lapses, so a retry after a crash runs instead of waiting minutes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from app.core.db import utcnow
from app.models import IdempotencyKey
from tests.conftest import TEST_SECRET, Gateway
from tests.support.clock import FakeClock
from tests.support.processes import create_key, gateway_env, start_gateway, start_sandbox
from tests.support.waiting import wait_until, wait_until_blocking


async def _upload(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post(
        "/v1/files",
        data={"purpose": "file-extract"},
        files={"file": ("a.txt", b"leased bytes\n", "text/plain")},
        headers={"Idempotency-Key": key},
    )


async def _held_past(gateway: Gateway, key: str, when: datetime) -> bool:
    """The claim on `key` is running with a lease that lasts beyond `when`."""
    async with gateway.runtime.sessionmaker() as session:
        row = await session.scalar(select(IdempotencyKey).where(IdempotencyKey.key == key))
    if row is None or row.state != "running" or row.lease_until is None:
        return False
    return row.lease_until > when


@pytest.mark.settings(idempotency_lease_seconds=1)
async def test_a_running_claim_is_renewed_while_its_request_runs(
    gateway: Gateway, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await gateway.sandbox_fault(
        "moonshot", status=None, latency_ms=2500, rate=1.0, operations=["upload"]
    )
    first = asyncio.ensure_future(_upload(client, "slow-1"))
    await wait_until(lambda: _held_past(gateway, "slow-1", clock.now()))
    clock.advance(1.6)  # past the first lease: only renewal keeps the claim
    await wait_until(lambda: _held_past(gateway, "slow-1", clock.now()))
    retry = await _upload(client, "slow-1")
    assert retry.status_code == 409, retry.text
    assert retry.json()["error"]["code"] == "idempotency_key_in_use"
    assert 1 <= int(retry.headers["retry-after"]) <= 2
    done = await first
    assert done.status_code == 200, done.text
    replay = await _upload(client, "slow-1")
    assert replay.headers["idempotent-replayed"] == "true"
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 1


async def test_a_lapsed_claim_is_taken_over_by_the_retry(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    resp = await _upload(client, "orphaned")
    assert resp.status_code == 200
    async with gateway.runtime.sessionmaker() as session:
        row = (await session.execute(select(IdempotencyKey))).scalar_one()
        # What a process killed mid-request leaves: a running claim nobody renews.
        row.state, row.status_code, row.response_body = "running", None, None
        row.lease_until = utcnow() - timedelta(seconds=1)
        await session.commit()
    retry = await _upload(client, "orphaned")
    assert retry.status_code == 200, retry.text
    assert "idempotent-replayed" not in retry.headers
    assert retry.json()["id"] == resp.json()["id"]  # the bytes deduplicate to the same file
    again = await _upload(client, "orphaned")
    assert again.headers["idempotent-replayed"] == "true"


def test_a_key_held_by_a_killed_gateway_is_free_once_its_lease_lapses(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with start_sandbox() as sandbox:
        env = gateway_env(
            data_dir=data_dir,
            secret_key=TEST_SECRET,
            sandbox_url=f"{sandbox.url}/sandbox",
            workers_in_process="0",
            idempotency_lease_seconds="2",
            # The dead request's file stays in flight; how that is taken over is not this test's.
            dedup_wait_seconds="1",
        )
        token = create_key(env, tenant="acme", name="t")
        headers = {"authorization": f"Bearer {token}", "idempotency-key": "crash-1"}
        httpx.post(
            f"{sandbox.url}/sandbox/moonshot/_faults",
            json={"status": None, "latency_ms": 60_000, "rate": 1.0, "operations": ["upload"]},
        ).raise_for_status()

        def post(base: str) -> httpx.Response:
            return httpx.post(
                f"{base}/v1/files",
                headers=headers,
                data={"purpose": "file-extract", "provider": "moonshot"},
                files={"file": ("a.txt", b"crash me\n", "text/plain")},
                timeout=90,
            )

        with start_gateway(env) as first:
            hung = threading.Thread(target=lambda: _swallow(post, first.url), daemon=True)
            hung.start()
            stats = f"{sandbox.url}/sandbox/moonshot/_stats"
            wait_until_blocking(
                lambda: httpx.get(stats, timeout=30).json()["calls"]["upload"] >= 1,
                timeout=15,
                message="the upload never reached the provider",
            )
            first.kill()  # SIGKILL while the key is claimed and the provider call hangs
            first.wait(10)
        httpx.delete(f"{sandbox.url}/sandbox/moonshot/_faults").raise_for_status()
        with start_gateway(env) as second:
            started = time.monotonic()
            while True:
                resp = post(second.url)
                if resp.status_code != 409:
                    break
                assert resp.json()["error"]["code"] == "idempotency_key_in_use"
                assert int(resp.headers["retry-after"]) <= 2
                assert time.monotonic() - started < 10, "the dead owner's claim never lapsed"
                time.sleep(0.2)
            # The retry ran (it was not refused as in use): it answers with the same bytes' file.
            assert resp.status_code in (200, 202), resp.text
            assert resp.json()["filename"] == "a.txt"
            assert "idempotent-replayed" not in resp.headers


def _swallow(post: Callable[[str], httpx.Response], base: str) -> None:
    try:
        post(base)
    except httpx.HTTPError:
        pass  # the gateway is killed under it
