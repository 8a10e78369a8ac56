"""Serve the sandbox on an ephemeral loopback port inside a running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn

from app.sandbox.app import create_standalone_app

LOOPBACK = "127.0.0.1"
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to the server hosting it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serve_on_loopback(**options: Any) -> AsyncIterator[str]:
    """Run a fresh sandbox on 127.0.0.1 at a port the kernel picks; yields its /sandbox URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, 0))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        create_standalone_app(**options),
        host=LOOPBACK,
        port=port,  # only named in the "running on" line: the socket above is already bound
        lifespan="off",
        # The hosting server configured logging; these None/True leave its loggers untouched.
        log_config=None,
        log_level=None,
        access_log=True,
        timeout_graceful_shutdown=_STOP_TIMEOUT_S,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="filegate-sandbox")
    try:
        async with asyncio.timeout(_START_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the in-process sandbox stopped while starting")
                await asyncio.sleep(0.01)
        yield f"http://{LOOPBACK}:{port}/sandbox"
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(_STOP_TIMEOUT_S + 1):
                await task
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            sock.close()
