"""15-16: a 100 MiB download through the gateway vs `python -m http.server` serving the same
file; a dedup hit with a declared digest (Repr-Digest, purpose in the query, Expect:
100-continue: the body is never sent) vs the same bytes uploaded straight to the sandbox."""

from __future__ import annotations

import base64
import hashlib
import socket
import statistics
import sys
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from bench.context import Bench
from bench.measure import timed, tree_cpu
from bench.payloads import DIRECT_KEY, FILENAME, PURPOSE, SIZE, MiB, upload, write_random
from bench.processes import Processes, child_env, free_port, wait_ready
from bench.report import verdict

SPEED_GOAL = 0.8  # of http.server's
HIT_RATIO_GOAL = 0.05  # of a direct upload's time


def _download(url: str, headers: dict[str, str]) -> int:
    """GET `url` over a raw socket read into one reused buffer, so the client costs next to
    nothing and the server's pace is measured; the body's size."""
    parts = urlsplit(url)
    lines = [f"GET {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    buffer = bytearray(MiB)
    view = memoryview(buffer)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80)) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while b"\r\n\r\n" not in received:
            n = sock.recv_into(view)
            if not n:
                raise RuntimeError(f"no answer from {url}")
            received += bytes(view[:n])
        head, _, start = received.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
            raise RuntimeError(f"GET {url}: {head[:200]!r}")
        got = len(start)
        while n := sock.recv_into(view):
            got += n
    return got


def _declared_hit(base_url: str, token: str, sha256: bytes, size: int) -> bytes:
    """POST only the head (Expect: 100-continue, Repr-Digest): the final answer's bytes."""
    parts = urlsplit(base_url)
    digest = base64.b64encode(sha256).decode()
    head = (
        f"POST /v1/files?purpose={PURPOSE} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: multipart/form-data; boundary=bench\r\n"
        f"Content-Length: {size + 300}\r\nExpect: 100-continue\r\n"
        f"Repr-Digest: sha-256=:{digest}:\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80)) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):  # the gateway closes after a body-less answer
            answer += chunk
    return answer


def download_phase(b: Bench, procs: Processes, work: Path, *, runs: int) -> None:
    folder = work / "download"
    folder.mkdir()
    path = folder / FILENAME
    write_random(path, SIZE)
    sha256 = hashlib.sha256(path.read_bytes()).digest()
    port = free_port()
    static = procs.start(
        "http.server",
        [
            *(sys.executable, "-m", "http.server", str(port)),
            *("--bind", "127.0.0.1", "--directory", str(folder)),
        ],
        log=work / "http-server.log",
        base_url=f"http://127.0.0.1:{port}",
        env={**child_env(), "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_ready(static, "/")
        b.reset("moonshot")
        body = upload(b.client, b.gw_files, path, b.auth)
        gateway_url = f"{b.gw_files}/{body['id']}/content"
        static_url = f"{static.base_url}/{FILENAME}"
        times: dict[str, list[float]] = {"gateway": [], "static": []}
        cpu: dict[str, list[float]] = {"gateway": [], "static": []}
        for i in range(runs + 1):  # the first pair warms the page cache and is not counted
            for name, server, url, headers in (
                ("gateway", b.gateway, gateway_url, b.auth),
                ("static", static, static_url, {}),
            ):
                before = tree_cpu(server.ps)
                seconds, got = timed(partial(_download, url, headers))
                if got != SIZE:
                    raise RuntimeError(f"{name} sent {got} of {SIZE} bytes")
                if i:
                    times[name].append(seconds)
                    cpu[name].append(tree_cpu(server.ps) - before)
        gateway_s = statistics.median(times["gateway"])
        static_s = statistics.median(times["static"])
        speed = static_s / gateway_s
        b.report.add(
            f"download {SIZE // MiB} MiB via gateway (s, median of {runs})",
            f"{gateway_s:.3f}",
            f"{static_s:.3f} http.server",
            f"{speed:.2f}x speed",
            f">= {SPEED_GOAL:g}x",
            verdict(speed >= SPEED_GOAL),
        )
        b.report.notes.append(
            f"download server CPU per {SIZE // MiB} MiB (median): gateway "
            f"{statistics.median(cpu['gateway']):.3f}s, http.server "
            f"{statistics.median(cpu['static']):.3f}s"
        )

        direct_files = f"{b.sandbox.base_url}/sandbox/moonshot/v1/files"
        direct_auth = {"Authorization": f"Bearer {DIRECT_KEY}"}
        direct: list[float] = []
        hits: list[float] = []
        for _ in range(runs):
            b.reset("moonshot")
            seconds, _ = timed(partial(upload, b.client, direct_files, path, direct_auth))
            direct.append(seconds)
            hit = partial(_declared_hit, b.gateway.base_url, b.token, sha256, SIZE)
            seconds, answer = timed(hit)
            if not answer.startswith(b"HTTP/1.1 200") or body["id"].encode() not in answer:
                raise RuntimeError(f"the declared hit was not answered: {answer[:300]!r}")
            hits.append(seconds)
        direct_s, hit_s = statistics.median(direct), statistics.median(hits)
        ratio = hit_s / direct_s
        b.report.add(
            f"dedup hit {SIZE // MiB} MiB, declared digest (s, median of {runs})",
            f"{hit_s:.4f}",
            f"{direct_s:.3f} direct",
            f"{ratio:.3f}x",
            f"<= {HIT_RATIO_GOAL:g}x",
            verdict(ratio <= HIT_RATIO_GOAL),
        )
    finally:
        procs.stop(static)
        path.unlink(missing_ok=True)
