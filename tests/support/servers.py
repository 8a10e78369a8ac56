"""Run ASGI apps on real loopback ports for tests (uvicorn in a background thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


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
