"""Migrations run the same on SQLite and PostgreSQL; the audit trail cannot be edited."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from app.core.db import create_engine
from app.core.migrations import downgrade, upgrade


async def test_schema_matches_models_and_audit_is_append_only(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert {"files", "blobs", "provider_copies", "audit_events", "api_keys"} <= tables
            indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("files"))
            live = [i for i in indexes if i["name"] == "uq_files_live_content"]
            assert live and live[0]["unique"]
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO audit_events (created_at, actor, action, outcome) "
                    "VALUES (CURRENT_TIMESTAMP, 'key:x', 'file.create', 'success')"
                )
            )
        for statement in (
            "UPDATE audit_events SET outcome = 'denied'",
            "DELETE FROM audit_events",
        ):
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(text(statement))
    finally:
        await engine.dispose()


def test_sqlite_migrations_are_reversible(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    downgrade(url)
    upgrade(url)
