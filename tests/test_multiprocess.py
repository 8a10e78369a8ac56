"""Real processes: two gateway replicas on one PostgreSQL database and one shared data volume."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from app.core.migrations import MIGRATION_LOCK_ID, alembic_config, sync_url, upgrade
from tests.conftest import TABLES, TEST_SECRET, _truncate
from tests.support.processes import (
    create_key,
    gateway_env,
    mint_key,
    start_gateway,
    start_sandbox,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def scalar(url: str, sql: str, **params: object) -> object:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


@pytest.fixture
def pg(pg_url: str) -> Iterator[str]:
    _truncate(pg_url)
    yield pg_url
    _truncate(pg_url)


async def test_two_gateways_deduplicate_concurrent_identical_uploads(
    pg: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared-volume"
    payload = b"replicated payload, same bytes from every client\n" * 8000
    with ExitStack() as stack:
        sandbox = stack.enter_context(start_sandbox())
        env = gateway_env(
            database_url=pg,
            data_dir=data_dir,
            secret_key=TEST_SECRET,
            sandbox_url=f"{sandbox.url}/sandbox",
            dedup_wait_seconds="30",
        )
        first = stack.enter_context(start_gateway(env, None, "--migrate", wait=False))
        second = stack.enter_context(start_gateway(env, None, "--no-migrate", wait=False))
        first.wait_ready()
        second.wait_ready()
        assert first.pid != second.pid

        token = create_key(env, tenant="acme", name="t")
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(base_url=first.url, headers=headers, timeout=60) as a,
            httpx.AsyncClient(base_url=second.url, headers=headers, timeout=60) as b,
        ):

            async def upload(client: httpx.AsyncClient) -> httpx.Response:
                return await client.post(
                    "/v1/files",
                    data={"purpose": "file-extract"},
                    files={"file": ("report.txt", payload, "text/plain")},
                )

            responses = await asyncio.gather(*(upload(c) for _ in range(10) for c in (a, b)))
            assert [r.status_code for r in responses] == [200] * 20, [
                r.text for r in responses if r.status_code != 200
            ]
            bodies = [r.json() for r in responses]
            ids = {body["id"] for body in bodies}
            assert len(ids) == 1
            [file_id] = ids
            assert {body["status"] for body in bodies} == {"processed"}
            assert {body["sha256"] for body in bodies} == {hashlib.sha256(payload).hexdigest()}
            copies = {
                (p["provider"], p["provider_file_id"]) for b in bodies for p in b["providers"]
            }
            assert len(copies) == 1 and next(iter(copies))[0] == "moonshot"

            # either replica serves the file the other one may have stored
            for client in (a, b):
                got = await client.get(f"/v1/files/{file_id}")
                assert got.status_code == 200 and got.json()["id"] == file_id
                content = await client.get(f"/v1/files/{file_id}/content")
                assert content.status_code == 200 and content.content == payload

            stats = (await a.get(f"{sandbox.url}/sandbox/moonshot/_stats")).json()
            # Each upload starts its provider upload while its bytes arrive (pipelined); all but
            # the one that placed the file are cut before their last byte: one file is made.
            assert stats["files"] == 1 and 1 <= stats["calls"]["upload"] <= len(responses)
            assert stats["bytes"] == len(payload)
            zai = (await a.get(f"{sandbox.url}/sandbox/zai/_stats")).json()
            assert zai["calls"]["upload"] == 0

        assert scalar(pg, "SELECT count(*) FROM files") == 1
        assert scalar(pg, "SELECT count(*) FROM blobs") == 1
        assert scalar(pg, "SELECT count(*) FROM provider_copies") == 1
        assert scalar(pg, "SELECT count(*) FROM provider_copies WHERE status = 'active'") == 1
        blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
        assert len(blobs) == 1
        assert blobs[0].name == hashlib.sha256(payload).hexdigest()
        assert blobs[0].read_bytes() == payload
        assert list((data_dir / "tmp").iterdir()) == []
        for proc in (first, second):
            assert proc.poll() is None, f"gateway died:\n{proc.log()}"
            assert "Traceback" not in proc.log()


def _drop_schema(url: str) -> None:
    """Make the database look brand new: no tables, functions, triggers or alembic_version."""
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            modern = int(conn.execute(text("SHOW server_version_num")).scalar_one()) >= 150000
            conn.execute(text("DROP SCHEMA public CASCADE"))
            if modern:  # PostgreSQL 15+ default: owned by pg_database_owner, USAGE for all
                conn.execute(text("CREATE SCHEMA public AUTHORIZATION pg_database_owner"))
                conn.execute(text("GRANT USAGE ON SCHEMA public TO PUBLIC"))
            else:
                conn.execute(text("CREATE SCHEMA public"))
                conn.execute(text("GRANT ALL ON SCHEMA public TO PUBLIC"))
    finally:
        engine.dispose()


def _advisory_waiters(url: str) -> int:
    # pg_advisory_lock(bigint) shows the key split into classid (high) and objid (low 32 bits)
    waiting = scalar(
        url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND classid = CAST(:hi AS oid) AND objid = CAST(:lo AS oid) AND objsubid = 1",
        hi=MIGRATION_LOCK_ID >> 32,
        lo=MIGRATION_LOCK_ID & 0xFFFFFFFF,
    )
    assert isinstance(waiting, int)
    return waiting


async def test_two_gateways_migrate_a_fresh_schema_concurrently(
    pg_url: str, tmp_path: Path
) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    _drop_schema(pg_url)
    holder = create_engine(sync_url(pg_url))
    try:
        with ExitStack() as stack:
            # Hold the migration lock so both replicas line up on it, then release them together.
            lock_conn = stack.enter_context(holder.connect())
            lock_conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_ID})
            lock_conn.commit()
            gateways = [
                stack.enter_context(
                    start_gateway(
                        gateway_env(
                            database_url=pg_url,
                            data_dir=tmp_path / f"replica-{i}",
                            secret_key=TEST_SECRET,
                        ),
                        wait=False,
                    )
                )
                for i in range(2)
            ]
            deadline = time.monotonic() + 30
            while _advisory_waiters(pg_url) < 2:
                assert all(g.poll() is None for g in gateways), [g.log() for g in gateways]
                assert time.monotonic() < deadline, "gateways never waited on the migration lock"
                time.sleep(0.05)
            # while the lock is held nobody migrates and nobody serves
            assert scalar(pg_url, "SELECT to_regclass('public.alembic_version')") is None
            for g in gateways:
                with pytest.raises(httpx.TransportError):
                    httpx.get(f"{g.url}/health/live", timeout=1)
            lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_ID})
            lock_conn.commit()

            for g in gateways:
                g.wait_ready()
            token = await mint_key(pg_url, TEST_SECRET.encode(), tenant="acme")
            for g in gateways:
                ready = httpx.get(f"{g.url}/health/ready", timeout=10)
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"]["database"]["status"] == "ok"
                listed = httpx.get(
                    f"{g.url}/v1/files", headers={"Authorization": f"Bearer {token}"}, timeout=10
                )
                assert listed.status_code == 200 and listed.json()["data"] == []
                assert g.poll() is None and "Traceback" not in g.log(), g.log()
            assert scalar(pg_url, "SELECT count(*) FROM alembic_version") == 1
            for table in TABLES:
                assert scalar(pg_url, "SELECT to_regclass(:t)", t=f"public.{table}"), table
            assert scalar(pg_url, "SELECT version_num FROM alembic_version") == head
    finally:
        holder.dispose()
        # leave the session's schema as the pg_url fixture made it, whatever happened above
        _drop_schema(pg_url)
        upgrade(pg_url)
