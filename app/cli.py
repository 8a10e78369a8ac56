"""The `filegate` command: serve, migrate, worker, sandbox, and the operator commands."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated

import typer

from app import admin_cli
from app.core.config import ConfigError, Settings, load_settings
from app.core.logging import configure_logging

cli = typer.Typer(
    help="filegate: one Files API in front of Moonshot and Z.ai.", no_args_is_help=True
)
admin_cli.register(cli)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(admin_cli.version_text())
        raise typer.Exit()


@cli.callback()
def root(
    ctx: typer.Context,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print results as JSON (the admin API's shapes)")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version"),
    ] = False,
) -> None:
    """filegate: one Files API in front of Moonshot and Z.ai."""
    ctx.obj = {"json": json_output}


def _settings(**overrides: object) -> Settings:
    """Every command's settings, with logging configured from them before anything runs."""
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    return settings


@cli.command()
def migrate() -> None:
    """Apply pending database migrations."""
    from app.core.migrations import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    typer.echo("database is at the latest revision")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    sandbox: Annotated[bool, typer.Option(help="Send every provider to the sandbox")] = False,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations first")] = True,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the gateway (with its own loopback sandbox when a provider is sandboxed)."""
    from app import server
    from app.core.migrations import upgrade

    if sandbox:
        os.environ["FILEGATE_SANDBOX"] = "true"
    settings = _settings()
    if migrate:
        upgrade(settings.resolved_database_url)
    sandboxed = settings.sandboxed_providers()
    if sandboxed and workers > 1 and settings.sandbox_url is None:
        typer.echo(
            "each worker process would run a sandbox of its own: use --workers 1, or run "
            "`filegate sandbox` once and point FILEGATE_SANDBOX_URL at it",
            err=True,
        )
        raise typer.Exit(2)
    self_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    typer.echo(f"filegate on http://{self_host}:{port}  (docs UI: http://{self_host}:{port}/docs)")
    if sandboxed:
        where = settings.sandbox_url or "an in-process sandbox on a loopback port"
        typer.echo(f"providers in SANDBOX mode: {', '.join(sandboxed)} (at {where})")
    command = sys.argv[0] if sys.argv[0].endswith("filegate") else "filegate"
    typer.echo(f"create an API key: {command} keys create --tenant demo --name me")
    # log_config=None keeps the handler configure_logging installed.
    server.run(
        server.build_config(settings, host=host, port=port, workers=workers, log_config=None)
    )


@cli.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Jobs run at once by this process")] = 2,
    once: Annotated[bool, typer.Option(help="Run the due jobs, then exit")] = False,
) -> None:
    """Run background jobs (placement retries, deletes, health checks, reconcile, expiry)."""
    import signal

    from app.core.metrics import GatewayMetrics
    from app.jobs.worker import Worker
    from app.runtime import build_runtime

    settings = _settings()

    async def run() -> None:
        async with build_runtime(settings, metrics=GatewayMetrics()) as rt:
            runner = Worker(rt, concurrency=concurrency)
            if once:
                await runner.schedule_startup()
                typer.echo(f"ran {await runner.drain()} jobs")
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            typer.echo(f"worker {runner.worker_id} running {concurrency} job loops")
            await runner.run(stop)

    try:
        asyncio.run(run())
    except ConfigError as exc:  # sandboxed without FILEGATE_SANDBOX_URL
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@cli.command("sandbox")
def sandbox_cmd(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 9000,
    moonshot_max_files: Annotated[
        int | None,
        typer.Option(min=1, help="Files per Moonshot account [FILEGATE_MOONSHOT_MAX_FILES]"),
    ] = None,
    zai_max_files: Annotated[
        int | None,
        typer.Option(min=1, help="Files per capped Z.ai purpose [FILEGATE_ZAI_MAX_FILES]"),
    ] = None,
) -> None:
    """Serve the provider sandbox alone (paths under /sandbox/moonshot/v1 and /sandbox/zai/...)."""
    import uvicorn

    from app.sandbox import create_standalone_app

    caps = _settings().sandbox_caps()
    caps["moonshot_max_files"] = moonshot_max_files or caps["moonshot_max_files"]
    caps["zai_max_files"] = zai_max_files or caps["zai_max_files"]
    typer.echo(f"sandbox on http://{host}:{port}/sandbox/{{moonshot/v1,zai/api/paas/v4}}")
    typer.echo(
        f"point every process at it: FILEGATE_SANDBOX_URL=http://{host}:{port}/sandbox "
        "(control routes answer loopback clients only)"
    )
    uvicorn.run(
        create_standalone_app(**caps), host=host, port=port, log_level="warning", log_config=None
    )


# The parser's error base class, from whichever click typer runs on (its own copy or click).
_CLICK_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def main(argv: list[str] | None = None) -> None:
    """Run the command; a bad command line is one line on stderr (exit 2), never a panel."""
    try:
        code = cli(args=argv, prog_name="filegate", standalone_mode=False)
    except _CLICK_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group named alone: its help
            exc.show()  # type: ignore[attr-defined]
            sys.exit(getattr(exc, "exit_code", 2))
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        where = getattr(getattr(exc, "ctx", None), "command_path", "filegate")
        typer.echo(f"error: {message} (see: {where} --help)", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
