"""`python -m bench`: the filegate performance report (a report, not a test: always exits 0).

Starts, on loopback, a standalone provider sandbox process and a gateway process
(bench/server.py), then measures:

1. a 100 MiB upload through the gateway vs the same upload straight to the sandbox;
2. a dedup hit (the same 100 MiB again, same tenant and purpose) vs the direct upload;
3. peak gateway RSS over idle during 8 concurrent 100 MiB uploads;
4. GET /v1/files/{id} requests/s vs GET /bench/bare in the same gateway process;
5. fallback overhead: with moonshot's circuit breaker forced open through the admin API, an
   `auto` 1 MiB CSV upload (order moonshot,zai) falls back to zai; median of per-pair deltas
   vs `provider=zai` over interleaved pairs (the moonshot sandbox must see no upload);
6. hanging-provider isolation: sequential provider=zai 1 MiB uploads while K provider=moonshot
   uploads are held by the sandbox's hang fault, vs the same uploads without the hang;
7. resilience, on a second gateway (first-byte timeout RESILIENCE_FIRST_BYTE_S, breaker
   reset RESILIENCE_BREAKER_RESET_S): (a) hung-provider fallback: with the sandbox's hang
   fault on moonshot uploads, the time for an `auto` 1 MiB CSV upload to answer from zai;
   (b) recovery: with moonshot answering 503, N provider=moonshot uploads answered 202
   (pending); the fault is cleared and the time until every file is `processed` is taken
   by polling GET /v1/files/{id};
8. authentication overhead: sequential GET /v1/files/{id} over one keep-alive connection with
   an API key and with an HS256 JWT, vs the same retrieve without authentication
   (GET /bench/noauth/v1/files/{id}, bench/server.py);

and prints a table (also written to bench-results/latest.txt).  Timings are medians of
REPS runs (time.perf_counter).  Payloads are streamed from temp files written once.

Options: --reps N, --size BYTES, --rps-requests N, --rps-concurrency C, --load-procs K,
--fallback-pairs N, --hang-runs N, --hang-concurrency K, --recovery-files N,
--auth-requests N, --phases core,fallback,hang,resilience,auth (a subset), --profile
(cProfile inside the gateway per phase, written under bench-results/profile/).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"
MiB = 1024 * 1024
SIZE = 100 * MiB  # 104857600 bytes
CHUNK = MiB
PURPOSE = "file-extract"
FILENAME = "big.txt"
CONTENT_TYPE = "text/plain"
DIRECT_KEY = "sk-x"
UPLOAD_TIMEOUT = httpx.Timeout(300.0, connect=10.0)
SAMPLE_SECONDS = 0.02
# The gateway server module; an experiment can point this at a patched copy of bench.server.
GATEWAY_MODULE = os.environ.get("BENCH_GATEWAY_MODULE", "bench.server")

UPLOAD_RATIO_MAX = 2.5
DEDUP_RATIO_MAX = 1.0
RSS_DELTA_MAX_MIB = 64.0
RPS_RATIO_MIN = 0.4
FALLBACK_DELTA_MAX_MS = 5.0
HANG_RATIO_MAX = 1.2
AUTH_DELTA_MAX_MS = 1.0
RECOVERY_GOAL_S = 5.0
HUNG_FALLBACK_GOAL_S = 5.0
# The resilience gateway runs the production defaults: a hung call is cut after this, and an
# open circuit lets one probe through after this.
RESILIENCE_FIRST_BYTE_S = Settings.model_fields["provider_first_byte_timeout"].default
RESILIENCE_BREAKER_RESET_S = Settings.model_fields["breaker_reset_seconds"].default
RECOVERY_OUTAGE_S = 3.0  # how long the provider keeps failing after the last pending upload

# The small-upload rows (fallback, hanging provider): Z.ai file-extract takes .csv up to 50 MiB.
CSV_SIZE = MiB
CSV_FILENAME = "bench.csv"
CSV_CONTENT_TYPE = "text/csv"
CSV_HEAD = 37  # the first line, "key,<32 hex>\n", differs per upload (distinct sha256: no dedup)
SMALL_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# core = the big uploads, dedup, memory and request-rate rows (one group: they share state).
PHASES = ("core", "fallback", "hang", "resilience", "auth")


# --------------------------------------------------------------------------------------------
# processes


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


# --------------------------------------------------------------------------------------------
# payloads


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(CHUNK, left)
            fh.write(os.urandom(n))
            left -= n


def variant(base: Path, path: Path) -> Path:
    """A copy of `base` with distinct leading bytes, so a distinct sha256 (no dedup)."""
    shutil.copyfile(base, path)
    with open(path, "r+b") as fh:
        fh.write(os.urandom(64))
    return path


# --------------------------------------------------------------------------------------------
# uploads


def upload(client: httpx.Client, url: str, path: Path, headers: dict[str, str]) -> dict[str, Any]:
    with open(path, "rb") as fh:
        response = client.post(
            url,
            headers=headers,
            data={"purpose": PURPOSE},
            files={"file": (FILENAME, fh, CONTENT_TYPE)},
            timeout=UPLOAD_TIMEOUT,
        )
    if response.status_code != 200:
        raise RuntimeError(f"POST {url} -> {response.status_code}: {response.text[:500]}")
    body: dict[str, Any] = response.json()
    return body


def upload_csv(
    client: httpx.Client,
    url: str,
    data: bytes,
    headers: dict[str, str],
    *,
    provider: str,
    timeout: httpx.Timeout = UPLOAD_TIMEOUT,
) -> dict[str, Any]:
    """A small in-memory CSV upload to the gateway with an explicit `provider` field."""
    response = client.post(
        url,
        headers=headers,
        data={"purpose": PURPOSE, "provider": provider},
        files={"file": (CSV_FILENAME, data, CSV_CONTENT_TYPE)},
        timeout=timeout,
    )
    if response.status_code != 200:
        raise RuntimeError(
            f"POST {url} provider={provider} -> {response.status_code}: {response.text[:500]}"
        )
    body: dict[str, Any] = response.json()
    return body


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# --------------------------------------------------------------------------------------------
# memory


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


class RssSampler(threading.Thread):
    def __init__(self, proc: psutil.Process, interval: float = SAMPLE_SECONDS) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.peak = max(self.peak, tree_rss(self.proc))
                self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        with contextlib.suppress(psutil.NoSuchProcess):
            self.peak = max(self.peak, tree_rss(self.proc))
        return self.peak


class ForeignLoad(threading.Thread):
    """CPU used by processes outside this bench's own process tree while it runs: other work
    on a small machine makes the timings noisy, so the report says how much there was."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.cpu_seconds = 0.0
        self.peak_cores = 0.0
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.top: dict[str, float] = {}
        self._stop_event = threading.Event()

    @staticmethod
    def _snapshot() -> dict[int, tuple[str, float]]:
        ours = {os.getpid()}
        with contextlib.suppress(psutil.Error):
            ours |= {p.pid for p in psutil.Process().children(recursive=True)}
        snap: dict[int, tuple[str, float]] = {}
        for p in psutil.process_iter(["name", "cpu_times"]):
            times = p.info.get("cpu_times")
            if p.pid in ours or times is None:
                continue
            snap[p.pid] = (p.info.get("name") or "?", times.user + times.system)
        return snap

    def run(self) -> None:
        prev = self._snapshot()
        while not self._stop_event.wait(self.interval):
            now = self._snapshot()
            step = 0.0
            for pid, (name, cpu) in now.items():
                if pid in prev:
                    delta = max(0.0, cpu - prev[pid][1])
                    step += delta
                    self.top[name] = self.top.get(name, 0.0) + delta
            self.cpu_seconds += step
            self.peak_cores = max(self.peak_cores, step / self.interval)
            prev = now

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.elapsed = time.perf_counter() - self.started

    def summary(self) -> str:
        cores = self.cpu_seconds / max(self.elapsed, 1e-9)
        busiest = sorted(self.top.items(), key=lambda kv: -kv[1])[:3]
        names = ", ".join(f"{n} {c:.0f}s" for n, c in busiest if c >= 1.0) or "none"
        warning = "  <-- timings are noisy" if cores >= 0.25 else ""
        return (
            f"other processes on this machine used {cores:.2f} CPU on average during the run "
            f"(peak {self.peak_cores:.2f}; busiest: {names}){warning}"
        )


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system
    return total


# --------------------------------------------------------------------------------------------
# request rate


@dataclass
class LoadResult:
    rps: float
    ok: int
    errors: int
    elapsed: float
    server_cpu: float  # server CPU seconds per wall second during the run
    driver_cpu: float  # load-generator CPU seconds per wall second (all processes)


def drive_load(
    url: str,
    *,
    token: str | None,
    requests: int,
    concurrency: int,
    procs: int,
    server: psutil.Process,
    client: str = "httpx",
) -> LoadResult:
    env = child_env({"BENCH_TOKEN": token} if token else {})
    per, extra = divmod(requests, procs)
    children: list[subprocess.Popen[str]] = []
    try:
        for i in range(procs):
            argv = [sys.executable, "-m", "bench.load", "--url", url, "--client", client]
            argv += ["--requests", str(per + (1 if i < extra else 0))]
            argv += ["--concurrency", str(concurrency), "--warmup", "200"]
            child = subprocess.Popen(  # noqa: S603 - argv is built by the bench itself
                argv, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            children.append(child)
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"load generator failed to start: {line!r}")
        cpu0 = tree_cpu(server)
        t0 = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            assert child.stdout is not None
            results.append(json.loads(child.stdout.readline()))
            child.wait(timeout=60)
        t1 = time.perf_counter()
        cpu1 = tree_cpu(server)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    elapsed = end - start
    ok = sum(r["ok"] for r in results)
    errors = sum(r["errors"] for r in results)
    return LoadResult(
        rps=ok / elapsed,
        ok=ok,
        errors=errors,
        elapsed=elapsed,
        server_cpu=(cpu1 - cpu0) / max(t1 - t0, 1e-9),
        driver_cpu=sum(r["cpu"] for r in results) / elapsed,
    )


# --------------------------------------------------------------------------------------------
# report


@dataclass
class Row:
    name: str
    measured: str
    baseline: str
    ratio: str
    target: str
    verdict: str


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        self.rows.append(Row(*cells))

    def render(self) -> str:
        header = Row("name", "measured", "baseline", "ratio", "target", "PASS/FAIL")
        rows = [header, *self.rows]
        cells = [(r.name, r.measured, r.baseline, r.ratio, r.target, r.verdict) for r in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(6)]

        def line(r: Row) -> str:
            row = (r.name, r.measured, r.baseline, r.ratio, r.target, r.verdict)
            return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

        out = [line(header), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in self.rows]
        if self.notes:
            out += ["", *self.notes]
        return "\n".join(out)


def median_run(results: list[LoadResult]) -> LoadResult:
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def mbps(size: int, seconds: float) -> float:
    return size / 1e6 / seconds


# --------------------------------------------------------------------------------------------
# small CSV payloads


def csv_base(size: int = CSV_SIZE) -> bytes:
    """`size` bytes of CSV text; the first CSV_HEAD bytes are replaced per upload."""
    rng = random.Random(1234)
    lines = [b"key," + b"0" * 32 + b"\n", b"id,name,value,ratio\n"]
    total = sum(map(len, lines))
    i = 0
    while total < size:
        line = f"{i},item-{rng.getrandbits(48):012x},{rng.randint(0, 10**9)},{rng.random():.6f}\n"
        lines.append(line.encode())
        total += len(lines[-1])
        i += 1
    data = b"".join(lines)[:size]
    return data[:-1] + b"\n"


def csv_variant(base: bytes) -> bytes:
    """`base` with a fresh first line: same size, distinct sha256."""
    head = b"key," + secrets.token_hex(16).encode() + b"\n"
    assert len(head) == CSV_HEAD
    return head + base[CSV_HEAD:]


def placed_on(body: dict[str, Any]) -> list[str]:
    return [p["provider"] for p in body.get("providers", []) if p.get("status") == "active"]


# --------------------------------------------------------------------------------------------
# sequential latency over one keep-alive connection


class RawConnection:
    """Blocking HTTP/1.1 keep-alive GETs over one TCP connection (TCP_NODELAY): almost no
    client-side cost per request, so that per-request latency differences are the server's."""

    def __init__(self, base_url: str) -> None:
        parts = httpx.URL(base_url)
        self.host = parts.host
        self.port = parts.port or 80
        self.netloc = f"{self.host}:{self.port}"
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = sock, bytearray()
        return sock

    def request(self, path: str, headers: dict[str, str]) -> bytes:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.netloc}", "Accept: */*"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def get(self, raw_request: bytes) -> tuple[int, bytes]:
        sock = self.sock or self._connect()
        sock.sendall(raw_request)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("server closed the connection")
            buf += chunk
        head = bytes(buf[:end])
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by the raw client")
            elif name == b"connection" and value.strip().lower() == b"close":
                self.close()  # after this response
        if length is None:
            raise RuntimeError("response without content-length")
        start = end + 4
        while len(buf) < start + length:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("server closed the connection mid-body")
            buf += chunk
        body = bytes(buf[start : start + length])
        del buf[: start + length]
        return status, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def make_jwt(*, tenant: str, scope: str, lifetime: int = 3600) -> str:
    from jose import jwt  # the app's own JWT library (python-jose)

    from bench.server import JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET

    now = int(time.time())
    claims = {
        "sub": "bench-user",
        "aud": JWT_AUDIENCE,
        "iss": JWT_ISSUER,
        "iat": now,
        "exp": now + lifetime,
        "tenant": tenant,
        "scope": scope,
    }
    token: str = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    return token


# --------------------------------------------------------------------------------------------
# the gateway and the sandbox as the new phases use them


@dataclass
class Bench:
    client: httpx.Client
    gateway: Server
    sandbox: Server
    token: str
    admin_token: str | None
    tenant: str
    report: Report
    profile: bool
    csv: bytes = b""
    foreign: ForeignLoad | None = None

    def foreign_mark(self) -> tuple[float, float]:
        cpu = self.foreign.cpu_seconds if self.foreign is not None else 0.0
        return cpu, time.perf_counter()

    def foreign_since(self, mark: tuple[float, float]) -> str:
        """CPU other processes used since `mark` (1 s samples, so rough for short phases)."""
        if self.foreign is None:
            return "?"
        cores = (self.foreign.cpu_seconds - mark[0]) / max(time.perf_counter() - mark[1], 1e-9)
        return f"{cores:.2f} CPU"

    @property
    def gw_files(self) -> str:
        return self.gateway.base_url + "/v1/files"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def sandbox_call(self, method: str, provider: str, what: str, **kw: Any) -> dict[str, Any]:
        url = f"{self.sandbox.base_url}/sandbox/{provider}/{what}"
        response = self.client.request(method, url, timeout=30, **kw)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def reset(self, provider: str) -> None:
        self.sandbox_call("POST", provider, "_reset")

    def upload_calls(self, provider: str) -> int:
        return int(self.sandbox_call("GET", provider, "_stats")["calls"]["upload"])

    def small_upload(self, provider: str, client: httpx.Client | None = None) -> dict[str, Any]:
        return upload_csv(
            client or self.client,
            self.gw_files,
            csv_variant(self.csv),
            self.auth,
            provider=provider,
            timeout=SMALL_TIMEOUT,
        )

    def timed_small_upload(self, provider: str, expect: str) -> float:
        data = csv_variant(self.csv)  # prepared outside the timed part
        t, body = timed(
            partial(
                upload_csv,
                self.client,
                self.gw_files,
                data,
                self.auth,
                provider=provider,
                timeout=SMALL_TIMEOUT,
            )
        )
        if body.get("status") != "processed" or placed_on(body) != [expect]:
            raise RuntimeError(f"provider={provider} upload not placed on {expect} only: {body}")
        if body.get("bytes") != len(self.csv):
            raise RuntimeError(f"provider={provider} upload stored {body.get('bytes')} bytes")
        return t

    def breaker(self, provider: str, action: str) -> dict[str, Any]:
        response = self.client.post(
            f"{self.gateway.base_url}/admin/providers/{provider}/breaker",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            json={"action": action},
            timeout=30,
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"breaker {action} {provider} -> {response.status_code}: {response.text[:300]}"
            )
        body: dict[str, Any] = response.json()
        return body


# --------------------------------------------------------------------------------------------
# 5: fallback overhead


def fallback_phase(b: Bench, *, pairs: int, warm: int = 3) -> None:
    """`auto` with moonshot's breaker open (falls back to zai) vs `provider=zai`, interleaved."""
    if not b.admin_token:
        raise RuntimeError("the gateway issued no admin key (an old bench.server?)")
    b.reset("moonshot")
    b.reset("zai")
    mark = b.foreign_mark()
    direct: list[float] = []
    auto: list[float] = []
    deltas: list[float] = []
    for _ in range(warm):
        b.timed_small_upload("zai", "zai")
    opened = b.breaker("moonshot", "open")
    try:
        if opened.get("state") != "open":
            raise RuntimeError(f"moonshot breaker did not open: {opened}")
        moonshot_before = b.upload_calls("moonshot")
        for _ in range(warm):
            b.timed_small_upload("auto", "zai")
        zai_calls = 0
        with profiled(b.client, b.gateway, "fallback", b.profile):
            for i in range(pairs):
                if i % 20 == 0:  # the zai sandbox holds at most 100 file-extract files
                    zai_calls += b.upload_calls("zai")
                    b.reset("zai")
                    b.client.get(b.gateway.base_url + "/bench/bare")  # keep the socket warm
                order = ("zai", "auto") if i % 2 == 0 else ("auto", "zai")
                got = {p: b.timed_small_upload(p, "zai") for p in order}
                direct.append(got["zai"])
                auto.append(got["auto"])
                deltas.append(got["auto"] - got["zai"])
        zai_calls += b.upload_calls("zai")
        moonshot_calls = b.upload_calls("moonshot") - moonshot_before
        still = b.breaker("moonshot", "open")  # idempotent; shows it stayed open
    finally:
        closed = b.breaker("moonshot", "reset")
    if moonshot_calls:
        raise RuntimeError(f"moonshot saw {moonshot_calls} upload calls with its breaker open")
    if zai_calls != 2 * (pairs + warm):
        raise RuntimeError(f"zai saw {zai_calls} upload calls, expected {2 * (pairs + warm)}")
    if closed.get("state") != "closed":
        raise RuntimeError(f"moonshot breaker not closed after reset: {closed}")
    d_med = statistics.median(direct) * 1e3
    a_med = statistics.median(auto) * 1e3
    delta = statistics.median(deltas) * 1e3
    b.report.add(
        f"fallback overhead: auto->zai, moonshot open, {CSV_SIZE / MiB:g} MiB (ms)",
        f"{a_med:.2f}",
        f"{d_med:.2f} provider=zai",
        f"{delta:+.2f} ms",
        f"<= +{FALLBACK_DELTA_MAX_MS:g} ms",
        verdict(delta <= FALLBACK_DELTA_MAX_MS),
    )
    b.report.notes.append(
        f"fallback: {pairs} interleaved pairs (order alternating) after {warm} warm-ups each; "
        f"delta = median of per-pair (auto - zai) = {delta:+.2f} ms (difference of medians "
        f"{a_med - d_med:+.2f} ms); every upload placed on zai only; moonshot sandbox upload "
        f"calls during the fallback runs: {moonshot_calls}; zai sandbox upload calls: "
        f"{zai_calls}; breaker state during the runs: {still.get('state')}, after reset: "
        f"{closed.get('state')}; other processes used {b.foreign_since(mark)} meanwhile"
    )
    print(
        f"fallback: zai {d_med:.2f} ms  auto {a_med:.2f} ms  delta {delta:+.2f} ms",
        file=sys.stderr,
    )


# --------------------------------------------------------------------------------------------
# 6: a hanging provider must not slow the other one


@contextlib.contextmanager
def moonshot_hanging(b: Bench, k: int) -> Iterator[list[Any]]:
    """K provider=moonshot uploads held by the sandbox's hang fault for the duration."""
    fault = {"hang": True, "rate": 1.0, "operations": ["upload"]}
    b.sandbox_call("POST", "moonshot", "_faults", json=fault)
    pool = ThreadPoolExecutor(max_workers=k)
    futures: list[Any] = []
    try:
        before = b.upload_calls("moonshot")

        def hung() -> dict[str, Any]:
            with httpx.Client(timeout=SMALL_TIMEOUT) as c:
                return b.small_upload("moonshot", client=c)

        futures = [pool.submit(hung) for _ in range(k)]
        deadline = time.monotonic() + 30
        while b.upload_calls("moonshot") < before + k:  # counted as the sandbox gets them
            done = [f for f in futures if f.done()]
            if done:
                raise RuntimeError(f"a moonshot upload ended before the hang: {done[0].result()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the moonshot uploads did not reach the sandbox")
            time.sleep(0.02)
        time.sleep(0.3)  # let the sandbox finish reading the bodies and start hanging
        if any(f.done() for f in futures):
            raise RuntimeError("a moonshot upload ended despite the hang fault")
        yield futures
        if any(f.done() for f in futures):
            raise RuntimeError("a moonshot upload ended during the measurement (timeout?)")
    finally:
        with contextlib.suppress(httpx.HTTPError):
            b.sandbox_call("DELETE", "moonshot", "_faults")  # releases the held requests
        pool.shutdown(wait=True)
    for f in futures:  # released: they complete normally
        body = f.result()
        if placed_on(body) != ["moonshot"]:
            raise RuntimeError(f"a released moonshot upload was not placed: {body}")


def hang_phase(b: Bench, *, runs: int, k: int, rounds: int = 8) -> None:
    """provider=zai uploads with K provider=moonshot uploads hanging vs without, in windows
    ordered ABBA (so a linear drift cancels); each window starts with one untimed upload."""
    b.reset("moonshot")
    b.reset("zai")
    for _ in range(3):
        b.timed_small_upload("zai", "zai")
    mark = b.foreign_mark()
    rounds = max(2, min(rounds, runs))
    per = max(1, runs // rounds)
    base: list[float] = []
    hung: list[float] = []

    def window() -> list[float]:
        b.timed_small_upload("zai", "zai")  # untimed: the first after a phase switch
        return [b.timed_small_upload("zai", "zai") for _ in range(per)]

    for r in range(rounds):
        for hanging in (False, True) if r % 2 == 0 else (True, False):
            b.reset("zai")
            if not hanging:
                base += window()
                continue
            with moonshot_hanging(b, k), profiled(b.client, b.gateway, f"hang-{r}", b.profile):
                hung += window()
            b.reset("moonshot")
    base_med = statistics.median(base) * 1e3
    hung_med = statistics.median(hung) * 1e3
    ratio = hung_med / base_med
    b.report.add(
        f"zai upload, {k} moonshot uploads hanging, {CSV_SIZE / MiB:g} MiB (ms)",
        f"{hung_med:.2f}",
        f"{base_med:.2f} no hang",
        f"{ratio:.2f}",
        f"<= {HANG_RATIO_MAX}",
        verdict(ratio <= HANG_RATIO_MAX),
    )
    b.report.notes.append(
        f"hanging provider: {rounds} rounds (ABBA order) of {per} sequential provider=zai "
        f"uploads without / with {k} provider=moonshot uploads held by the sandbox hang fault "
        f"(all {k} still in flight at the end of each window, then released and placed on "
        f"moonshot); other processes used {b.foreign_since(mark)} meanwhile; zai ms without: "
        f"{' '.join(f'{t * 1e3:.1f}' for t in base)} | with: "
        f"{' '.join(f'{t * 1e3:.1f}' for t in hung)}"
    )
    print(f"hang: zai {base_med:.2f} ms -> {hung_med:.2f} ms ({ratio:.2f}x)", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# 7: resilience: falling back from a hung provider, and recovering pending files


def start_gateway(
    procs: Processes,
    work: Path,
    sandbox: Server,
    name: str,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Server, dict[str, str]]:
    """A gateway process (bench/server.py) on the shared sandbox; it and its keys."""
    port = free_port()
    key_file = work / f"{name}-api-key"
    gateway = procs.start(
        name,
        [
            *(sys.executable, "-m", GATEWAY_MODULE, "--port", str(port)),
            *("--data-dir", str(work / f"{name}-data")),
            *("--sandbox-url", f"{sandbox.base_url}/sandbox"),
            *("--key-file", str(key_file)),
            *(extra or []),
        ],
        log=work / f"{name}.log",
        base_url=f"http://127.0.0.1:{port}",
        env=child_env(env),
    )
    wait_ready(gateway, "/bench/bare")
    return gateway, read_keys(key_file)


def resilience_phase(
    b: Bench, procs: Processes, work: Path, *, runs: int = 3, files: int = 10
) -> None:
    """Rows (a) hung-provider fallback and (b) recovery time, on a gateway of their own."""
    b.reset("moonshot")
    b.reset("zai")
    gateway, keys = start_gateway(
        procs,
        work,
        b.sandbox,
        "resilience-gateway",
        [
            *("--first-byte-timeout", f"{RESILIENCE_FIRST_BYTE_S:g}"),
            *("--breaker-reset-seconds", f"{RESILIENCE_BREAKER_RESET_S:g}"),
        ],
    )
    mark = b.foreign_mark()
    auth = {"Authorization": f"Bearer {keys['token']}"}
    files_url = gateway.base_url + "/v1/files"
    try:
        upload_csv(b.client, files_url, csv_variant(b.csv), auth, provider="auto")  # warm
        # ---- (a): every auto upload waits out the hung moonshot, then zai answers -------
        b.sandbox_call("POST", "moonshot", "_faults", json={"hang": True, "operations": ["upload"]})
        fallback: list[float] = []
        try:
            for _ in range(runs):  # fewer than fail_max: each run meets the hang itself
                data = csv_variant(b.csv)
                t, body = timed(
                    partial(upload_csv, b.client, files_url, data, auth, provider="auto")
                )
                if placed_on(body) != ["zai"]:
                    raise RuntimeError(f"a hung-fallback upload was not placed on zai: {body}")
                fallback.append(t)
        finally:
            b.sandbox_call("DELETE", "moonshot", "_faults")
        hung_calls = b.upload_calls("moonshot")
        admin = {"Authorization": f"Bearer {keys['admin_token']}"}
        b.client.post(
            gateway.base_url + "/admin/providers/moonshot/breaker",
            headers=admin,
            json={"action": "reset"},
        ).raise_for_status()

        # ---- (b): pending files while moonshot fails, then the time to place them all ---
        b.reset("moonshot")
        b.reset("zai")
        outage = {"status": 503, "operations": ["upload"]}
        b.sandbox_call("POST", "moonshot", "_faults", json=outage)
        ids: list[str] = []
        try:
            for _ in range(files):
                response = b.client.post(
                    files_url,
                    headers=auth,
                    data={"purpose": PURPOSE, "provider": "moonshot"},
                    files={"file": (CSV_FILENAME, csv_variant(b.csv), CSV_CONTENT_TYPE)},
                    timeout=SMALL_TIMEOUT,
                )
                if response.status_code != 202:
                    raise RuntimeError(
                        f"a pending upload got {response.status_code}: {response.text[:300]}"
                    )
                ids.append(response.json()["id"])
            time.sleep(RECOVERY_OUTAGE_S)
        finally:
            b.sandbox_call("DELETE", "moonshot", "_faults")
        recovered = time.perf_counter()
        left = set(ids)
        deadline = recovered + 120
        while left:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{len(left)} pending files not placed within 120 s")
            for file_id in sorted(left):
                got = b.client.get(f"{files_url}/{file_id}", headers=auth, timeout=10)
                if got.status_code == 200 and got.json().get("status") == "processed":
                    left.discard(file_id)
            if left:
                time.sleep(0.05)
        recovery = time.perf_counter() - recovered
        placed = b.sandbox_call("GET", "moonshot", "_stats")["files"]
    finally:
        procs.stop(gateway)
        b.reset("moonshot")
        b.reset("zai")
    med = statistics.median(fallback)
    b.report.add(
        f"auto upload, moonshot hung -> answered by zai, {CSV_SIZE / MiB:g} MiB (s)",
        f"{med:.2f}",
        f"{RESILIENCE_FIRST_BYTE_S:g} first-byte",
        f"{med / RESILIENCE_FIRST_BYTE_S:.2f}",
        f"<= {HUNG_FALLBACK_GOAL_S:g} s",
        verdict(med <= HUNG_FALLBACK_GOAL_S),
    )
    b.report.add(
        f"recovery: moonshot back -> {files} pending files processed (s)",
        f"{recovery:.2f}",
        f"{RESILIENCE_BREAKER_RESET_S:g} breaker reset",
        "-",
        f"<= {RECOVERY_GOAL_S:g} s",
        verdict(recovery <= RECOVERY_GOAL_S),
    )
    b.report.notes.append(
        f"resilience: a second gateway with FILEGATE_PROVIDER_FIRST_BYTE_TIMEOUT="
        f"{RESILIENCE_FIRST_BYTE_S:g} and FILEGATE_BREAKER_RESET_SECONDS="
        f"{RESILIENCE_BREAKER_RESET_S:g} (the production defaults); hung fallback runs (s): "
        f"{' '.join(f'{t:.2f}' for t in fallback)}, moonshot saw {hung_calls} upload calls; "
        f"recovery: {files} provider=moonshot uploads answered 202 while it answered 503, the "
        f"fault held {RECOVERY_OUTAGE_S:g} s more, then cleared; moonshot then held {placed} "
        f"files; other processes used {b.foreign_since(mark)} meanwhile"
    )
    print(f"resilience: hung fallback {med:.2f} s  recovery {recovery:.2f} s", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# 8: authentication overhead


def auth_phase(b: Bench, *, file_id: str, requests: int, blocks: int = 10, warm: int = 200) -> None:
    from bench.server import NOAUTH_PREFIX

    jwt_token = make_jwt(tenant=b.tenant, scope="files:read")
    path = f"/v1/files/{file_id}"
    conn = RawConnection(b.gateway.base_url)
    variants = {
        "noauth": conn.request(NOAUTH_PREFIX + path, {}),
        "key": conn.request(path, {"Authorization": f"Bearer {b.token}"}),
        "jwt": conn.request(path, {"Authorization": f"Bearer {jwt_token}"}),
    }
    mark = b.foreign_mark()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    block_medians: dict[str, list[float]] = {name: [] for name in variants}
    try:
        bodies = {}
        for name, raw in variants.items():
            status, body = conn.get(raw)
            if status != 200:
                raise RuntimeError(f"auth {name}: GET -> {status}: {body[:300]!r}")
            bodies[name] = json.loads(body)
        if not bodies["noauth"] == bodies["key"] == bodies["jwt"]:
            raise RuntimeError(f"the three retrieves differ: {bodies}")
        for _ in range(warm):
            for raw in variants.values():
                conn.get(raw)
        per = max(1, requests // blocks)
        names = list(variants)
        perf = time.perf_counter
        with profiled(b.client, b.gateway, "auth", b.profile):
            for blk in range(blocks):
                order = names[blk % len(names) :] + names[: blk % len(names)]
                for name in order:
                    raw = variants[name]
                    block: list[float] = []
                    for _ in range(per):
                        t0 = perf()
                        status, _body = conn.get(raw)
                        block.append(perf() - t0)
                        if status != 200:
                            raise RuntimeError(f"auth {name}: GET -> {status}")
                    samples[name] += block
                    block_medians[name].append(statistics.median(block))
    finally:
        conn.close()
    med = {name: statistics.median(ts) * 1e3 for name, ts in samples.items()}
    for name, label in (("key", "API key"), ("jwt", "JWT HS256")):
        delta = med[name] - med["noauth"]
        b.report.add(
            f"auth overhead, {label}: GET /v1/files/{{id}} (ms)",
            f"{med[name]:.3f}",
            f"{med['noauth']:.3f} no auth",
            f"{delta:+.3f} ms",
            f"<= +{AUTH_DELTA_MAX_MS:g} ms",
            verdict(delta <= AUTH_DELTA_MAX_MS),
        )
    blk_delta = {
        name: statistics.median(
            k - n for k, n in zip(block_medians[name], block_medians["noauth"], strict=True)
        )
        * 1e3
        for name in ("key", "jwt")
    }
    p90 = {name: statistics.quantiles(ts, n=10)[-1] * 1e3 for name, ts in samples.items()}
    b.report.notes.append(
        f"auth: {per * blocks} sequential GETs per variant ({blocks} interleaved blocks of "
        f"{per}, rotating order, after {warm} warm-ups each) over one keep-alive connection; "
        f"medians ms: noauth {med['noauth']:.3f}, key {med['key']:.3f}, jwt {med['jwt']:.3f}; "
        f"p90 ms: noauth {p90['noauth']:.3f}, key {p90['key']:.3f}, jwt {p90['jwt']:.3f}; "
        f"median of per-block deltas: key {blk_delta['key']:+.3f}, jwt {blk_delta['jwt']:+.3f}; "
        f"other processes used {b.foreign_since(mark)} meanwhile"
    )
    print(
        "auth: " + "  ".join(f"{n} {m:.3f} ms" for n, m in med.items()),
        file=sys.stderr,
    )


# --------------------------------------------------------------------------------------------
# the run


@contextlib.contextmanager
def profiled(client: httpx.Client, gateway: Server, name: str, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    client.post(gateway.base_url + "/bench/profile/start").raise_for_status()
    try:
        yield
    finally:
        client.post(gateway.base_url + "/bench/profile/stop", params={"name": name})


def read_keys(path: Path) -> dict[str, str]:
    """The gateway's key file: JSON from bench.server (a bare token from an older copy)."""
    text = path.read_text().strip()
    if text.startswith("{"):
        keys: dict[str, str] = json.loads(text)
        return keys
    return {"token": text}


def core_phases(
    args: argparse.Namespace,
    work: Path,
    gateway: Server,
    sandbox: Server,
    token: str,
    report: Report,
) -> tuple[str, Row]:
    """Rows 1-4 (big uploads, dedup, memory, request rate); returns a file id, the context row."""
    size: int = args.size
    reps: int = args.reps
    profile_dir = RESULTS / "profile"
    gw_auth = {"Authorization": f"Bearer {token}"}
    direct_auth = {"Authorization": f"Bearer {DIRECT_KEY}"}
    gw_files = gateway.base_url + "/v1/files"
    direct_files = sandbox.base_url + "/sandbox/moonshot/v1/files"
    reset_url = sandbox.base_url + "/sandbox/moonshot/_reset"
    gw_ps = gateway.ps

    # ---- payloads (written once; streamed from disk by httpx) ----------------------------
    t0 = time.perf_counter()
    payloads = work / "payloads"
    payloads.mkdir()
    base = payloads / "base.bin"
    write_random(base, size)
    gw_payloads = [variant(base, payloads / f"gw-{i}.bin") for i in range(reps)]
    conc_payloads = [variant(base, payloads / f"conc-{i}.bin") for i in range(args.concurrent)]
    warm = variant(base, payloads / "warm.bin")
    os.sync()  # no writeback of the payloads may land inside a timed run
    print(f"payloads written in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    with httpx.Client(timeout=UPLOAD_TIMEOUT) as client:

        def reset() -> None:
            client.post(reset_url).raise_for_status()

        # ---- warm-up: connections, imports, first SQLite connects, first big buffers ----
        reset()
        upload(client, direct_files, warm, direct_auth)
        reset()
        warm_file = upload(client, gw_files, warm, gw_auth)
        file_id = warm_file["id"]
        client.get(f"{gw_files}/{file_id}", headers=gw_auth).raise_for_status()

        # ---- 1 + 2: sequential uploads, interleaved so drift hits all three alike --------
        direct_t: list[float] = []
        gw_t: list[float] = []
        dedup_t: list[float] = []
        gw_ids: list[str] = []
        for i in range(reps):
            reset()
            os.sync()  # each timed run starts without the previous run's dirty pages
            t, body = timed(partial(upload, client, direct_files, base, direct_auth))
            if body.get("bytes") != size:
                raise RuntimeError(f"sandbox stored {body.get('bytes')} bytes, not {size}")
            direct_t.append(t)

            reset()
            os.sync()
            with profiled(client, gateway, f"upload-{i}", args.profile):
                t, body = timed(partial(upload, client, gw_files, gw_payloads[i], gw_auth))
            if body.get("status") != "processed" or body.get("bytes") != size:
                raise RuntimeError(f"gateway upload not processed: {body}")
            gw_t.append(t)
            gw_ids.append(body["id"])

            reset()
            os.sync()
            with profiled(client, gateway, f"dedup-{i}", args.profile):
                t, body = timed(partial(upload, client, gw_files, gw_payloads[0], gw_auth))
            if body.get("id") != gw_ids[0]:
                raise RuntimeError(f"dedup expected {gw_ids[0]}, got {body.get('id')}")
            dedup_t.append(t)
            print(
                f"rep {i + 1}/{reps}: direct {direct_t[-1]:.2f}s  gateway {gw_t[-1]:.2f}s  "
                f"dedup {dedup_t[-1]:.2f}s",
                file=sys.stderr,
            )

        direct_med = statistics.median(direct_t)
        gw_med = statistics.median(gw_t)
        dedup_med = statistics.median(dedup_t)
        up_ratio = gw_med / direct_med
        dd_ratio = dedup_med / direct_med
        mib = size / MiB
        report.add(
            f"upload {mib:g} MiB via gateway (s)",
            f"{gw_med:.3f}",
            f"{direct_med:.3f} direct",
            f"{up_ratio:.2f}",
            f"<= {UPLOAD_RATIO_MAX}",
            verdict(up_ratio <= UPLOAD_RATIO_MAX),
        )
        report.add(
            f"dedup hit {mib:g} MiB (s)",
            f"{dedup_med:.3f}",
            f"{direct_med:.3f} direct",
            f"{dd_ratio:.2f}",
            f"<= {DEDUP_RATIO_MAX}",
            verdict(dd_ratio <= DEDUP_RATIO_MAX),
        )

        # ---- 3: memory during concurrent uploads ------------------------------------------
        reset()
        os.sync()
        time.sleep(1.0)
        idle_samples = []
        for _ in range(5):
            idle_samples.append(tree_rss(gw_ps))
            time.sleep(0.05)
        idle = statistics.median(idle_samples)
        sampler = RssSampler(gw_ps)
        sampler.start()

        def one(path: Path) -> dict[str, Any]:
            with httpx.Client(timeout=UPLOAD_TIMEOUT) as c:
                return upload(c, gw_files, path, gw_auth)

        with profiled(client, gateway, "concurrent", args.profile):
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(conc_payloads)) as pool:
                bodies = list(pool.map(one, conc_payloads))
            conc_elapsed = time.perf_counter() - start
        peak = sampler.stop()
        if any(b.get("status") != "processed" for b in bodies):
            raise RuntimeError(f"a concurrent upload was not processed: {bodies}")
        delta_mib = (peak - idle) / MiB
        report.add(
            f"peak RSS over idle, {len(conc_payloads)} x {mib:g} MiB concurrent (MiB)",
            f"{delta_mib:.1f}",
            f"{idle / MiB:.1f} idle",
            "-",
            f"<= {RSS_DELTA_MAX_MIB:g}",
            verdict(delta_mib <= RSS_DELTA_MAX_MIB),
        )
        report.notes.append(
            f"RSS: idle {idle / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB "
            f"({sampler.samples} samples every {SAMPLE_SECONDS * 1000:.0f} ms, process + children)"
        )
        reset()

        # ---- 4: request rate, retrieve vs bare --------------------------------------------
        retrieve_url = f"{gw_files}/{gw_ids[0]}"
        bare_url = gateway.base_url + "/bench/bare"
        for client_kind in ("httpx", "raw"):
            bare: list[LoadResult] = []
            retr: list[LoadResult] = []
            for i in range(reps):
                for name, url, tok, sink in (
                    ("bare", bare_url, None, bare),
                    ("retrieve", retrieve_url, token, retr),
                ):
                    with profiled(client, gateway, f"rps-{client_kind}-{name}-{i}", args.profile):
                        res = drive_load(
                            url,
                            token=tok,
                            requests=args.rps_requests,
                            concurrency=args.rps_concurrency,
                            procs=args.load_procs,
                            server=gw_ps,
                            client=client_kind,
                        )
                    if res.errors:
                        raise RuntimeError(f"{res.errors} non-200 responses from {url}")
                    sink.append(res)
                    print(
                        f"rps {client_kind} {name} {i + 1}/{reps}: {res.rps:.0f}/s  gateway CPU "
                        f"{res.server_cpu * 100:.0f}%  load CPU {res.driver_cpu * 100:.0f}%",
                        file=sys.stderr,
                    )
            b, r = median_run(bare), median_run(retr)
            rps_ratio = r.rps / b.rps
            if client_kind == "httpx":
                report.add(
                    "GET /v1/files/{id} (req/s, httpx client)",
                    f"{r.rps:.0f}",
                    f"{b.rps:.0f} bare",
                    f"{rps_ratio:.2f}",
                    f">= {RPS_RATIO_MIN}",
                    verdict(rps_ratio >= RPS_RATIO_MIN),
                )
            else:
                report.add(
                    "GET /v1/files/{id} (req/s, raw-socket client)",
                    f"{r.rps:.0f}",
                    f"{b.rps:.0f} bare",
                    f"{rps_ratio:.2f}",
                    f"(>= {RPS_RATIO_MIN})",
                    "info",
                )
            bound = (
                "bare is gateway-bound"
                if b.server_cpu >= 0.8
                else "bare is NOT gateway-bound: the load generator or latency limits it"
            )
            report.notes.append(
                f"req/s ({client_kind}): {args.rps_requests} requests x {reps} runs each, "
                f"{args.rps_concurrency} keep-alive connections x {args.load_procs} load "
                f"process(es); gateway CPU bare {b.server_cpu * 100:.0f}% / retrieve "
                f"{r.server_cpu * 100:.0f}%, load CPU bare {b.driver_cpu * 100:.0f}% / retrieve "
                f"{r.driver_cpu * 100:.0f}% ({os.cpu_count()} CPUs; {bound}); "
                f"gateway CPU per request: bare {b.server_cpu / b.rps * 1e3:.2f} ms, "
                f"retrieve {r.server_cpu / r.rps * 1e3:.2f} ms"
            )

    # ---- context: absolute throughput (added last by run()) --------------------------------
    context = Row(
        "throughput, context (MB/s, 1 MB = 10^6 B)",
        f"gw {mbps(size, gw_med):.0f} | dedup {mbps(size, dedup_med):.0f} | "
        f"{len(conc_payloads)}x concurrent {mbps(size * len(conc_payloads), conc_elapsed):.0f}",
        f"direct {mbps(size, direct_med):.0f}",
        "-",
        "-",
        "info",
    )
    report.notes.insert(
        0,
        "upload times (s): direct "
        + " ".join(f"{t:.2f}" for t in direct_t)
        + " | gateway "
        + " ".join(f"{t:.2f}" for t in gw_t)
        + " | dedup "
        + " ".join(f"{t:.2f}" for t in dedup_t)
        + f" | {len(conc_payloads)} concurrent: {conc_elapsed:.2f} total",
    )
    if args.profile:
        report.notes.append(f"profiles: {profile_dir}/*.txt (cProfile, gateway event-loop thread)")
    return gw_ids[0], context


def run(
    args: argparse.Namespace,
    procs: Processes,
    work: Path,
    report: Report,
    foreign: ForeignLoad | None = None,
) -> None:
    profile_dir = RESULTS / "profile"

    # ---- servers -------------------------------------------------------------------------
    sandbox_port, gateway_port = free_port(), free_port()
    filegate_cli = Path(sys.executable).with_name("filegate")
    if filegate_cli.exists():
        sandbox_argv = [str(filegate_cli), "sandbox", "--port", str(sandbox_port)]
    else:
        sandbox_argv = [sys.executable, "-m", "bench.sandbox_server", "--port", str(sandbox_port)]
    sandbox = procs.start(
        "sandbox",
        sandbox_argv,
        log=work / "sandbox.log",
        base_url=f"http://127.0.0.1:{sandbox_port}",
        env=child_env(),
    )
    key_file = work / "api-key"
    gateway_env = child_env(
        {"BENCH_PROFILE": "1", "BENCH_PROFILE_DIR": str(profile_dir)} if args.profile else {}
    )
    gateway = procs.start(
        "gateway",
        [
            *(sys.executable, "-m", GATEWAY_MODULE, "--port", str(gateway_port)),
            *("--data-dir", str(work / "gateway-data")),
            *("--sandbox-url", f"{sandbox.base_url}/sandbox"),
            *("--key-file", str(key_file)),
        ],
        log=work / "gateway.log",
        base_url=f"http://127.0.0.1:{gateway_port}",
        env=gateway_env,
    )
    wait_ready(sandbox, "/sandbox/moonshot/_stats")
    wait_ready(gateway, "/bench/bare")
    keys = read_keys(key_file)
    phases = set(args.phases)

    file_id: str | None = None
    context: Row | None = None
    if "core" in phases:
        file_id, context = core_phases(args, work, gateway, sandbox, keys["token"], report)

    with httpx.Client(timeout=UPLOAD_TIMEOUT) as client:
        b = Bench(
            client=client,
            gateway=gateway,
            sandbox=sandbox,
            token=keys["token"],
            admin_token=keys.get("admin_token"),
            tenant=keys.get("tenant", "bench"),
            report=report,
            profile=args.profile,
            csv=csv_base(),
            foreign=foreign,
        )
        client.get(gateway.base_url + "/bench/bare").raise_for_status()
        if "fallback" in phases:
            fallback_phase(b, pairs=args.fallback_pairs)
        if "hang" in phases:
            hang_phase(b, runs=args.hang_runs, k=args.hang_concurrency)
        if "resilience" in phases:
            resilience_phase(b, procs, work, files=args.recovery_files)
        if "auth" in phases:
            if file_id is None:
                b.reset("zai")
                file_id = b.small_upload("zai")["id"]
            auth_phase(b, file_id=file_id, requests=args.auth_requests)
        b.reset("moonshot")
        b.reset("zai")

    if context is not None:
        report.rows.append(context)
    if phases != set(PHASES):
        report.notes.append(f"phases run: {', '.join(p for p in PHASES if p in phases)} (--phases)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs per timing (median taken)")
    parser.add_argument("--size", type=int, default=SIZE, help="upload size in bytes")
    parser.add_argument("--concurrent", type=int, default=8, help="concurrent uploads (memory)")
    parser.add_argument("--rps-requests", type=int, default=2000)
    parser.add_argument("--rps-concurrency", type=int, default=8)
    parser.add_argument("--load-procs", type=int, default=1, help="load-generator processes")
    parser.add_argument("--fallback-pairs", type=int, default=30, help="auto/zai upload pairs")
    parser.add_argument("--hang-runs", type=int, default=40, help="zai uploads per condition")
    parser.add_argument("--hang-concurrency", type=int, default=4, help="hung moonshot uploads")
    parser.add_argument("--recovery-files", type=int, default=10, help="pending files")
    parser.add_argument("--auth-requests", type=int, default=1000, help="GETs per auth variant")
    parser.add_argument(
        "--phases",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=list(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the gateway per phase")
    args = parser.parse_args(argv)
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {', '.join(PHASES)}")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up on `kill` too
    report = Report()
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="filegate-bench-"))
    started = time.perf_counter()
    error: str | None = None
    foreign = ForeignLoad()
    foreign.start()
    try:
        run(args, procs, work, report, foreign)
    except KeyboardInterrupt:
        error = "interrupted"
    except Exception as exc:  # a report, not a test: say what broke and still exit 0
        error = f"{type(exc).__name__}: {exc}"
        for server in procs.servers:
            error += f"\n--- {server.name} log tail ---\n{server.tail()}"
    finally:
        foreign.stop()
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    report.notes.append(foreign.summary())

    header = (
        f"filegate bench  {time.strftime('%Y-%m-%d %H:%M:%S')}  python {sys.version.split()[0]}  "
        f"{os.cpu_count()} CPUs  {time.perf_counter() - started:.0f}s"
    )
    text = header + "\n\n" + report.render()
    if error:
        text += f"\n\nBENCH DID NOT COMPLETE: {error}"
    print(text)
    with contextlib.suppress(OSError):
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "latest.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
