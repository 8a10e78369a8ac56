"""Operator commands (`filegate keys|tenants|files|jobs|providers ...`) on the admin services.

Each command is thin: it parses its options, calls the service the admin API calls, and prints
the API's own wire shape (`--json`) or a short table. Commands that only touch the registry open
the configured database; those that reach providers, blobs or breakers build the runtime the
server builds. A user error is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, get_args

import typer
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from app.auth.principal import CallContext, Principal
from app.core.config import ConfigError, Settings, load_settings
from app.core.errors import GatewayError, InvalidRequest
from app.core.logging import configure_logging
from app.core.outage import is_database_outage
from app.jobs.queue import JobKind
from app.models import FileStatus, JobState
from app.providers.breakers import Action

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from app.runtime import Runtime

T = TypeVar("T")

keys_cli = typer.Typer(help="Manage API keys.", no_args_is_help=True)
tenants_cli = typer.Typer(
    help="Tenants: usage against quotas, and setting quotas.", no_args_is_help=True
)
files_cli = typer.Typer(
    help="Files of every tenant: find, show, check, delete.", no_args_is_help=True
)
jobs_cli = typer.Typer(help="The job queue: list and retry jobs.", no_args_is_help=True)
providers_cli = typer.Typer(help="Providers and their circuit breakers.", no_args_is_help=True)
breaker_cli = typer.Typer(help="Open, close or reset a provider's circuit.", no_args_is_help=True)
providers_cli.add_typer(breaker_cli, name="breaker")

GROUPS = {
    "keys": keys_cli,
    "tenants": tenants_cli,
    "files": files_cli,
    "jobs": jobs_cli,
    "providers": providers_cli,
}


class UserError(Exception):
    """A problem the operator can fix; printed as one line."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, *, exit_code: int = 1) -> NoReturn:
    one_line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    typer.echo(f"error: {one_line}", err=True)
    raise typer.Exit(exit_code)


def settings() -> Settings:
    """The configured settings, with logging set up from them; a bad setting is one line."""
    # Operator commands print results, not the runtime's start-up notes, unless asked to.
    quiet = {} if "FILEGATE_LOG_LEVEL" in os.environ else {"log_level": "WARNING"}
    try:
        loaded = load_settings(**quiet)
    except ConfigError as exc:
        fail(str(exc), exit_code=2)
    configure_logging(loaded)
    return loaded


def operator() -> CallContext:
    """Who the audit trail names for a command: `cli:<OS user>`, under no tenant."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        user = "unknown"
    return CallContext(
        principal=Principal(key_id=user, tenant_id="", kind="cli"),
        request_id=f"cli-{secrets.token_hex(8)}",
    )


def _database_message(exc: SQLAlchemyError) -> str:
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
    if "no such table" in first or ("relation" in first and "does not exist" in first):
        return "the database has no filegate tables yet: run `filegate migrate` first"
    if is_database_outage(exc):
        return f"cannot reach the database ({type(cause).__name__}: {first})"
    return f"the database refused the command ({type(cause).__name__}: {first})"


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's async body; expected failures become one line and a non-zero exit."""
    try:
        return asyncio.run(work())
    except UserError as exc:
        fail(str(exc), exit_code=exc.exit_code)
    except InvalidRequest as exc:
        fail(exc.message, exit_code=2)
    except GatewayError as exc:
        fail(exc.message)
    except ConfigError as exc:
        fail(str(exc), exit_code=2)
    except SQLAlchemyError as exc:
        fail(_database_message(exc))
    except OSError as exc:  # a data directory or blob store that cannot be opened
        fail(f"{type(exc).__name__}: {exc}")


@asynccontextmanager
async def database(config: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The configured registry database alone, for commands that touch nothing else."""
    from app.core.db import create_engine, create_sessionmaker

    engine = create_engine(
        config.resolved_database_url, connect_timeout=config.database_connect_timeout
    )
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def runtime(config: Settings, *, calls_providers: bool) -> AsyncIterator[Runtime]:
    """The server's runtime (blob store, providers, breakers on Redis). A command that calls
    providers refuses a sandbox it cannot reach: a private one would hold none of the files."""
    from app.core.metrics import GatewayMetrics
    from app.runtime import build_runtime

    async with build_runtime(
        config, metrics=GatewayMetrics(), own_sandbox=not calls_providers
    ) as rt:
        yield rt


async def in_unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
) -> T:
    """One command's unit of work: committed when `work` returns, rolled back on error."""
    from app.core.db import session_scope

    async with session_scope(sessionmaker) as session:
        return await work(session)


# --------------------------------------------------------------------------- output


def wants_json(ctx: typer.Context) -> bool:
    """Whether the root command was given --json."""
    return bool((ctx.find_root().obj or {}).get("json"))


def emit(ctx: typer.Context, payload: BaseModel, human: Callable[[], None]) -> None:
    """With --json the admin API's answer for the same task, else the human rendering."""
    if wants_json(ctx):
        typer.echo(payload.model_dump_json())
    else:
        human()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value) or "-"
    text = str(value)
    # One row per line, whatever a filename or error message holds.
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def table(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> None:
    """Rows as aligned columns; an empty listing says so."""
    if not rows:
        typer.echo("(none)")
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _when(value: int | None) -> str | None:
    return (
        datetime.fromtimestamp(value).astimezone().isoformat(timespec="seconds") if value else None
    )


def next_page(ctx: typer.Context, has_more: bool, cursor: object) -> None:
    if has_more and not wants_json(ctx):
        typer.echo(f"more: pass --cursor {cursor}", err=True)


# --------------------------------------------------------------------------- keys


def _parse_scopes(value: str | None, admin: bool) -> list[str]:
    from app.auth.scopes import DEFAULT_SCOPES, Scope

    scopes = [s for s in value.replace(",", " ").split() if s] if value else [*DEFAULT_SCOPES]
    if admin:
        scopes.append(Scope.ADMIN)
    return sorted(set(scopes))


def _parse_expiry(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"--expires must be an RFC 3339 time such as 2027-01-01T00:00:00Z, not {value!r}",
            exit_code=2,
        ) from None
    if moment.tzinfo is None:
        raise UserError("--expires needs a time zone (e.g. 'Z')", exit_code=2)
    return moment


@keys_cli.command("list")
def keys_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys")] = None,
) -> None:
    """List API keys (never their secrets)."""
    from app.api.schemas import KeyList, KeyOut
    from app.auth import keys as key_service

    config = settings()

    async def work() -> KeyList:
        async with database(config) as sessions, sessions() as session:
            rows = await key_service.list_keys(session=session, tenant=tenant)
            return KeyList(data=[KeyOut.model_validate(row) for row in rows])

    out = run(work)
    emit(
        ctx,
        out,
        lambda: table(
            [
                {
                    **k.model_dump(),
                    "expires": _when(k.expires_at),
                    "revoked": _when(k.revoked_at),
                    "rate": k.rate_limit_per_minute,
                }
                for k in out.data
            ],
            ["id", "tenant_id", "name", "scopes", "rate", "expires", "revoked"],
        ),
    )


@keys_cli.command("create")
def keys_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Tenant name (created if new)")],
    name: Annotated[str, typer.Option(help="A label for the key")],
    admin: Annotated[bool, typer.Option(help="Add the admin scope")] = False,
    scopes: Annotated[
        str | None,
        typer.Option(help="Comma-separated: files:read, files:write, admin (default: both files)"),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(help="RFC 3339 time the key stops working, e.g. 2027-01-01T00:00:00Z"),
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option(min=1, max=1_000_000, help="Requests a minute for this key")
    ] = None,
) -> None:
    """Issue an API key; the key alone is printed on the last line, and only this once."""
    from app.api.schemas import KeyCreated, KeyOut
    from app.core.migrations import upgrade
    from app.services import admin as admin_service

    config = settings()
    chosen = _parse_scopes(scopes, admin)
    expires_at = run_now(lambda: _parse_expiry(expires))

    async def work() -> tuple[KeyCreated, str]:
        await asyncio.to_thread(upgrade, config.resolved_database_url)
        async with database(config) as sessions:

            async def issue(session: AsyncSession) -> tuple[KeyCreated, str]:
                issued = await admin_service.create_key(
                    session=session,
                    hmac_key=config.hmac_key(),
                    ctx=operator(),
                    tenant=tenant,
                    name=name,
                    scopes=chosen,
                    expires_at=expires_at,
                    rate_limit_per_minute=rate_limit,
                )
                created = KeyCreated(
                    **KeyOut.model_validate(issued.key).model_dump(), key=issued.token
                )
                return created, issued.tenant_name

            return await in_unit_of_work(sessions, issue)

    created, tenant_name = run(work)
    if wants_json(ctx):
        emit(ctx, created, lambda: None)
        return
    typer.echo(
        f"key id {created.id} for tenant {tenant_name} "
        f"(scopes: {' '.join(created.scopes)}); it is shown only once:"
    )
    typer.echo(created.key)


def run_now(parse: Callable[[], T]) -> T:
    """A synchronous parse step with run()'s one-line errors."""
    try:
        return parse()
    except UserError as exc:
        fail(str(exc), exit_code=exc.exit_code)


@keys_cli.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after fg_)")],
    overlap: Annotated[
        int, typer.Option(min=0, max=30 * 24 * 3600, help="Seconds the old key keeps working")
    ] = 3600,
) -> None:
    """Rotate a key: a successor now; the old key ends after the overlap."""
    from app.api.schemas import KeyCreated, KeyOut
    from app.services import admin as admin_service

    config = settings()

    async def work() -> KeyCreated:
        async with database(config) as sessions:

            async def rotate(session: AsyncSession) -> KeyCreated:
                issued = await admin_service.rotate_key(
                    session=session,
                    hmac_key=config.hmac_key(),
                    ctx=operator(),
                    key_id=key_id,
                    overlap_seconds=overlap,
                )
                return KeyCreated(
                    **KeyOut.model_validate(issued.key).model_dump(), key=issued.token
                )

            return await in_unit_of_work(sessions, rotate)

    created = run(work)
    if wants_json(ctx):
        emit(ctx, created, lambda: None)
        return
    typer.echo(f"key id {created.id} succeeds {key_id}; it is shown only once:")
    typer.echo(created.key)


@keys_cli.command("revoke")
def keys_revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id")]
) -> None:
    """Revoke a key (server processes forget a cached lookup within two seconds)."""
    from app.api.schemas import KeyOut
    from app.services import admin as admin_service

    config = settings()

    async def work() -> KeyOut:
        async with database(config) as sessions:

            async def revoke(session: AsyncSession) -> KeyOut:
                row = await admin_service.revoke_key(session=session, ctx=operator(), key_id=key_id)
                return KeyOut.model_validate(row)

            return await in_unit_of_work(sessions, revoke)

    out = run(work)
    emit(ctx, out, lambda: typer.echo(f"key {out.id} revoked"))


# --------------------------------------------------------------------------- tenants


def _tenant_rows(items: Sequence[Any]) -> list[dict[str, object]]:
    return [t.model_dump() for t in items]


TENANT_COLUMNS = ["name", "id", "used_files", "max_files", "used_bytes", "max_bytes"]


@tenants_cli.command("list")
def tenants_list(
    ctx: typer.Context,
) -> None:
    """Tenants with their usage and quotas."""
    from app.api.schemas import TenantList, TenantOut
    from app.services import tenants as tenant_service

    config = settings()

    async def work() -> TenantList:
        async with database(config) as sessions, sessions() as session:
            usage = await tenant_service.list_usage(session=session)
            return TenantList(data=[TenantOut.of(u) for u in usage])

    out = run(work)
    emit(ctx, out, lambda: table(_tenant_rows(out.data), TENANT_COLUMNS))


@tenants_cli.command("quota")
def tenants_quota(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="The tenant's name")],
    max_bytes: Annotated[int | None, typer.Option(min=0, help="Stored bytes allowed")] = None,
    max_files: Annotated[int | None, typer.Option(min=0, help="Live files allowed")] = None,
) -> None:
    """Set a tenant's quotas, as PUT /admin/tenants/{name}/quota does: a limit left out is
    cleared."""
    from app.api.schemas import TenantOut
    from app.services import tenants as tenant_service

    config = settings()

    async def work() -> TenantOut:
        async with database(config) as sessions:

            async def set_quota(session: AsyncSession) -> TenantOut:
                usage = await tenant_service.set_quota(
                    session=session,
                    ctx=operator(),
                    name=tenant,
                    max_bytes=max_bytes,
                    max_files=max_files,
                )
                return TenantOut.of(usage)

            return await in_unit_of_work(sessions, set_quota)

    out = run(work)
    emit(ctx, out, lambda: table(_tenant_rows([out]), TENANT_COLUMNS))


# --------------------------------------------------------------------------- files


def _file_rows(items: Sequence[Any]) -> list[dict[str, object]]:
    return [
        {
            **f.model_dump(),
            "created": _when(f.created_at),
            "copies": [f"{c.provider}:{c.status}" for c in f.copies],
        }
        for f in items
    ]


FILE_COLUMNS = ["id", "tenant", "status", "bytes", "purpose", "created", "copies", "filename"]


@files_cli.command("list")
def files_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="The tenant's name")] = None,
    id: Annotated[str | None, typer.Option("--id", help="One file id")] = None,
    sha256: Annotated[str | None, typer.Option(help="64 hex digits")] = None,
    filename: Annotated[str | None, typer.Option(help="Case-insensitive substring")] = None,
    status: Annotated[
        FileStatus | None, typer.Option(help="Deleted files are listed only with 'deleted'")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    cursor: Annotated[str | None, typer.Option(help="The file id a previous page ended on")] = None,
) -> None:
    """Find files across tenants, newest first."""
    from app.api.schemas import AdminFileList, AdminFileOut
    from app.services import admin as admin_service

    config = settings()

    async def work() -> AdminFileList:
        async with database(config) as sessions, sessions() as session:
            page = await admin_service.find_files(
                session=session,
                tenant=tenant,
                file_id=id,
                sha256=sha256,
                filename=filename,
                status=status.value if status else None,
                cursor=cursor,
                limit=limit,
            )
            return AdminFileList(
                data=[AdminFileOut.of(r) for r in page.items],
                has_more=page.has_more,
                next_cursor=page.next_cursor,
            )

    out = run(work)
    emit(ctx, out, lambda: table(_file_rows(out.data), FILE_COLUMNS))
    next_page(ctx, out.has_more, out.next_cursor)


@files_cli.command("show")
def files_show(
    ctx: typer.Context, file_id: Annotated[str, typer.Argument(help="file-...")]
) -> None:
    """A file of any tenant (deleted ones too), its copies and lifecycle events."""
    from app.api.schemas import AdminFileDetail
    from app.services import admin as admin_service

    config = settings()

    async def work() -> AdminFileDetail:
        async with database(config) as sessions, sessions() as session:
            return AdminFileDetail.of_detail(
                await admin_service.show_file(session=session, file_id=file_id)
            )

    out = run(work)

    def human() -> None:
        for name in ("id", "tenant", "tenant_id", "filename", "bytes", "purpose", "status"):
            typer.echo(f"{name}: {_cell(getattr(out, name))}")
        typer.echo(f"status_details: {_cell(out.status_details)}")
        typer.echo(f"sha256: {out.sha256}")
        typer.echo(f"created: {_when(out.created_at)}")
        typer.echo(f"deleted: {_cell(_when(out.deleted_at))}")
        typer.echo("copies:")
        table(
            [c.model_dump() for c in out.copies],
            ["provider", "status", "provider_file_id", "last_error"],
        )
        typer.echo("events:")
        table(
            [{**e.model_dump(), "at": _when(e.created_at)} for e in out.events],
            ["at", "provider", "from_status", "to_status", "reason"],
        )

    emit(ctx, out, human)


@files_cli.command("check")
def files_check(
    ctx: typer.Context, file_id: Annotated[str, typer.Argument(help="file-...")]
) -> None:
    """Check a file now: re-hash its blob and confirm every provider copy exists."""
    from app.api.schemas import CheckReport
    from app.services import admin as admin_service

    config = settings()

    async def work() -> CheckReport:
        async with runtime(config, calls_providers=True) as rt:

            async def check(session: AsyncSession) -> CheckReport:
                report = await admin_service.check_file(
                    session=session,
                    blob_store=rt.blob_store,
                    providers=rt.providers,
                    metrics=rt.metrics,
                    settings=rt.settings,
                    ctx=operator(),
                    file_id=file_id,
                )
                return CheckReport(**report)

            return await in_unit_of_work(rt.sessionmaker, check)

    out = run(work)
    emit(
        ctx,
        out,
        lambda: typer.echo(
            f"{out.file_id}: blob {out.blob}; "
            + (", ".join(f"{p} {s}" for p, s in out.copies.items()) or "no copies")
        ),
    )


@files_cli.command("delete")
def files_delete(
    ctx: typer.Context, file_id: Annotated[str, typer.Argument(help="file-...")]
) -> None:
    """Delete a file of any tenant, as the tenant's own delete does."""
    from app.api.schemas import FileDeleted
    from app.services import admin as admin_service

    config = settings()

    async def work() -> FileDeleted:
        async with runtime(config, calls_providers=True) as rt:

            async def delete(session: AsyncSession) -> FileDeleted:
                deleted = await admin_service.delete_file(
                    session=session,
                    blob_store=rt.blob_store,
                    providers=rt.providers,
                    settings=rt.settings,
                    ctx=operator(),
                    file_id=file_id,
                )
                return FileDeleted(id=deleted)

            return await in_unit_of_work(rt.sessionmaker, delete)

    out = run(work)
    emit(ctx, out, lambda: typer.echo(f"{out.id} deleted"))


# --------------------------------------------------------------------------- jobs


JOB_COLUMNS = ["id", "kind", "state", "attempts", "run_after", "payload", "last_error"]


def _job_rows(items: Sequence[Any]) -> list[dict[str, object]]:
    return [
        {
            **j.model_dump(),
            "attempts": f"{j.attempts}/{j.max_attempts}",
            "run_after": _when(j.run_after),
            "payload": json.dumps(j.payload, sort_keys=True),
            "last_error": (j.last_error or "")[:80] or None,
        }
        for j in items
    ]


@jobs_cli.command("list")
def jobs_list(
    ctx: typer.Context,
    state: Annotated[JobState | None, typer.Option(help="queued, running, done or dead")] = None,
    kind: Annotated[JobKind | None, typer.Option(help="The job kind")] = None,
    file: Annotated[str | None, typer.Option("--file", help="Jobs of this file id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    cursor: Annotated[
        int | None, typer.Option(min=1, help="The job id a previous page ended on")
    ] = None,
) -> None:
    """List jobs, newest first."""
    from app.api.schemas import JobList, JobOut
    from app.services import admin as admin_service

    config = settings()

    async def work() -> JobList:
        async with database(config) as sessions, sessions() as session:
            page = await admin_service.list_jobs(
                session=session,
                state=state.value if state else None,
                kind=kind.value if kind else None,
                file_id=file,
                cursor=cursor,
                limit=limit,
            )
            return JobList(
                data=[JobOut.model_validate(j) for j in page.items],
                has_more=page.has_more,
                next_cursor=page.next_cursor,
            )

    out = run(work)
    emit(ctx, out, lambda: table(_job_rows(out.data), JOB_COLUMNS))
    next_page(ctx, out.has_more, out.next_cursor)


@jobs_cli.command("retry")
def jobs_retry(
    ctx: typer.Context, job_id: Annotated[int, typer.Argument(min=1, help="The job's id")]
) -> None:
    """Queue a dead (or finished) job again with fresh attempts."""
    from app.api.schemas import JobOut
    from app.services import admin as admin_service

    config = settings()

    async def work() -> JobOut:
        async with database(config) as sessions:

            async def retry(session: AsyncSession) -> JobOut:
                job = await admin_service.retry_job(session=session, ctx=operator(), job_id=job_id)
                return JobOut.model_validate(job)

            return await in_unit_of_work(sessions, retry)

    out = run(work)
    emit(ctx, out, lambda: typer.echo(f"job {out.id} ({out.kind}) is {out.state}"))


# --------------------------------------------------------------------------- providers


@providers_cli.command("show")
def providers_show(
    ctx: typer.Context,
) -> None:
    """Each provider's mode, circuit breaker, and files and bytes placed against its quota."""
    from app.api.schemas import ProviderList, ProviderOut
    from app.services import admin as admin_service

    config = settings()

    async def work() -> ProviderList:
        async with runtime(config, calls_providers=False) as rt, rt.sessionmaker() as session:
            rows = await admin_service.provider_overview(
                session=session, providers=rt.providers, capacity=rt.capacity
            )
            return ProviderList(data=[ProviderOut.of(row) for row in rows])

    out = run(work)
    emit(
        ctx,
        out,
        lambda: table(
            [
                {
                    **p.model_dump(),
                    "breaker": p.breaker.state,
                    "failures": p.breaker.failure_count,
                    "storage": p.breaker.storage,
                    "last_error": p.breaker.last_error,
                }
                for p in out.data
            ],
            [
                "provider",
                "mode",
                "breaker",
                "failures",
                "storage",
                "files",
                "quota_files",
                "bytes",
                "quota_bytes",
                "last_error",
            ],
        ),
    )


def _force(ctx: typer.Context, action: str, provider: str) -> None:
    from app.api.schemas import BreakerOut
    from app.services import admin as admin_service

    config = settings()
    if not config.redis_url:
        fail(
            "breaker commands need FILEGATE_REDIS_URL: without Redis each server process "
            "keeps its own circuit, which this command cannot reach",
            exit_code=2,
        )

    async def work() -> BreakerOut:
        async with runtime(config, calls_providers=False) as rt:

            async def force(session: AsyncSession) -> BreakerOut:
                snapshot = await admin_service.force_breaker(
                    session=session,
                    providers=rt.providers,
                    breakers=rt.breakers,
                    ctx=operator(),
                    provider=provider,
                    action=action,
                )
                return BreakerOut.of(snapshot)

            return await in_unit_of_work(rt.sessionmaker, force)

    out = run(work)
    if out.degraded:
        typer.echo("warning: Redis did not answer; other processes may not see this", err=True)
    emit(ctx, out, lambda: typer.echo(f"{provider}: circuit {out.state} (storage {out.storage})"))


def _breaker_command(action: str) -> Callable[[typer.Context, str], None]:
    def command(
        ctx: typer.Context, provider: Annotated[str, typer.Argument(help="moonshot or zai")]
    ) -> None:
        _force(ctx, action, provider)

    command.__doc__ = f"{action.capitalize()} a provider's circuit (every process sees it)."
    return command


for _action in get_args(Action):
    breaker_cli.command(_action)(_breaker_command(_action))


def register(cli: typer.Typer) -> None:
    """Add the operator command groups to the root command."""
    for name, group in GROUPS.items():
        cli.add_typer(group, name=name)


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"filegate {version('filegate')}"
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "filegate (not installed)"
