"""A small keep-alive HTTP load generator, run as a subprocess by the bench driver.

    python -m bench.load --url URL --requests N --concurrency C --warmup W [--client raw]
    (the API key, if any, comes from BENCH_TOKEN)

Protocol on stdio: after warming up (W requests, not counted) it prints `ready`, waits for
one line on stdin, runs N GETs spread over C concurrent tasks sharing one httpx.AsyncClient
(C keep-alive connections), then prints one JSON line:
{"start": perf_counter, "end": perf_counter, "ok": n, "errors": n, "cpu": seconds}.
time.perf_counter is CLOCK_MONOTONIC on Linux, so several processes' windows can be merged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from urllib.parse import urlsplit

import httpx


class RawClient:
    """Minimal HTTP/1.1 keep-alive GETs over asyncio streams: far less client CPU per request
    than httpx, so that a fast endpoint is measured by the server's capacity, not ours."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Accept: */*"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self) -> int:
        reader, writer = (
            self.conns.pop() if self.conns else await asyncio.open_connection(self.host, self.port)
        )
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by the raw client")
        if length:
            await reader.readexactly(length)
        self.conns.append((reader, writer))
        return status

    async def aclose(self) -> None:
        for _, writer in self.conns:
            writer.close()
        self.conns.clear()


async def _raw_worker(client: RawClient, n: int, counts: list[int]) -> None:
    for _ in range(n):
        if await client.get() == 200:
            counts[0] += 1
        else:
            counts[1] += 1


async def _worker(client: httpx.AsyncClient, url: str, n: int, counts: list[int]) -> None:
    for _ in range(n):
        response = await client.get(url)
        await response.aread()
        if response.status_code == 200:
            counts[0] += 1
        else:
            counts[1] += 1


async def _run(
    url: str, n: int, concurrency: int, counts: list[int], client: httpx.AsyncClient | RawClient
) -> None:
    share, extra = divmod(n, concurrency)
    sizes = [share + (1 if i < extra else 0) for i in range(concurrency)]
    if isinstance(client, RawClient):
        await asyncio.gather(*(_raw_worker(client, k, counts) for k in sizes))
    else:
        await asyncio.gather(*(_worker(client, url, k, counts) for k in sizes))


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    client: httpx.AsyncClient | RawClient
    if args.client == "raw":
        client = RawClient(args.url, headers)
    else:
        limits = httpx.Limits(
            max_connections=args.concurrency, max_keepalive_connections=args.concurrency
        )
        client = httpx.AsyncClient(headers=headers, limits=limits, timeout=60)
    try:
        warm = [0, 0]
        await _run(args.url, max(args.warmup, args.concurrency), args.concurrency, warm, client)
        if warm[1]:
            raise SystemExit(f"warm-up got {warm[1]} non-200 responses from {args.url}")
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        counts = [0, 0]
        cpu0 = time.process_time()
        start = time.perf_counter()
        await _run(args.url, args.requests, args.concurrency, counts, client)
        end = time.perf_counter()
        cpu = time.process_time() - cpu0
    finally:
        await client.aclose()
    return {"start": start, "end": end, "ok": counts[0], "errors": counts[1], "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", default=os.environ.get("BENCH_TOKEN"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--client", choices=("httpx", "raw"), default="httpx")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main_async(args))
    else:
        result = uvloop.run(main_async(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
