"""A stalled provider is cut in seconds; a slow one that keeps moving is not; lanes are bounded."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.errors import ProviderUnavailable
from app.providers import MoonshotAdapter
from app.providers.base import MiB, ProviderAdapter
from app.providers.breaker_board import BreakerBoard
from tests.providers import Recorder, control, make_adapter
from tests.support.bodies import FileBody
from tests.support.stalling import (
    read_slowly,
    stall_mid_response,
    stalling_server,
    stop_reading,
    trickle,
)
from tests.support.waiting import wait_until

PROVIDER = "moonshot"


@pytest.fixture(autouse=True)
def reset_sandbox(request: pytest.FixtureRequest) -> Iterator[None]:
    if "moonshot_base_url" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("sandbox_server")
    control(server, PROVIDER, "_reset")
    yield
    control(server, PROVIDER, "_reset")  # releases anything still hanging


def blob(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "a.txt"
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(MiB, left)
            fh.write(os.urandom(n))
            left -= n
    return path


async def upload(adapter: ProviderAdapter, path: Path) -> Any:
    return await adapter.upload(
        body=FileBody(path), filename="a.txt", purpose="file-extract", content_type="text/plain"
    )


async def set_fault(sandbox_server: str, **spec: Any) -> None:
    async with httpx.AsyncClient() as c:
        url = f"{sandbox_server}/sandbox/{PROVIDER}/_faults"
        (await c.post(url, json=spec)).raise_for_status()


async def clear_fault(sandbox_server: str) -> None:
    async with httpx.AsyncClient() as c:
        (await c.delete(f"{sandbox_server}/sandbox/{PROVIDER}/_faults")).raise_for_status()


async def upload_calls(sandbox_server: str) -> int:
    async with httpx.AsyncClient() as c:
        stats = (await c.get(f"{sandbox_server}/sandbox/{PROVIDER}/_stats")).json()
    return int(stats["calls"]["upload"])


async def both_uploading(sandbox_server: str) -> bool:
    return await upload_calls(sandbox_server) >= 2


async def cut_within(bound: float, call: Any) -> tuple[ProviderUnavailable, float]:
    """The ProviderUnavailable `call` ends in, and how long it took (never beyond `bound`)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderUnavailable) as caught:
        async with asyncio.timeout(bound):
            await call
    return caught.value, loop.time() - started


# --- hung before the answer: the first-byte timeout --------------------------------------


async def test_a_hung_upload_is_cut_by_the_first_byte_timeout(
    moonshot_base_url: str, sandbox_server: str, tmp_path: Path
) -> None:
    await set_fault(sandbox_server, hang=True, operations=["upload"])
    recorder = Recorder()
    adapter = make_adapter(
        MoonshotAdapter,
        moonshot_base_url,
        observer=recorder,
        first_byte_timeout=0.5,
        idle_timeout=30,
    )
    try:
        error, _ = await cut_within(10, upload(adapter, blob(tmp_path, 1000)))
    finally:
        await adapter.aclose()
    assert error.error_code == "provider_timeout" and error.retryable
    assert "did not start answering within 0.5s" in error.message
    assert recorder.outcomes == [(PROVIDER, "upload", "provider_timeout")]


async def test_a_slow_first_byte_within_its_timeout_is_not_cut_by_a_shorter_idle_timeout(
    moonshot_base_url: str, sandbox_server: str, tmp_path: Path
) -> None:
    await set_fault(sandbox_server, latency_ms=1500, operations=["upload"])
    adapter = make_adapter(
        MoonshotAdapter, moonshot_base_url, first_byte_timeout=10, idle_timeout=0.5
    )
    try:
        placed = await upload(adapter, blob(tmp_path, 1000))
    finally:
        await adapter.aclose()
    assert placed.bytes == 1000


# --- stalled while bytes should move: the idle timeout -----------------------------------


async def test_a_provider_that_stops_reading_the_upload_body_is_cut_by_the_idle_timeout(
    tmp_path: Path,
) -> None:
    # Larger than every socket buffer in between, so the writes really stop.
    path = blob(tmp_path, 32 * MiB)
    async with stalling_server(stop_reading) as url:
        adapter = make_adapter(MoonshotAdapter, url, first_byte_timeout=30, idle_timeout=0.5)
        try:
            error, _ = await cut_within(10, upload(adapter, path))
        finally:
            await adapter.aclose()
    assert error.error_code == "provider_timeout"
    assert "moved no data for 0.5s" in error.message


async def test_a_response_that_stalls_mid_body_is_cut_by_the_idle_timeout() -> None:
    async with stalling_server(stall_mid_response) as url:
        adapter = make_adapter(MoonshotAdapter, url, first_byte_timeout=30, idle_timeout=0.5)
        try:
            error, _ = await cut_within(10, adapter.list())
        finally:
            await adapter.aclose()
    assert error.error_code == "provider_timeout"
    assert "moved no data for 0.5s" in error.message


async def test_a_slow_but_steady_upload_longer_than_the_idle_timeout_is_not_cut(
    tmp_path: Path,
) -> None:
    size = 8 * MiB
    path = blob(tmp_path, size)
    # 256 KiB every 0.1 s: about 3 s in all, never a gap near the 0.5 s idle timeout.
    async with stalling_server(read_slowly(256 * 1024, 0.1)) as url:
        adapter = make_adapter(MoonshotAdapter, url, first_byte_timeout=10, idle_timeout=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            placed = await upload(adapter, path)
        finally:
            await adapter.aclose()
        took = loop.time() - started
    assert placed.id == "stalled0000000000001"
    assert took > 1.0, "the transfer was not slow: the test proves nothing"


async def test_a_slow_but_steady_response_longer_than_the_idle_timeout_is_not_cut() -> None:
    async with stalling_server(trickle({"object": "list", "data": []}, 12, 0.2)) as url:
        adapter = make_adapter(MoonshotAdapter, url, first_byte_timeout=10, idle_timeout=0.6)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            assert await adapter.list() == []
        finally:
            await adapter.aclose()
        assert loop.time() - started > 1.5, "the answer was not slow: the test proves nothing"


# --- lanes: a hung provider cannot take every connection ---------------------------------


async def test_calls_beyond_the_transfer_lane_fail_fast_and_background_calls_still_go(
    moonshot_base_url: str, sandbox_server: str, tmp_path: Path
) -> None:
    await set_fault(sandbox_server, hang=True, operations=["upload"])
    adapter = make_adapter(
        MoonshotAdapter,
        moonshot_base_url,
        first_byte_timeout=60,
        max_connections=2,
        background_connections=1,
        pool_timeout=0.2,
    )
    path = blob(tmp_path, 1000)
    hung = [asyncio.create_task(upload(adapter, path)) for _ in range(2)]
    try:
        await wait_until(lambda: both_uploading(sandbox_server), timeout=10, every=0.02)
        error, _ = await cut_within(5, upload(adapter, path))
        assert error.error_code == "provider_busy" and error.retryable
        assert "2 transfer calls in flight" in error.message
        assert await upload_calls(sandbox_server) == 2  # the third never left the gateway
        assert await adapter.list() is not None  # the background lane is its own
        await clear_fault(sandbox_server)
        placed = await asyncio.gather(*hung)
        assert len({p.id for p in placed}) == 2
    finally:
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)
        await adapter.aclose()


async def test_a_full_lane_is_not_counted_against_the_provider(
    moonshot_base_url: str, sandbox_server: str, tmp_path: Path
) -> None:
    board = BreakerBoard((PROVIDER,), fail_max=1, reset_seconds=60)
    await set_fault(sandbox_server, hang=True, operations=["list"])
    adapter = MoonshotAdapter(
        make_adapter(
            MoonshotAdapter,
            moonshot_base_url,
            first_byte_timeout=60,
            background_connections=1,
            pool_timeout=0.2,
        ).config,
        breaker=board[PROVIDER],
    )
    hung = asyncio.create_task(adapter.list())
    try:
        await wait_until(lambda: _listed(sandbox_server), timeout=10, every=0.02)
        error, _ = await cut_within(5, adapter.list())
        assert error.error_code == "provider_busy"
        assert (await board[PROVIDER].snapshot()).state == "closed"
        await clear_fault(sandbox_server)
        assert await hung == []
    finally:
        hung.cancel()
        await asyncio.gather(hung, return_exceptions=True)
        await adapter.aclose()
        await board.aclose()


async def _listed(sandbox_server: str) -> bool:
    async with httpx.AsyncClient() as c:
        stats = (await c.get(f"{sandbox_server}/sandbox/{PROVIDER}/_stats")).json()
    return bool(stats["calls"]["list"])


# --- the breaker counts hangs ------------------------------------------------------------


async def test_hung_calls_open_the_circuit_and_later_calls_skip_the_provider(
    moonshot_base_url: str, sandbox_server: str, tmp_path: Path
) -> None:
    board = BreakerBoard((PROVIDER,), fail_max=2, reset_seconds=60)
    await set_fault(sandbox_server, hang=True, operations=["upload"])
    config = make_adapter(MoonshotAdapter, moonshot_base_url, first_byte_timeout=0.3).config
    adapter = MoonshotAdapter(config, breaker=board[PROVIDER])
    path = blob(tmp_path, 1000)
    try:
        for _ in range(2):
            error, _ = await cut_within(10, upload(adapter, path))
            assert error.error_code == "provider_timeout"
        assert (await board[PROVIDER].snapshot()).state == "open"
        error, _ = await cut_within(1, upload(adapter, path))
        assert error.error_code == "provider_circuit_open"
        assert await upload_calls(sandbox_server) == 2
    finally:
        await adapter.aclose()
        await board.aclose()
