"""Run the real `filegate` command in child processes (gateway, sandbox, one-shot CLI calls).

Every child runs `python -c "from app.cli import main; main()" ...` with the venv's interpreter,
the repository on PYTHONPATH and a scratch working directory (so a developer's `.env` or a
relative `data/` never leaks in), and an environment stripped of every FILEGATE_* variable of
the parent before the caller's own settings are applied.

Servers write stdout and stderr to a log file; `ServerProcess.stop()` always terminates, waits
and (through the context manager) prints the log, which pytest shows only for failing tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from app.cli import main; main()"]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def child_env(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without FILEGATE_*, plus `settings` (FILEGATE_... names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILEGATE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings or {})
    return env


def gateway_env(
    *,
    database_url: str | None = None,
    data_dir: Path,
    secret_key: str | None = None,
    sandbox_url: str | None = None,
    redis_url: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """Settings for a gateway child; with `sandbox_url` every provider uses that external sandbox.

    `extra` takes FILEGATE_ names without the prefix (e.g. ``LOG_LEVEL="WARNING"``).
    """
    settings = {"FILEGATE_DATA_DIR": str(data_dir)}
    if database_url:
        settings["FILEGATE_DATABASE_URL"] = database_url
    if secret_key:
        settings["FILEGATE_SECRET_KEY"] = secret_key
    if redis_url:
        settings["FILEGATE_REDIS_URL"] = redis_url
    if sandbox_url:
        settings["FILEGATE_SANDBOX"] = "true"
        settings["FILEGATE_SANDBOX_URL"] = sandbox_url
    settings.update({f"FILEGATE_{k.upper()}": v for k, v in extra.items()})
    return child_env(settings)


def run_cli(
    args: Iterable[str],
    env: Mapping[str, str],
    *,
    timeout: float = 60.0,
    dotenv: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one `filegate ...` command to completion; output captured as text.

    `dotenv` is written as `.env` in the command's working directory.
    """
    with tempfile.TemporaryDirectory(prefix="filegate-cwd-") as cwd:
        if dotenv is not None:
            (Path(cwd) / ".env").write_text(dotenv, encoding="utf-8")
        return subprocess.run(
            [*CLI, *args],
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def create_key(env: Mapping[str, str], *, tenant: str, name: str, admin: bool = False) -> str:
    """`filegate keys create`; returns the token printed alone on the last line."""
    args = ["keys", "create", "--tenant", tenant, "--name", name] + (["--admin"] if admin else [])
    proc = run_cli(args, env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"filegate keys create exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout.strip().splitlines()[-1]


async def mint_key(
    database_url: str,
    hmac_key: bytes,
    *,
    tenant: str = "acme",
    name: str = "test",
    scopes: Iterable[str] = ("files:read", "files:write"),
) -> str:
    """Issue a key straight into a (migrated) database, bypassing the CLI; returns the token.

    Used where a test needs a key but is not about `filegate keys create`.
    """
    from app.auth.keys import issue_key
    from app.core.db import create_engine, create_sessionmaker

    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            issued = await issue_key(
                session=session,
                hmac_key=hmac_key,
                tenant_name=tenant,
                name=name,
                scopes=list(scopes),
            )
            await session.commit()
            return issued.token
    finally:
        await engine.dispose()


class ServerProcess(subprocess.Popen[bytes]):
    """A long-running `filegate serve|sandbox` child with its base URL and log file.

    Use it as a context manager (or call `close()`): the child is terminated and reaped, its
    log printed (pytest shows it only for failing tests) and its scratch directory removed.
    """

    url: str
    probe_path: str
    workdir: Path
    argv: list[str]

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll the probe path until it answers 200; on failure close the child and raise."""
        deadline = time.monotonic() + timeout
        last: object = "timed out"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.poll() is not None:
                    last = f"exited with {self.returncode}"
                    break
                try:
                    resp = client.get(self.url + self.probe_path)
                    if resp.status_code == 200:
                        return
                    last = f"HTTP {resp.status_code}"
                except httpx.TransportError as exc:
                    last = repr(exc)
                time.sleep(0.1)
        self.stop()
        log = self.log()
        self.close()
        raise RuntimeError(
            f"`filegate {self.command}` did not become ready at {self.url}{self.probe_path} "
            f"({last}); log:\n{log}"
        )

    def stop(self) -> int:
        """Terminate (SIGTERM, then SIGKILL after a grace period) and reap the child."""
        if self.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                self.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                self.wait(STOP_TIMEOUT)
        return self.returncode

    def close(self) -> None:
        """Stop the child, print its log and remove its scratch directory (idempotent)."""
        self.stop()
        if self.workdir.exists():
            print(f"----- log of `filegate {self.command}` -----\n{self.log()}")
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        super().__exit__(exc_type, exc, tb)


def _spawn(
    args: list[str],
    env: Mapping[str, str],
    *,
    port: int,
    probe_path: str,
    dotenv: str | None = None,
) -> ServerProcess:
    workdir = Path(tempfile.mkdtemp(prefix="filegate-proc-"))
    (workdir / "cwd").mkdir()
    if dotenv is not None:
        (workdir / "cwd" / ".env").write_text(dotenv, encoding="utf-8")
    try:
        with open(workdir / "server.log", "wb") as log:  # the child keeps its own descriptor
            proc = ServerProcess(
                [*CLI, *args],
                env=dict(env),
                cwd=workdir / "cwd",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    proc.url = f"http://127.0.0.1:{port}"
    proc.probe_path = probe_path
    proc.workdir = workdir
    proc.argv = args
    return proc


def start_gateway(
    env: Mapping[str, str],
    port: int | None = None,
    *extra_args: str,
    wait: bool = True,
    host: str = "127.0.0.1",
    dotenv: str | None = None,
) -> ServerProcess:
    """`filegate serve --host H --port P [extra_args]`; waits for /health/live.

    `dotenv` is written as `.env` in the child's working directory.
    """
    port = port or free_port()
    args = ["serve", "--host", host, "--port", str(port), *extra_args]
    proc = _spawn(args, env, port=port, probe_path="/health/live", dotenv=dotenv)
    if wait:
        proc.wait_ready()
    return proc


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs a process listens on over TCP."""
    import psutil

    return {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN
    }


def start_sandbox(port: int | None = None, *extra_args: str, wait: bool = True) -> ServerProcess:
    """`filegate sandbox --port P [extra_args]`; waits for /sandbox/moonshot/_stats."""
    port = port or free_port()
    args = ["sandbox", "--host", "127.0.0.1", "--port", str(port), *extra_args]
    proc = _spawn(args, child_env(), port=port, probe_path="/sandbox/moonshot/_stats")
    if wait:
        proc.wait_ready()
    return proc
