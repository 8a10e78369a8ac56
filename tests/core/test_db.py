"""Engine behaviour the registry relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text

from app.core.db import create_engine, create_sessionmaker, utcnow
from app.models import Tenant


async def test_uncommitted_writes_never_leak_through_the_pool(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    sessionmaker = create_sessionmaker(engine)
    try:
        async with sessionmaker() as session:
            session.add(Tenant(id="ten_leak", name="leak"))
            await session.flush()  # a write transaction is open; the session closes without commit
        async with sessionmaker() as session:
            assert (await session.execute(select(Tenant))).first() is None
            session.add(Tenant(id="ten_ok", name="ok"))
            await session.commit()  # the connection is not stuck in the abandoned transaction
        async with sessionmaker() as session:
            names = (await session.execute(select(Tenant.name))).scalars().all()
        assert names == ["ok"]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM tenants"))
        await engine.dispose()


async def test_timestamps_come_back_as_utc(database_url: str) -> None:
    engine = create_engine(database_url)
    sessionmaker = create_sessionmaker(engine)
    plus_two = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    try:
        async with sessionmaker() as session:
            session.add(Tenant(id="ten_tz", name="tz", created_at=plus_two))
            await session.commit()
        async with sessionmaker() as session:
            row = (await session.execute(select(Tenant))).scalar_one()
        assert row.created_at == plus_two and row.created_at.tzinfo == UTC
        with pytest.raises(Exception, match="naive"):
            async with sessionmaker() as session:
                session.add(Tenant(id="ten_naive", name="naive", created_at=datetime(2026, 1, 1)))
                await session.commit()
        assert utcnow().tzinfo == UTC
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM tenants"))
        await engine.dispose()


async def test_the_sqlite_database_is_private_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    from sqlalchemy import text

    from app.core.db import create_engine
    from app.core.migrations import upgrade

    old = os.umask(0o022)
    try:
        for name, make in [("migrated", "upgrade"), ("opened", "engine")]:
            path = tmp_path / name / "deep" / "filegate.db"
            url = f"sqlite+aiosqlite:///{path}"
            if make == "upgrade":
                upgrade(url)
            else:
                path.parent.mkdir(parents=True)
                os.chmod(path.parent, 0o700)
                os.chmod(path.parent.parent, 0o700)
            engine = create_engine(url)
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE IF NOT EXISTS t (x int)"))
                await conn.execute(text("INSERT INTO t VALUES (1)"))
                for suffix in ("", "-wal", "-shm"):
                    mode = stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode)
                    assert mode == 0o600, (name, suffix, oct(mode))
            await engine.dispose()
            for directory in (path.parent, path.parent.parent):
                assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        loose = tmp_path / "loose.db"
        loose.write_bytes(b"")
        os.chmod(loose, 0o644)
        await create_engine(f"sqlite+aiosqlite:///{loose}").dispose()
        assert stat.S_IMODE(os.stat(loose).st_mode) == 0o600
    finally:
        os.umask(old)
