"""Slow and hostile clients against the real server on loopback sockets (app/server.py)."""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from app.core.config import Settings
from app.main import create_app
from app.server import FD_HEADROOM, build_config
from tests.conftest import REDIS_URL, TEST_SECRET
from tests.support.processes import ROOT, gateway_env, mint_key, start_gateway
from tests.support.servers import free_port, serve_config_in_thread

HEADER_TIMEOUT = 1.0
BODY_IDLE = 1.0
MARGIN = 4.0  # a stalled client must be cut within its timeout plus this
MAX_HEADER_BYTES = 4096
MAX_HEADER_COUNT = 20


@dataclass
class Served:
    url: str
    settings: Settings

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)

    @property
    def spool_dir(self) -> Path:
        return self.settings.data_dir / "tmp"

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=5)


@contextmanager
def guarded(
    tmp_path: Path, sqlite_template: Path, sandbox_url: str, namespace: str, **overrides: Any
) -> Iterator[Served]:
    db = tmp_path / "filegate.db"
    shutil.copy(sqlite_template, db)
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": tmp_path / "data",
        "database_url": f"sqlite+aiosqlite:///{db}",
        "redis_url": REDIS_URL,
        "breaker_namespace": namespace,
        "secret_key": TEST_SECRET,
        "sandbox": True,
        "sandbox_url": f"{sandbox_url}/sandbox",
        "mount_sandbox": False,
        "workers_in_process": 0,
        "header_timeout_seconds": HEADER_TIMEOUT,
        "body_idle_timeout_seconds": BODY_IDLE,
        "max_header_bytes": MAX_HEADER_BYTES,
        "max_header_count": MAX_HEADER_COUNT,
        "max_connections": 50,
    }
    values.update(overrides)
    settings = Settings(**values)
    # keep-alive outlasts the head timeout, so a close here is the head timeout's doing
    config = build_config(
        settings,
        app=create_app(settings),
        port=free_port(),
        log_level="warning",
        timeout_keep_alive=60,
    )
    with serve_config_in_thread(config) as url:
        yield Served(url=url, settings=settings)


@pytest.fixture
def served(
    tmp_path: Path, sqlite_template: Path, sandbox_reset: str, breaker_namespace: str
) -> Iterator[Served]:
    with guarded(tmp_path, sqlite_template, sandbox_reset, breaker_namespace) as s:
        yield s


def read_until_closed(sock: socket.socket, *, within: float) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    data = b""
    deadline = time.monotonic() + within
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server kept the connection open for {within} s; got {data!r}")


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def assert_envelope(data: bytes, *, status: int, code: str) -> dict[str, Any]:
    got_status, headers, body = parse(data)
    assert got_status == status, data[:300]
    assert headers["connection"] == "close"
    assert headers["content-type"].startswith("application/json")
    assert headers.get("x-request-id")
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == code
    return error


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body, leaving the connection open."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    _, headers, body = parse(data)
    while len(body) < int(headers["content-length"]):
        more = sock.recv(65536)
        data += more
        body += more
    return data


def drip_until_closed(sock: socket.socket, *, within: float) -> bytes:
    """Send one header byte every 0.2 s; what the server answered once it hung up."""
    data = b""
    deadline = time.monotonic() + within
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"a")
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"a dripping client was still connected after {within} s")


# ---- request head: time -------------------------------------------------------------------


def test_a_dripping_head_is_answered_408_and_closed(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        data = drip_until_closed(sock, within=HEADER_TIMEOUT + MARGIN)
    error = assert_envelope(data, status=408, code="request_timeout")
    assert "headers" in error["message"]


def test_a_silent_connection_is_closed_at_the_head_timeout(served: Served) -> None:
    with served.connect() as sock:
        assert read_until_closed(sock, within=HEADER_TIMEOUT + MARGIN) == b""


def test_the_head_clock_restarts_for_each_request_on_a_kept_alive_connection(
    served: Served,
) -> None:
    with served.connect() as sock:
        for _ in range(2):  # each request is well inside the timeout on its own
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
            assert parse(read_response(sock))[0] == 200
            time.sleep(HEADER_TIMEOUT * 0.6)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n")
        data = read_until_closed(sock, within=HEADER_TIMEOUT + MARGIN)
    assert_envelope(data, status=408, code="request_timeout")


def test_stray_bytes_after_a_response_do_not_hold_the_connection(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert parse(read_response(sock))[0] == 200
        sock.sendall(b"\r\n")  # parsers skip blank lines before a request line
        read_until_closed(sock, within=HEADER_TIMEOUT + MARGIN)


def test_a_body_dripped_after_an_early_answer_does_not_hold_the_connection(
    served: Served,
) -> None:
    with served.connect() as sock:
        # no credentials: refused before the app reads a byte of the promised 10 MiB
        sock.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: gateway\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: 10485760\r\n\r\n--b\r\n"
        )
        data = drip_until_closed(sock, within=HEADER_TIMEOUT + MARGIN)
    assert parse(data)[0] == 401


def test_pipelined_requests_are_all_answered(served: Served) -> None:
    request = b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n"
    with served.connect() as sock:
        sock.sendall(request * 3 + b"GET /health/live HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = read_until_closed(sock, within=MARGIN)
    assert data.count(b"HTTP/1.1 200 OK") == 4


# ---- request head: size and count ---------------------------------------------------------


def head_of(size: int, *, path: str = "/health/live") -> bytes:
    """A complete GET whose request line and headers come to about `size` bytes."""
    start = f"GET {path} HTTP/1.1\r\nHost: gateway\r\nX-Pad: ".encode()
    return start + b"p" * max(0, size - len(start) - 4) + b"\r\n\r\n"


def test_a_head_under_the_cap_is_served(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(head_of(MAX_HEADER_BYTES - 200))
        assert parse(read_response(sock))[0] == 200


def test_a_head_over_the_cap_is_answered_431(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(head_of(MAX_HEADER_BYTES + 200))
        data = read_until_closed(sock, within=MARGIN)
    assert_envelope(data, status=431, code="request_header_fields_too_large")


def test_bytes_that_are_not_http_are_answered_in_the_envelope(served: Served) -> None:
    for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"):
        with served.connect() as sock:
            sock.sendall(garbage)
            data = read_until_closed(sock, within=MARGIN)
        assert_envelope(data, status=400, code="invalid_request")


def test_too_many_header_fields_are_answered_431(served: Served) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_HEADER_COUNT + 1))
    with served.connect() as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\n" + fields + b"\r\n")
        data = read_until_closed(sock, within=MARGIN)
    error = assert_envelope(data, status=431, code="request_header_fields_too_large")
    assert str(MAX_HEADER_COUNT) in error["message"]


def test_an_endless_header_line_is_cut_off_early(served: Served) -> None:
    sent = 0
    with served.connect() as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\nX-Huge: ")
        chunk = b"h" * 65536
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = read_until_closed(sock, within=MARGIN)
    # the server stopped reading long before the 64 MiB; socket buffers hold the rest
    assert sent < 32 * 1024 * 1024
    if data:  # the answer may be lost to the reset of a connection closed mid-send
        assert_envelope(data, status=431, code="request_header_fields_too_large")


# ---- connection cap -----------------------------------------------------------------------


def test_connections_beyond_the_cap_are_refused_until_one_closes(
    tmp_path: Path, sqlite_template: Path, sandbox_reset: str, breaker_namespace: str
) -> None:
    cap = 5
    with (
        guarded(
            tmp_path,
            sqlite_template,
            sandbox_reset,
            breaker_namespace,
            max_connections=cap,
            header_timeout_seconds=60,
        ) as served,
        ExitStack() as stack,
    ):
        hogs = [stack.enter_context(served.connect()) for _ in range(cap)]
        for hog in hogs:
            hog.sendall(b"GET /health/live HTTP/1.1\r\n")  # half-sent, held open
        with served.connect() as extra:
            extra.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
            data = read_until_closed(extra, within=MARGIN)
        if data:
            error = assert_envelope(data, status=503, code="too_many_connections")
            assert error["type"] == "server_error"
        with httpx.Client(timeout=5) as client:
            try:
                refused = client.get(served.url + "/health/live").status_code == 503
            except httpx.TransportError:
                refused = True
            assert refused
            hogs[0].close()
            hogs[1].close()
            deadline = time.monotonic() + MARGIN
            status = None
            while time.monotonic() < deadline and status != 200:
                try:
                    status = client.get(served.url + "/health/live").status_code
                except httpx.TransportError:
                    time.sleep(0.05)
        assert status == 200
        for hog in hogs[2:]:  # the held connections were never disturbed
            hog.sendall(b"Host: gateway\r\n\r\n")
            assert parse(read_response(hog))[0] == 200


# ---- request body -------------------------------------------------------------------------


BOUNDARY = "slowboundary"


def multipart(content: bytes, *, filename: str = "notes.txt") -> bytes:
    disposition = f"--{BOUNDARY}\r\nContent-Disposition: form-data"
    head = (
        f'{disposition}; name="purpose"\r\n\r\nfile-extract\r\n'
        f'{disposition}; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    )
    return head.encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode()


async def api_key(served: Served, **kw: Any) -> str:
    return await mint_key(served.settings.resolved_database_url, TEST_SECRET.encode(), **kw)


async def test_a_stalled_upload_is_answered_408_and_leaves_no_spool(served: Served) -> None:
    token = await api_key(served)
    body = multipart(b"x" * (4 * 1024 * 1024))
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: gateway\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with served.connect() as sock:
        sock.sendall(head + body[: 2 * 1024 * 1024])  # half the file, then silence
        spooled = False
        deadline = time.monotonic() + BODY_IDLE
        while not spooled and time.monotonic() < deadline:
            spooled = any(served.spool_dir.glob("upload-*"))
            time.sleep(0.01)
        data = read_until_closed(sock, within=BODY_IDLE + MARGIN)
    assert spooled, "the upload never reached the spool, so the test proves nothing"
    error = assert_envelope(data, status=408, code="request_timeout")
    assert "body" in error["message"]
    assert list(served.spool_dir.iterdir()) == []


async def test_a_stalled_json_body_is_answered_408(served: Served) -> None:
    token = await api_key(served, scopes=("admin",))
    with served.connect() as sock:
        sock.sendall(
            (
                "POST /admin/keys HTTP/1.1\r\nHost: gateway\r\n"
                f"Authorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                '{"tenant": "ac'
            ).encode()
        )
        data = read_until_closed(sock, within=BODY_IDLE + MARGIN)
    assert_envelope(data, status=408, code="request_timeout")


async def test_slow_but_steady_and_fast_uploads_still_work(served: Served) -> None:
    token = await api_key(served)
    content = bytes(range(256)) * (3 * 1024 * 4)  # 3 MiB
    body = multipart(content)
    piece = 128 * 1024

    async def steady() -> Any:
        for start in range(0, len(body), piece):
            yield body[start : start + piece]
            await asyncio.sleep(BODY_IDLE / 4)

    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(len(body)),
    }
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
        started = time.monotonic()
        slow = await client.post("/v1/files", content=steady(), headers=headers)
        took = time.monotonic() - started
        assert slow.status_code == 200, slow.text
        assert slow.json()["bytes"] == len(content)
        assert took > 2 * BODY_IDLE  # longer than the idle timeout in all: only gaps count

        fast = await client.post(
            "/v1/files",
            files={"file": ("fast.txt", b"f" * (5 * 1024 * 1024))},
            data={"purpose": "file-extract"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert fast.status_code == 200, fast.text
    assert list(served.spool_dir.iterdir()) == []


# ---- file descriptors ---------------------------------------------------------------------


def budget_in_child(soft: int, hard: int, max_connections: int) -> tuple[int, int]:
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "from app.server import descriptor_budget\n"
        f"print(descriptor_budget({max_connections}),"
        " resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    budget, new_soft = out.stdout.split()
    return int(budget), int(new_soft)


def test_the_descriptor_limit_is_raised_or_the_cap_lowered() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * 100 + FD_HEADROOM:
        pytest.skip("the hard descriptor limit is too low to raise")
    budget, soft = budget_in_child(64, hard, 100)
    assert budget == 100
    assert soft >= 2 * 100 + FD_HEADROOM
    budget, soft = budget_in_child(1024, 1024, 1000)
    assert budget == (1024 - FD_HEADROOM) // 2
    assert soft == 1024


# ---- `filegate serve` ---------------------------------------------------------------------

SERVE_CAP = 10


@pytest.fixture(scope="module")
def gateway_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, int]]:
    """`filegate serve --sandbox` with a 2 s head timeout and a cap of SERVE_CAP connections."""
    env = gateway_env(
        data_dir=tmp_path_factory.mktemp("serve") / "data",
        HEADER_TIMEOUT_SECONDS="2",
        MAX_CONNECTIONS=str(SERVE_CAP),
        LOG_LEVEL="WARNING",
    )
    with start_gateway(env, None, "--sandbox") as proc:
        host, port = proc.url.removeprefix("http://").split(":")
        yield host, int(port), proc.pid


@pytest.mark.slow
def test_filegate_serve_cuts_a_dripping_head(gateway_process: tuple[str, int, int]) -> None:
    host, port, _ = gateway_process
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        data = drip_until_closed(sock, within=2 + MARGIN)
    assert_envelope(data, status=408, code="request_timeout")


@pytest.mark.slow
def test_filegate_serve_keeps_incomplete_heads_out_of_memory(
    gateway_process: tuple[str, int, int],
) -> None:
    host, port, pid = gateway_process
    server = psutil.Process(pid)
    before = server.memory_info().rss
    chunk = b"h" * 65536
    with ExitStack() as stack:
        for _ in range(4):
            sock = stack.enter_context(socket.create_connection((host, port), timeout=5))
            sock.sendall(b"GET /health/live HTTP/1.1\r\nX-Huge: ")
            try:
                for _ in range(16 * 1024 * 1024 // len(chunk)):
                    sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
        grown = server.memory_info().rss - before
    # four incomplete 16 MiB heads once cost the server 64 MiB and more; now each is cut early
    assert grown < 16 * 1024 * 1024, f"the server grew by {grown} bytes"
    assert httpx.get(f"http://{host}:{port}/health/live", timeout=5).status_code == 200


@pytest.mark.slow
def test_filegate_serve_refuses_connections_beyond_its_cap(
    gateway_process: tuple[str, int, int],
) -> None:
    host, port, _ = gateway_process
    url = f"http://{host}:{port}/health/live"
    with ExitStack() as stack, httpx.Client(timeout=5) as client:
        hogs = [
            stack.enter_context(socket.create_connection((host, port), timeout=5))
            for _ in range(SERVE_CAP)
        ]
        for hog in hogs:
            hog.sendall(b"GET /health/live HTTP/1.1\r\n")
        try:
            refused = client.get(url).status_code == 503
        except httpx.TransportError:
            refused = True
        assert refused
        hogs[0].close()
        deadline = time.monotonic() + MARGIN
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = client.get(url).status_code
            except httpx.TransportError:
                time.sleep(0.05)
        assert status == 200
