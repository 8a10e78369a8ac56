"""Run ASGI apps on real loopback ports for tests (uvicorn in a background thread)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn

from tests.support.waiting import wait_until


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, *, port: int | None = None, **options: Any) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 in a thread; yields its base URL and stops it afterwards.

    `options` go to uvicorn.Config (e.g. ``log_config=None, log_level="info"``).
    """
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        **{"log_level": "warning", "lifespan": "on", **options},
    )
    with serve_config_in_thread(config) as url:
        yield url


@contextmanager
def serve_config_in_thread(config: uvicorn.Config) -> Iterator[str]:
    """Serve a ready uvicorn Config (host 127.0.0.1) in a thread; yields its base URL."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@asynccontextmanager
async def serve_started_app(app: Any, settings: Any) -> AsyncIterator[tuple[str, int]]:
    """Serve an app whose lifespan already runs in this event loop on a loopback port, with
    the gateway's own server protocol; yields (host, port) and stops it afterwards."""
    from app.server import build_config

    config = build_config(settings, app=app, port=free_port(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started or task.done(), timeout=10, what="the server start")
    if task.done():
        await task
        raise RuntimeError("test server did not start")
    try:
        yield "127.0.0.1", config.port
    finally:
        server.should_exit = True
        await task
