"""Real processes: `filegate serve --workers 2` answers one /metrics for all its workers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import ServerProcess, gateway_env, start_gateway, start_sandbox

pytestmark = pytest.mark.slow
PROBE = "/health/live"
WAIT_SECONDS = 120.0  # a bound on waiting for workers on a busy machine, not a measured time


def requests_to(text: str, handler: str) -> float:
    """http_requests_total of one route in a text exposition."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_requests_total" and sample.labels.get("handler") == handler
    )


def per_worker(metrics_dir: Path, scratch: Path) -> dict[int, float]:
    """Requests to PROBE as each worker's own counter file holds them, by pid."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        one = scratch / path.stem
        one.mkdir(exist_ok=True)
        (one / path.name).unlink(missing_ok=True)
        (one / path.name).symlink_to(path)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(one))  # type: ignore[no-untyped-call]
        counts[int(path.stem.removeprefix("counter_"))] = requests_to(
            generate_latest(registry).decode(), PROBE
        )
    return counts


def live_workers(metrics_dir: Path) -> set[int]:
    """Workers whose live gauges (the breakers', set at start-up) are in the directory."""
    return {int(p.stem.rpartition("_")[2]) for p in metrics_dir.glob("gauge_livemax_*.db")}


def wait_for(what: str, check: object, gateway: ServerProcess) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():  # type: ignore[operator]
        assert gateway.poll() is None, f"the gateway exited while waiting for {what}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}:\n{gateway.log()}"
        time.sleep(0.2)


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        resp = await c.get("/metrics")
    assert resp.status_code == 200, resp.text
    return resp.text


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """Two workers on the embedded defaults (SQLite, local blobs), an external sandbox, and a
    metrics directory holding a previous server's leftover file."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"\0" * 16)
    with ExitStack() as stack:
        sandbox = stack.enter_context(start_sandbox())
        env = gateway_env(
            data_dir=tmp_path / "data",
            sandbox_url=f"{sandbox.url}/sandbox",
            metrics_dir=str(metrics_dir),
        )
        gateway = stack.enter_context(start_gateway(env, None, "--workers", "2", wait=False))
        gateway.wait_ready(timeout=WAIT_SECONDS)
        wait_for("two workers", lambda: len(live_workers(metrics_dir)) == 2, gateway)
        yield gateway, metrics_dir


async def test_one_scrape_counts_the_requests_every_worker_answered(
    served: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    gateway, metrics_dir = served
    assert not (metrics_dir / "counter_999999.db").exists()
    before = per_worker(metrics_dir, tmp_path)
    baseline = requests_to(await scrape(gateway.url), PROBE)
    assert baseline == sum(before.values())

    sent = 0
    # A fresh connection per request, many at once, lets each worker accept some.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=30) as c:
        while sent < 2000:
            answers = await asyncio.gather(*(c.get(PROBE) for _ in range(40)))
            assert all(a.status_code == 200 for a in answers)
            sent += len(answers)
            after = per_worker(metrics_dir, tmp_path)
            if len([pid for pid in after if after[pid] > before.get(pid, 0)]) == 2:
                break
    answered = {pid for pid in after if after[pid] > before.get(pid, 0)}
    assert answered == live_workers(metrics_dir) and len(answered) == 2

    for _ in range(10):  # whichever worker answers the scrape, it counts every worker's
        text = await scrape(gateway.url)
        assert requests_to(text, PROBE) == baseline + sent
    assert 'pid="' not in text  # every gauge is merged across workers
    breakers = [line for line in text.splitlines() if line.startswith("filegate_breaker_state")]
    assert sorted(breakers) == [
        'filegate_breaker_state{provider="moonshot"} 0.0',
        'filegate_breaker_state{provider="zai"} 0.0',
    ]

    gateway.stop()
    assert gateway.returncode == 0, gateway.log()
    assert metrics_dir.is_dir() and list(metrics_dir.iterdir()) == []


async def test_a_replaced_worker_keeps_its_counts_and_drops_its_live_gauges(
    served: tuple[ServerProcess, Path],
) -> None:
    gateway, metrics_dir = served
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as c:
        for _ in range(20):
            assert (await c.get(PROBE)).status_code == 200
    counted = requests_to(await scrape(gateway.url), PROBE)
    victim, survivor = sorted(live_workers(metrics_dir))
    os.kill(victim, signal.SIGKILL)

    wait_for(
        "the worker's replacement",
        lambda: victim not in live_workers(metrics_dir) and len(live_workers(metrics_dir)) == 2,
        gateway,
    )
    assert survivor in live_workers(metrics_dir)
    assert (metrics_dir / f"counter_{victim}.db").exists()  # its counts stay in the totals
    text = await scrape(gateway.url)
    assert requests_to(text, PROBE) == counted
    assert text.count("filegate_breaker_state{") == 2
