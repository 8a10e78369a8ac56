"""Child processes: the sandbox, the gateways and their keys, started and always stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"
# The gateway server module; an experiment can point this at a patched copy of bench.server.
GATEWAY_MODULE = os.environ.get("BENCH_GATEWAY_MODULE", "bench.server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    base_url: str

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Every child process the bench starts; all stopped on exit, whatever happens."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

    def start(
        self, name: str, argv: list[str], *, log: Path, base_url: str, env: dict[str, str]
    ) -> Server:
        with open(log, "wb") as fh:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(  # noqa: S603 - argv is built by the bench itself
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only the driver, which stops them
            )
        server = Server(name, proc, log, base_url)
        self.servers.append(server)
        return server

    def stop(self, server: Server) -> None:
        if server.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=5)
        self.servers.remove(server)

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            proc = server.proc
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for server in reversed(self.servers):
            proc = server.proc
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)
        self.servers.clear()


def wait_ready(server: Server, path: str, *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(
                    f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}"
                )
            try:
                if client.get(server.base_url + path).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not become ready:\n{server.tail()}")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # No FILEGATE_* from the caller's shell may change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILEGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    # The project root on the path: the console script must not depend on the editable
    # install's finder (its package mapping can be empty after an early `pip install -e`).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def launch_gateway(
    procs: Processes,
    work: Path,
    sandbox: Server,
    name: str,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    data_dir: Path | None = None,
) -> tuple[Server, Path]:
    """Start a gateway process (bench/server.py) on the shared sandbox; it and its key file
    (written once its keys are issued, before it serves)."""
    port = free_port()
    key_file = work / f"{name}-api-key"
    gateway = procs.start(
        name,
        [
            *(sys.executable, "-m", GATEWAY_MODULE, "--port", str(port)),
            *("--data-dir", str(data_dir or work / f"{name}-data")),
            *("--sandbox-url", f"{sandbox.base_url}/sandbox"),
            *("--key-file", str(key_file)),
            *(extra or []),
        ],
        log=work / f"{name}.log",
        base_url=f"http://127.0.0.1:{port}",
        env=child_env(env),
    )
    return gateway, key_file


def start_gateway(
    procs: Processes,
    work: Path,
    sandbox: Server,
    name: str,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    data_dir: Path | None = None,
) -> tuple[Server, dict[str, str]]:
    """A gateway process (bench/server.py) on the shared sandbox, serving; it and its keys."""
    gateway, key_file = launch_gateway(procs, work, sandbox, name, extra, env, data_dir)
    wait_ready(gateway, "/bench/bare")
    return gateway, read_keys(key_file)


def wait_for_keys(server: Server, key_file: Path, *, timeout: float = 60.0) -> None:
    """Until the gateway has migrated its database and issued its keys."""
    deadline = time.monotonic() + timeout
    while not key_file.exists():
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} issued no keys:\n{server.tail()}")
        time.sleep(0.05)


def read_keys(path: Path) -> dict[str, str]:
    """The gateway's key file: JSON from bench.server (a bare token from an older copy)."""
    text = path.read_text().strip()
    if text.startswith("{"):
        keys: dict[str, str] = json.loads(text)
        return keys
    return {"token": text}
