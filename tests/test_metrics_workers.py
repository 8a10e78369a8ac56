"""Real processes: `filegate serve --workers 2` answers one /metrics for all its workers."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app.server import METRICS_DIR_VARIABLE, multiprocess_metrics
from tests.support.processes import ServerProcess, gateway_env, start_gateway, start_sandbox

# Counted requests go to a route of their own: a readiness probe that timed out on the client
# may still be answered (and counted) by a worker later.
ROUTE = "/docs"
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
    """Requests to ROUTE as each worker's own counter file holds them, by pid."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        one = scratch / path.stem
        one.mkdir(exist_ok=True)
        (one / path.name).unlink(missing_ok=True)
        (one / path.name).symlink_to(path)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(one))  # type: ignore[no-untyped-call]
        counts[int(path.stem.removeprefix("counter_"))] = requests_to(
            generate_latest(registry).decode(), ROUTE
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


def test_the_metrics_directory_is_private_empty_and_gone_at_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(METRICS_DIR_VARIABLE, raising=False)
    with multiprocess_metrics(None) as made:
        assert os.environ[METRICS_DIR_VARIABLE] == str(made)
        assert stat.S_IMODE(made.stat().st_mode) == 0o700 and list(made.iterdir()) == []
        (made / "counter_1.db").write_bytes(b"")
    assert not made.exists() and METRICS_DIR_VARIABLE not in os.environ

    configured = tmp_path / "metrics"
    with multiprocess_metrics(configured) as path:
        assert path == configured and stat.S_IMODE(path.stat().st_mode) == 0o700
    assert not configured.exists()  # made by the server, so removed by it

    configured.mkdir()
    (configured / "counter_2.db").write_bytes(b"")
    (configured / "README").write_text("kept")
    with multiprocess_metrics(configured) as path:
        assert sorted(p.name for p in path.iterdir()) == ["README"]
        (path / "histogram_3.db").write_bytes(b"")
    assert sorted(p.name for p in configured.iterdir()) == ["README"]


@pytest.mark.slow
async def test_one_scrape_counts_the_requests_every_worker_answered(
    served: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    gateway, metrics_dir = served
    assert not (metrics_dir / "counter_999999.db").exists()
    assert requests_to(await scrape(gateway.url), ROUTE) == 0

    sent = 0
    # A fresh connection per request, many at once, lets each worker accept some.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=gateway.url, limits=limits, timeout=30) as c:
        while sent < 2000:
            answers = await asyncio.gather(*(c.get(ROUTE) for _ in range(40)))
            assert all(a.status_code == 200 for a in answers)
            sent += len(answers)
            answered = {pid for pid, n in per_worker(metrics_dir, tmp_path).items() if n}
            if len(answered) == 2:
                break
    assert answered == live_workers(metrics_dir) and len(answered) == 2

    for _ in range(10):  # whichever worker answers the scrape, it counts every worker's
        text = await scrape(gateway.url)
        assert requests_to(text, ROUTE) == sent
    assert 'pid="' not in text  # every gauge is merged across workers
    breakers = [line for line in text.splitlines() if line.startswith("filegate_breaker_state")]
    assert sorted(breakers) == [
        'filegate_breaker_state{provider="moonshot"} 0.0',
        'filegate_breaker_state{provider="zai"} 0.0',
    ]

    gateway.stop()
    assert gateway.returncode == 0, gateway.log()
    assert metrics_dir.is_dir() and list(metrics_dir.iterdir()) == []


@pytest.mark.slow
async def test_a_replaced_worker_keeps_its_counts_and_drops_its_live_gauges(
    served: tuple[ServerProcess, Path],
) -> None:
    gateway, metrics_dir = served
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as c:
        for _ in range(20):
            assert (await c.get(ROUTE)).status_code == 200
    counted = requests_to(await scrape(gateway.url), ROUTE)
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
    assert requests_to(text, ROUTE) == counted
    assert text.count("filegate_breaker_state{") == 2
