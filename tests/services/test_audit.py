"""Audit rows are always recorded (values made safe for their columns), and anonymous
refusals are throttled per client address into one summary row."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker
from app.models import AuditEvent
from app.services.audit import RefusalThrottle, bounded
from tests.conftest import Gateway, started_gateway
from tests.support.clock import FakeClock


def test_bounded_values_show_controls_and_cuts() -> None:
    assert bounded(None, 10) is None
    assert bounded("plain", 10) == "plain"
    assert bounded("a\x00b\u202ec", 10) == "a?b?c"
    cut = bounded("x" * 100, 64)
    assert cut is not None and len(cut) == 64 and cut.endswith("…")


def test_throttle_counts_beyond_the_threshold_and_summarises_the_minute() -> None:
    clock = FakeClock()
    throttle = RefusalThrottle(3, clock=clock)
    decisions = [throttle.admit("10.0.0.1") for _ in range(10)]
    assert [admitted for admitted, _ in decisions] == [True] * 3 + [False] * 7
    assert all(summary is None for _, summary in decisions)
    assert throttle.admit("10.0.0.2") == (True, None)  # per address
    clock.advance(61)
    admitted, summary = throttle.admit("10.0.0.1")
    assert admitted and summary is not None
    assert (summary.client_addr, summary.count) == ("10.0.0.1", 7)
    throttle.admit("10.0.0.1")
    throttle.admit("10.0.0.1")
    throttle.admit("10.0.0.1")
    [left] = throttle.drain()
    assert left.count == 1 and throttle.drain() == []


async def _rows(gateway: Gateway) -> list[AuditEvent]:
    async with gateway.runtime.sessionmaker() as session:
        return list((await session.execute(select(AuditEvent).order_by(AuditEvent.id))).scalars())


@pytest.mark.settings(audit_anonymous_refusals_per_minute=5)
async def test_anonymous_refusals_flood_into_one_summary_row(
    gateway: Gateway, clock: FakeClock
) -> None:
    async with gateway.client() as anon:
        for n in range(40):
            resp = await anon.post(f"/v1/unknown-{n}")
            assert resp.status_code in (401, 404)
            assert (await anon.get("/v1/files")).status_code == 401
        rows = await _rows(gateway)
        assert len(rows) == 5
        clock.advance(60)
        await anon.get("/v1/files")
    rows = await _rows(gateway)
    [summary] = [r for r in rows if r.action == "refusals.throttled"]
    assert summary.detail is not None and summary.detail.startswith("75 more anonymous refusals")
    assert len(rows) == 7


@pytest.mark.settings(audit_anonymous_refusals_per_minute=1)
async def test_anonymous_summaries_are_written_at_shutdown(
    settings: Settings, sandbox_reset: str
) -> None:
    async with started_gateway(settings, sandbox_reset) as gateway:
        async with gateway.client() as anon:
            for _ in range(4):
                await anon.get("/v1/files")
        assert [r.action for r in await _rows(gateway)] == ["GET /v1/files"]
    # The gateway is gone with its engine: read what it wrote through an engine of our own.
    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            rows = list(
                (await session.execute(select(AuditEvent).order_by(AuditEvent.id))).scalars()
            )
    finally:
        await engine.dispose()
    assert [r.action for r in rows] == ["GET /v1/files", "refusals.throttled"]
    assert rows[1].detail is not None and rows[1].detail.startswith("3 more")


@pytest.mark.parametrize(
    "path",
    ["/v1/" + "a" * 3000, "/v1/files/x%00y", "/admin/" + "%E2%80%AE" * 50 + "keys"],
)
async def test_a_refusal_with_any_path_is_recorded_without_a_traceback(
    gateway: Gateway, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        async with gateway.client(await gateway.key()) as client:
            resp = await client.post(path)
    assert 400 <= resp.status_code < 500, resp.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    [row] = await _rows(gateway)
    assert row.action.startswith("POST /")
    assert len(row.action) <= 64
    assert "\x00" not in row.action and "\u202e" not in row.action
