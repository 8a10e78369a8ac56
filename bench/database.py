"""The PostgreSQL database the phases that need one use: found, made and emptied."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.core.migrations import sync_url

# Why a phase was skipped when there is no PostgreSQL to run it on.
NO_DATABASE = (
    "no PostgreSQL (set FILEGATE_BENCH_DATABASE_URL, a database the bench may wipe, or "
    "FILEGATE_TEST_DATABASE_URL, beside which a `<name>_bench` database is made)"
)


def bench_database_url() -> tuple[str, str | None] | None:
    """The PostgreSQL database to use, and the one to create it from (None: use it as given);
    None without one. Without FILEGATE_BENCH_DATABASE_URL, a sibling `<name>_bench` of the
    test database is made, so the tests' own database is never touched."""
    own = os.environ.get("FILEGATE_BENCH_DATABASE_URL")
    if own:
        return Settings(database_url=own).resolved_database_url, None
    test = os.environ.get("FILEGATE_TEST_DATABASE_URL")
    if not test:
        return None
    resolved = Settings(database_url=test).resolved_database_url
    url = make_url(resolved)
    sibling = url.set(database=f"{url.database}_bench").render_as_string(hide_password=False)
    return sibling, resolved


def fresh_database(url: str, *, create_from: str | None) -> None:
    """An empty public schema (the gateways migrate it), the database made first if asked."""
    parsed = make_url(sync_url(url))
    if create_from is not None:
        admin = create_engine(sync_url(create_from), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
            ).scalar()
            if not found:
                conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        admin.dispose()
    engine = create_engine(parsed)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
