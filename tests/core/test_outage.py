"""A database outage answers 503 with Retry-After, logs once per change, and heals by itself."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.core.config import Settings
from app.core.outage import OutageLog
from app.main import create_app
from tests.conftest import REDIS_URL, TEST_SECRET, Gateway
from tests.support.clock import FakeClock
from tests.support.proxy import TcpProxy


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[TcpProxy]:
    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.start()
    yield proxy
    proxy.stop()


def test_outage_log_speaks_once_per_change() -> None:
    clock = FakeClock()
    outage = OutageLog("database", clock=clock)
    assert not outage.down
    outage.reached()  # nothing to say while it is up
    outage.failed(ConnectionRefusedError("refused"))
    outage.failed(ConnectionRefusedError("refused"))
    assert outage.down and outage.refused == 2
    clock.advance(12.5)
    outage.reached()
    assert not outage.down and outage.refused == 0


async def test_requests_answer_503_while_the_database_is_cut_and_recover(
    pg_url: str,
    pg_proxy: TcpProxy,
    tmp_path: Path,
    sandbox_reset: str,
    breaker_namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.conftest import _truncate

    _truncate(pg_url)
    settings = Settings(
        breaker_namespace=breaker_namespace,
        env="test",
        data_dir=tmp_path / "data",
        database_url=pg_proxy.url(pg_url),
        database_retry_after_seconds=7,
        redis_url=REDIS_URL,
        secret_key=TEST_SECRET,
        sandbox=True,
        sandbox_url=f"{sandbox_reset}/sandbox",
        workers_in_process=0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        gateway = Gateway(app=app, sandbox_url=sandbox_reset)
        token = await gateway.key()
        async with gateway.client(token) as client:
            uploaded = await client.post(
                "/v1/files", files={"file": ("a.txt", b"abc")}, data={"purpose": "file-extract"}
            )
            assert uploaded.status_code == 200, uploaded.text
            file_id = uploaded.json()["id"]
            pg_proxy.stop()
            caplog.clear()
            with caplog.at_level(logging.INFO):
                answers = [
                    await client.get("/v1/files"),
                    await client.post(
                        "/v1/files",
                        files={"file": ("b.txt", b"other")},
                        data={"purpose": "file-extract"},
                    ),
                    await client.get(f"/v1/files/{file_id}"),
                    await client.get(f"/v1/files/{file_id}/content"),
                    await gateway.client().get("/v1/files", headers={"x-api-key": token}),
                ]
                for resp in answers:
                    assert resp.status_code == 503, resp.text
                    assert resp.headers["retry-after"] == "7"
                    assert resp.headers["x-request-id"]
                    assert resp.json()["error"]["code"] == "database_unavailable"
                down = [r for r in caplog.records if "unreachable" in r.getMessage()]
                assert len(down) == 1
                assert not [r for r in caplog.records if r.exc_info]
                ready = await client.get("/health/ready")
                assert ready.status_code == 503

                pg_proxy.start()
                caplog.clear()
                assert (await client.get("/v1/files")).status_code == 200
                back = [r for r in caplog.records if "reachable again" in r.getMessage()]
                assert len(back) == 1
