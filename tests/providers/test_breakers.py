"""Circuit breakers against the sandbox: counting, fast failure, sharing via Redis, one probe."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from app.core.errors import (
    ProviderAuthFailed,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
)
from app.core.metrics import GatewayMetrics
from app.providers import MoonshotAdapter
from app.providers.breaker_board import BreakerBoard
from app.providers.breakers import ProviderBreaker
from app.providers.pipeline import ProviderConfig
from tests.providers import control, fault
from tests.support.clock import FakeClock
from tests.support.loop import Heartbeat
from tests.support.proxy import TcpProxy
from tests.support.waiting import wait_until

PROVIDER = "moonshot"
REDIS_URL = os.environ.get("FILEGATE_TEST_REDIS_URL")
DEAD_REDIS = "redis://127.0.0.1:1/0"


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    if not REDIS_URL:
        pytest.skip("FILEGATE_TEST_REDIS_URL is not set")
    return REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def storage_url(request: pytest.FixtureRequest) -> str | None:
    """No Redis (in-process state), then the test Redis."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def namespace() -> Iterator[str]:
    """A Redis namespace of this test's own; its keys are deleted afterwards."""
    name = f"filegate-test:{uuid.uuid4().hex}:breaker"
    yield name
    if REDIS_URL:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{name}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


BoardFactory = Callable[..., BreakerBoard]


@pytest.fixture
async def boards(namespace: str) -> AsyncIterator[BoardFactory]:
    """Build boards on this test's namespace (each one stands for a process); closes them."""
    made: list[BreakerBoard] = []

    def build(**kwargs: Any) -> BreakerBoard:
        kwargs.setdefault("namespace", namespace)
        board = BreakerBoard((PROVIDER,), **kwargs)
        made.append(board)
        return board

    yield build
    for board in made:
        await board.aclose()


@pytest.fixture
def sandbox(sandbox_server: str) -> Iterator[str]:
    control(sandbox_server, PROVIDER, "_reset")
    yield sandbox_server
    control(sandbox_server, PROVIDER, "_faults", _delete=True)


AdapterFactory = Callable[[ProviderBreaker], MoonshotAdapter]


@pytest.fixture
async def adapters(sandbox: str, moonshot_base_url: str) -> AsyncIterator[AdapterFactory]:
    made: list[MoonshotAdapter] = []

    def build(breaker: ProviderBreaker) -> MoonshotAdapter:
        config = ProviderConfig(name=PROVIDER, base_url=moonshot_base_url, api_key="sk-test-cb")
        adapter = MoonshotAdapter(config, breaker=breaker)
        made.append(adapter)
        return adapter

    yield build
    for adapter in made:
        await adapter.aclose()


def calls(sandbox: str, operation: str) -> int:
    return int(control(sandbox, PROVIDER, "_stats").json()["calls"][operation])


async def fails(adapter: MoonshotAdapter, code: str, times: int = 1) -> ProviderError:
    """Call list() `times` times, each failing with `code`; the last error."""
    error: ProviderError | None = None
    for _ in range(times):
        with pytest.raises(ProviderError) as caught:
            await adapter.list()
        assert caught.value.error_code == code
        error = caught.value
    assert error is not None
    return error


async def open_circuit(adapter: MoonshotAdapter, sandbox: str, failures: int) -> None:
    fault(sandbox, PROVIDER, status=503)
    await fails(adapter, "provider_unavailable", failures)
    control(sandbox, PROVIDER, "_faults", _delete=True)


# --- counting and failing fast -----------------------------------------------------------


async def test_provider_faults_open_it_and_then_it_fails_fast(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str, storage_url: str | None
) -> None:
    metrics = GatewayMetrics()
    board = boards(redis_url=storage_url, fail_max=3, reset_seconds=30, metrics=metrics)
    adapter = adapters(board[PROVIDER])
    fault(sandbox, PROVIDER, status=503)
    for count in (1, 2, 3):
        with pytest.raises(ProviderUnavailable) as caught:
            await adapter.retrieve("file-1")
        assert caught.value.error_code == "provider_unavailable"
        assert (await board[PROVIDER].snapshot()).failures == (count if count < 3 else 3)
    assert calls(sandbox, "retrieve") == 3

    snap = await adapter.breaker_snapshot()
    assert snap.state == "open" and snap.failures == 3
    assert snap.opened_at is not None
    assert snap.retry_after is not None and snap.retry_after > 28
    assert snap.last_error is not None
    assert snap.last_error.startswith("provider_unavailable: moonshot is unavailable")
    assert snap.storage == ("redis" if storage_url else "memory")
    assert snap.degraded is False
    assert (await adapter.available()) is False

    with pytest.raises(ProviderUnavailable) as caught:
        await adapter.retrieve("file-1")
    assert caught.value.error_code == "provider_circuit_open"
    assert caught.value.retry_after is not None and 28 < caught.value.retry_after <= 30
    assert caught.value.headers["Retry-After"] in {"29", "30"}
    await fails(adapter, "provider_circuit_open")  # list() is guarded too
    assert calls(sandbox, "retrieve") == 3 and calls(sandbox, "list") == 0

    sample = metrics.registry.get_sample_value
    assert sample("filegate_breaker_state", {"provider": PROVIDER}) == 2
    labels = {"provider": PROVIDER, "from": "closed", "to": "open"}
    assert sample("filegate_breaker_transitions_total", labels) == 1


async def test_request_faults_never_open_it(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str, storage_url: str | None
) -> None:
    board = boards(redis_url=storage_url, fail_max=2)
    adapter = adapters(board[PROVIDER])
    for _ in range(4):
        with pytest.raises(ProviderNotFound):
            await adapter.retrieve("no-such-file")
    fault(sandbox, PROVIDER, status=400)
    for _ in range(4):
        with pytest.raises(ProviderRejected):
            await adapter.list()
    fault(sandbox, PROVIDER, status=401)
    for _ in range(4):
        with pytest.raises(ProviderAuthFailed):
            await adapter.list()
    snap = await board[PROVIDER].snapshot()
    assert snap.state == "closed" and snap.failures == 0
    assert snap.last_error is None
    assert (await adapter.available()) is True
    assert calls(sandbox, "retrieve") == 4 and calls(sandbox, "list") == 8


async def test_only_consecutive_provider_faults_count(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str
) -> None:
    board = boards(fail_max=2)
    adapter = adapters(board[PROVIDER])
    for _ in range(3):
        fault(sandbox, PROVIDER, status=503, count=1)
        await fails(adapter, "provider_unavailable")
        assert await adapter.list() == []  # a success in between resets the count
    assert (await board[PROVIDER].snapshot()).state == "closed"


# --- sharing through Redis ---------------------------------------------------------------


async def test_open_state_is_shared_and_survives_a_restart(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str, redis_url: str
) -> None:
    first = boards(redis_url=redis_url, fail_max=2, reset_seconds=30)
    await open_circuit(adapters(first[PROVIDER]), sandbox, 2)
    opened_at = (await first[PROVIDER].snapshot()).opened_at

    # Another process, built independently on the same namespace.
    other = boards(redis_url=redis_url, fail_max=2, reset_seconds=30)
    assert (await other[PROVIDER].snapshot()).state == "open"
    assert (await other[PROVIDER].available()) is False
    await fails(adapters(other[PROVIDER]), "provider_circuit_open")
    assert calls(sandbox, "list") == 2

    # A restart: every board closed, a new one built.
    await first.aclose()
    await other.aclose()
    restarted = boards(redis_url=redis_url, fail_max=2, reset_seconds=30)
    snap = await restarted[PROVIDER].snapshot()
    assert (snap.state, snap.failures, snap.opened_at) == ("open", 2, opened_at)
    await fails(adapters(restarted[PROVIDER]), "provider_circuit_open")
    assert calls(sandbox, "list") == 2


async def test_forced_actions(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str, storage_url: str | None
) -> None:
    board = boards(redis_url=storage_url, fail_max=3)
    watcher = boards(redis_url=storage_url, fail_max=3)
    adapter = adapters(board[PROVIDER])
    assert (await board.force(PROVIDER, "open")).state == "open"
    await fails(adapter, "provider_circuit_open")
    assert (await board.force(PROVIDER, "close")).state == "closed"
    assert await adapter.list() == []
    fault(sandbox, PROVIDER, status=503, count=1)
    await fails(adapter, "provider_unavailable")
    await board.force(PROVIDER, "open")
    snap = await board.force(PROVIDER, "reset")
    assert snap.state == "closed" and snap.failures == 0
    assert snap.opened_at is None and snap.last_error is None
    if storage_url:
        assert (await watcher.snapshot())[PROVIDER].state == "closed"
    with pytest.raises(ValueError):
        await board.force(PROVIDER, "explode")  # type: ignore[arg-type]


async def test_a_forced_state_is_shared_with_who_forced_it(
    boards: BoardFactory, redis_url: str
) -> None:
    board = boards(redis_url=redis_url, fail_max=3)
    other = boards(redis_url=redis_url, fail_max=3)
    assert (await board.force(PROVIDER, "open")).forced == "open"
    seen = (await other.snapshot())[PROVIDER]
    assert (seen.state, seen.forced, seen.storage) == ("open", "open", "redis")
    assert seen.retry_after is not None and seen.retry_after > 28
    await other.force(PROVIDER, "reset")
    seen = await board[PROVIDER].snapshot()
    assert (seen.state, seen.forced, seen.opened_at) == ("closed", "reset", None)


async def test_a_cancelled_call_while_closed_is_neutral(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str
) -> None:
    board = boards(fail_max=2)
    adapter = adapters(board[PROVIDER])
    fault(sandbox, PROVIDER, status=503, count=1)
    await fails(adapter, "provider_unavailable")
    fault(sandbox, PROVIDER, hang=True)
    call = asyncio.create_task(adapter.list())
    await wait_until(lambda: calls(sandbox, "list") == 2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # Neither a failure (it would open the circuit) nor a success (it would reset the count).
    snap = await board[PROVIDER].snapshot()
    assert (snap.state, snap.failures, snap.last_error is not None) == ("closed", 1, True)
    control(sandbox, PROVIDER, "_faults", _delete=True)
    fault(sandbox, PROVIDER, status=503, count=1)
    await fails(adapter, "provider_unavailable")
    assert (await board[PROVIDER].snapshot()).state == "open"


# --- half-open: exactly one probe --------------------------------------------------------


async def test_half_open_sends_one_probe_across_processes(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str, redis_url: str
) -> None:
    one = boards(redis_url=redis_url, fail_max=2, reset_seconds=1)
    two = boards(redis_url=redis_url, fail_max=2, reset_seconds=1)
    first, second = adapters(one[PROVIDER]), adapters(two[PROVIDER])
    await open_circuit(first, sandbox, 2)
    assert (await two[PROVIDER].snapshot()).state == "open"
    control(sandbox, PROVIDER, "_reset")
    await wait_until(two[PROVIDER].available)

    fault(sandbox, PROVIDER, status=None, latency_ms=400)  # a slow, successful probe
    callers = [first.list() if i % 2 else second.list() for i in range(10)]
    results = await asyncio.gather(*callers, return_exceptions=True)

    assert calls(sandbox, "list") == 1
    assert [r for r in results if not isinstance(r, BaseException)] == [[]]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 9
    assert all(
        isinstance(e, ProviderUnavailable) and e.error_code == "provider_circuit_open"
        for e in errors
    )
    # The probe succeeded: closed for every process.
    assert (await one[PROVIDER].snapshot()).state == "closed"
    assert (await two[PROVIDER].snapshot()).state == "closed"
    control(sandbox, PROVIDER, "_faults", _delete=True)
    assert await second.list() == [] and await first.list() == []


async def test_half_open_sends_one_probe_in_process(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str
) -> None:
    board = boards(fail_max=2, reset_seconds=0.3)
    adapter = adapters(board[PROVIDER])
    await open_circuit(adapter, sandbox, 2)
    control(sandbox, PROVIDER, "_reset")
    await wait_until(board[PROVIDER].available)
    fault(sandbox, PROVIDER, status=None, latency_ms=300)
    results = await asyncio.gather(*(adapter.list() for _ in range(10)), return_exceptions=True)
    assert calls(sandbox, "list") == 1
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert (await board[PROVIDER].snapshot()).state == "closed"


async def test_failed_probe_opens_it_again(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str, storage_url: str | None
) -> None:
    board = boards(redis_url=storage_url, fail_max=1, reset_seconds=1)
    adapter = adapters(board[PROVIDER])
    fault(sandbox, PROVIDER, status=503)
    await fails(adapter, "provider_unavailable")
    await wait_until(board[PROVIDER].available)
    await fails(adapter, "provider_unavailable")  # the probe
    snap = await board[PROVIDER].snapshot()
    assert snap.state == "open"
    assert snap.retry_after is not None and snap.retry_after > 0
    await fails(adapter, "provider_circuit_open")
    assert calls(sandbox, "list") == 2


async def test_cancelled_probe_is_neutral(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str
) -> None:
    board = boards(fail_max=1, reset_seconds=0.2)
    adapter = adapters(board[PROVIDER])
    await open_circuit(adapter, sandbox, 1)
    await wait_until(board[PROVIDER].available)
    fault(sandbox, PROVIDER, hang=True)
    probe = asyncio.create_task(adapter.list())
    await wait_until(lambda: calls(sandbox, "list") == 2)
    assert (await board[PROVIDER].available()) is False  # the probe is in flight
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    # Neither a failure nor a success: still half-open, and the next caller may probe.
    snap = await board[PROVIDER].snapshot()
    assert snap.state == "half-open" and snap.probe_in_flight is False
    control(sandbox, PROVIDER, "_faults", _delete=True)
    assert await adapter.list() == []
    assert (await board[PROVIDER].snapshot()).state == "closed"


# --- Redis trouble -----------------------------------------------------------------------


async def test_unreachable_redis_at_start_falls_back_to_memory(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str
) -> None:
    board = boards(redis_url=DEAD_REDIS, fail_max=2, reset_seconds=30)
    snap = (await board.snapshot())[PROVIDER]
    assert (snap.storage, snap.degraded, snap.state) == ("memory", True, "closed")
    assert board.degraded is True
    adapter = adapters(board[PROVIDER])
    assert await adapter.list() == []
    await open_circuit(adapter, sandbox, 2)
    await fails(adapter, "provider_circuit_open")
    assert calls(sandbox, "list") == 3


@pytest.fixture
def proxy(redis_url: str) -> Iterator[TcpProxy]:
    parts = urlsplit(redis_url)
    tcp = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    tcp.start()
    yield tcp
    tcp.stop()


async def test_redis_failing_mid_run_keeps_calls_working(
    boards: BoardFactory,
    adapters: AdapterFactory,
    sandbox: str,
    redis_url: str,
    proxy: TcpProxy,
) -> None:
    clock = FakeClock()
    board = boards(redis_url=proxy.url(redis_url), fail_max=2, reconnect_seconds=0.2, clock=clock)
    breaker = board[PROVIDER]
    adapter = adapters(breaker)
    assert await adapter.list() == []
    assert (await breaker.snapshot()).storage == "redis"

    proxy.stop()  # Redis goes away under a running process
    assert await adapter.list() == []
    snap = await breaker.snapshot()
    assert (snap.storage, snap.degraded) == ("memory", True)
    assert board.degraded is True
    # The in-process state still counts failures and fails fast.
    await open_circuit(adapter, sandbox, 2)
    await fails(adapter, "provider_circuit_open")
    assert calls(sandbox, "list") == 4

    proxy.start()  # Redis is back: the shared state (never opened there) is used again
    clock.advance(0.3)  # past reconnect_seconds: the next call tries Redis again
    assert await adapter.list() == []
    snap = await breaker.snapshot()
    assert (snap.storage, snap.degraded, snap.state) == ("redis", False, "closed")
    assert board.degraded is False


async def test_adapter_without_breaker() -> None:
    adapter = MoonshotAdapter(
        ProviderConfig(name=PROVIDER, base_url="http://127.0.0.1:9/v1", api_key="k")
    )
    assert (await adapter.available()) is True
    snap = await adapter.breaker_snapshot()
    assert (snap.state, snap.storage, snap.degraded) == ("closed", "none", False)
    await adapter.aclose()


# --- never blocking the event loop -------------------------------------------------------


REDIS_TIMEOUT = 0.8
# A call may wait out one Redis timeout, never two; the slack is for a loaded machine.
CALL_BOUND = REDIS_TIMEOUT + 0.6
# A Redis call made on the loop would stall it for a whole timeout; anything well under one is
# the machine's own scheduling, which a loaded CI host stretches past 0.2 s.
LOOP_BOUND = REDIS_TIMEOUT / 2


@pytest.mark.parametrize("trouble", ["frozen", "refused"])
async def test_redis_trouble_never_blocks_the_event_loop(
    boards: BoardFactory,
    adapters: AdapterFactory,
    sandbox: str,
    redis_url: str,
    proxy: TcpProxy,
    trouble: str,
) -> None:
    clock = FakeClock()
    board = boards(
        redis_url=proxy.url(redis_url),
        fail_max=2,
        redis_timeout=REDIS_TIMEOUT,
        reconnect_seconds=0.2,
        clock=clock,
    )
    breaker = board[PROVIDER]
    adapter = adapters(breaker)
    assert await adapter.list() == []
    assert (await breaker.snapshot()).storage == "redis"

    if trouble == "frozen":
        proxy.freeze()  # Redis accepts connections and never answers
    else:
        proxy.stop()  # connections are refused
    loop = asyncio.get_running_loop()
    async with Heartbeat() as heart:
        for _ in range(3):
            started = loop.time()
            results = await asyncio.gather(*(adapter.list() for _ in range(5)))
            assert results == [[]] * 5
            assert loop.time() - started < CALL_BOUND
            clock.advance(0.3)  # past reconnect_seconds: the next round tries Redis again
        # Failures are still counted (in process) and the circuit still fails fast.
        await open_circuit(adapter, sandbox, 2)
        await fails(adapter, "provider_circuit_open")
    assert heart.longest < LOOP_BOUND, f"the event loop stalled for {heart.longest:.3f}s"
    snap = await breaker.snapshot()
    assert (snap.storage, snap.degraded, snap.state) == ("memory", True, "open")
    assert calls(sandbox, "list") == 1 + 15 + 2


async def test_building_a_board_on_a_stalled_redis_does_not_block(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str, redis_url: str, proxy: TcpProxy
) -> None:
    proxy.freeze()
    loop = asyncio.get_running_loop()
    async with Heartbeat() as heart:
        board = boards(redis_url=proxy.url(redis_url), redis_timeout=REDIS_TIMEOUT)
        started = loop.time()
        snap = (await board.snapshot())[PROVIDER]
        assert loop.time() - started < CALL_BOUND
        assert await adapters(board[PROVIDER]).list() == []
    assert heart.longest < LOOP_BOUND, f"the event loop stalled for {heart.longest:.3f}s"
    assert (snap.storage, snap.degraded, snap.state) == ("memory", True, "closed")


# --- after the probe -----------------------------------------------------------------------


async def test_a_probe_that_closes_the_circuit_calls_the_close_hook_once(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str, redis_url: str
) -> None:
    closed: list[str] = []
    watched: list[str] = []

    async def record(into: list[str], provider: str) -> None:
        into.append(provider)

    one = boards(
        redis_url=redis_url, fail_max=1, reset_seconds=0.3, on_close=lambda p: record(closed, p)
    )
    two = boards(
        redis_url=redis_url, fail_max=1, reset_seconds=0.3, on_close=lambda p: record(watched, p)
    )
    adapter = adapters(one[PROVIDER])
    await open_circuit(adapter, sandbox, 1)
    assert (await two[PROVIDER].snapshot()).state == "open"
    await wait_until(one[PROVIDER].available)
    assert await adapter.list() == []  # the probe
    await wait_until(lambda: closed == [PROVIDER])
    # The other process only noticed the close: the one that made it ran the hook.
    assert (await two[PROVIDER].snapshot()).state == "closed"
    assert await adapter.list() == []  # closed to closed: no second call
    await asyncio.sleep(0.05)
    assert closed == [PROVIDER] and watched == []


async def test_a_call_that_loses_the_probe_race_is_not_told_to_wait_the_probe_ttl(
    boards: BoardFactory, adapters: AdapterFactory, sandbox: str
) -> None:
    board = boards(fail_max=1, reset_seconds=0.3, probe_seconds=60)
    adapter = adapters(board[PROVIDER])
    await open_circuit(adapter, sandbox, 1)
    await wait_until(board[PROVIDER].available)
    fault(sandbox, PROVIDER, status=None, latency_ms=300)
    probe = asyncio.create_task(adapter.list())
    await wait_until(lambda: calls(sandbox, "list") == 2)
    loser = await fails(adapter, "provider_circuit_open")
    # The claim lasts 60 s; the hint is bounded by reset_seconds (a failed probe re-opens it).
    assert loser.retry_after is not None and 0 < loser.retry_after <= 0.3
    paused = await board[PROVIDER].paused_for()
    assert paused is not None and 0 < paused <= 0.3
    assert await probe == []
    assert await board[PROVIDER].paused_for() is None
