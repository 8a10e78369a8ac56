"""The HTTP server `filegate serve` runs: uvicorn with a guarded protocol for hostile clients.

uvicorn bounds neither the time a client takes to send its request head nor the head's size
(httptools buffers a header of any length), and `limit_concurrency` answers 503 only once a
head is complete, so stalled connections still pile up. `GuardedHttpToolsProtocol` adds those
bounds per connection; the body idle timeout lives in `app.api.timeouts` as ASGI middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httptools
import uvicorn
from prometheus_client import multiprocess as prometheus_multiprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from app.core.config import Settings
from app.core.errors import (
    GatewayError,
    HeaderFieldsTooLarge,
    InvalidRequest,
    RequestTimeout,
    TooManyConnections,
)

log = logging.getLogger("filegate.server")
# Descriptors kept free beside the connections: database and Redis pools, provider clients,
# log files; each connection may also hold one upload spool, hence two per connection.
FD_HEADROOM = 256
FDS_PER_CONNECTION = 2


@dataclass(frozen=True)
class ConnectionLimits:
    """What one server process allows a single client connection, and how many it holds."""

    header_timeout: float
    max_header_bytes: int
    max_header_count: int
    max_connections: int

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout=settings.header_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            max_connections=settings.max_connections,
        )


class GatewayConfig(uvicorn.Config):
    """uvicorn's Config carrying the connection limits to every worker's protocol instances."""

    def __init__(
        self,
        app: Any,
        *,
        limits: ConnectionLimits,
        metrics_dir: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, http=GuardedHttpToolsProtocol, **kwargs)
        self.limits = limits
        self.metrics_dir = metrics_dir


class _HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing a head that broke a cap."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """httptools protocol with a head timeout, a head size and count cap and a connection cap."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = getattr(config, "limits", None)
        assert isinstance(limits, ConnectionLimits), "use GatewayConfig"
        self.limits = limits
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_pending = False  # a request head has begun and is not complete
        self.in_body = False
        self.raw_head_bytes = 0  # bytes received since the last complete head
        self.head_bytes = 0
        self.head_fields = 0
        self.refusal: GatewayError | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log.warning("refused a connection: %d open", len(self.connections) - 1)
            self.refuse(TooManyConnections("The server is at its connection limit; retry shortly."))
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if not self.in_body:
            self.raw_head_bytes += len(data)
            if self._idle():
                self._arm_head_timer()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self.refusal is not None:
                self.refuse(self.refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        # httptools holds a partial header line in memory until it ends: bound it here.
        if self.head_pending and self.raw_head_bytes > self.limits.max_header_bytes:
            self.refuse(self._too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_pending = True
        self.head_bytes = 0
        self.head_fields = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url), fields=0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4, fields=1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_pending = False
        self.in_body = True
        self.raw_head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_body = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined head that began while the previous response ran gets its own clock now;
        # so does the rest of a body the app answered without reading, which a client could
        # otherwise drip forever (each byte cancels uvicorn's keep-alive timer).
        if (self.head_pending or self.in_body) and not self.transport.is_closing():
            self._arm_head_timer()

    def refuse(self, error: GatewayError) -> None:
        """Answer `error` in the gateway's envelope before any app runs, then close."""
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        body = json.dumps(error.body()).encode()
        head = [STATUS_LINE[error.status_code]]
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
        # Answered before any app ran, yet with a request id like every other answer.
        headers.append((b"x-request-id", uuid.uuid4().hex.encode("ascii")))
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Bytes that are not HTTP/1.1: the envelope, not the server's plain text."""
        self.refuse(
            InvalidRequest("The request is not valid HTTP/1.1.", headers={"Connection": "close"})
        )

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _count_head(self, size: int, *, fields: int) -> None:
        self.head_bytes += size
        self.head_fields += fields
        if self.head_fields > self.limits.max_header_count:
            self.refusal = HeaderFieldsTooLarge(
                f"The request has more than {self.limits.max_header_count} header fields."
            )
            raise _HeadRefused
        if self.head_bytes > self.limits.max_header_bytes:
            self.refusal = self._too_large()
            raise _HeadRefused

    def _too_large(self) -> HeaderFieldsTooLarge:
        return HeaderFieldsTooLarge(
            f"The request line and headers exceed {self.limits.max_header_bytes} bytes."
        )

    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timeout(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or not self._idle():
            return
        if self.in_body or (self.raw_head_bytes == 0 and not self.head_pending):
            self.transport.close()  # already answered, or never asked: nothing to say
            return
        log.info("closed a connection whose request head stalled")
        self.refuse(
            RequestTimeout(
                f"The request headers were not received within {self.limits.header_timeout:g} "
                "seconds."
            )
        )


def descriptor_budget(max_connections: int) -> int:
    """Connections this process can hold: raises the soft RLIMIT_NOFILE as far as the hard
    limit allows, and lowers the cap when the descriptors still fall short of it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections * FDS_PER_CONNECTION + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    budget = max(1, (soft - FD_HEADROOM) // FDS_PER_CONNECTION)
    log.warning(
        "FILEGATE_MAX_CONNECTIONS=%d needs %d file descriptors but the limit is %d: "
        "holding at most %d connections",
        max_connections,
        wanted,
        soft,
        budget,
    )
    return budget


def build_config(
    settings: Settings,
    *,
    app: Any = "app.main:create_app",
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    **kwargs: Any,
) -> GatewayConfig:
    """The server configuration `filegate serve` runs; `app` may be an app for tests."""
    limits = ConnectionLimits.of(settings)
    limits = replace(limits, max_connections=descriptor_budget(limits.max_connections))
    kwargs.setdefault("log_level", settings.log_level.lower())
    return GatewayConfig(
        app,
        limits=limits,
        factory=isinstance(app, str),
        host=host,
        port=port,
        workers=workers,
        proxy_headers=False,
        metrics_dir=settings.metrics_dir,
        **kwargs,
    )


METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def multiprocess_metrics(configured: Path | None) -> Iterator[Path]:
    """The directory every worker writes its metric files to, empty, named to the workers
    through PROMETHEUS_MULTIPROC_DIR; emptied (and removed if made here) at exit."""
    if configured is None:
        path, made = Path(tempfile.mkdtemp(prefix="filegate-metrics-")), True
    else:
        path, made = configured, not configured.exists()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _clear_metric_files(path)  # a previous server's files would be counted as ours
    previous = os.environ.get(METRICS_DIR_VARIABLE)
    os.environ[METRICS_DIR_VARIABLE] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(METRICS_DIR_VARIABLE, None)
        else:
            os.environ[METRICS_DIR_VARIABLE] = previous
        if made:
            shutil.rmtree(path, ignore_errors=True)
        else:
            _clear_metric_files(path)


def _clear_metric_files(path: Path) -> None:
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


class GatewaySupervisor(Multiprocess):
    """uvicorn's worker supervisor; a worker it replaces or retires takes its live gauges
    (those of `live*` multiprocess modes) out of /metrics."""

    def __init__(self, config: GatewayConfig, sockets: list[socket.socket], metrics_dir: Path):
        super().__init__(config, sockets)
        self.metrics_dir = metrics_dir

    def keep_subprocess_alive(self) -> None:
        with self._forgetting_exited():
            super().keep_subprocess_alive()

    def handle_signals(self) -> None:  # SIGHUP replaces every worker, SIGTTOU retires one
        with self._forgetting_exited():
            super().handle_signals()

    @contextlib.contextmanager
    def _forgetting_exited(self) -> Iterator[None]:
        before = {p.pid for p in self.processes}
        yield
        for pid in before - {p.pid for p in self.processes}:
            if pid is not None:
                prometheus_multiprocess.mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]


def run(config: GatewayConfig) -> None:
    """Serve until stopped: in this process, or in `config.workers` worker processes that
    share one /metrics through prometheus_client's multiprocess mode."""
    if config.workers > 1:
        with multiprocess_metrics(config.metrics_dir) as metrics_dir:
            log.info("metrics of %d workers collected through %s", config.workers, metrics_dir)
            GatewaySupervisor(config, [config.bind_socket()], metrics_dir).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
