"""A small keep-alive HTTP load generator, run as a subprocess by the bench driver.

    python -m bench.load --url URL --requests N --concurrency C --warmup W [--client raw]
        [--upload-bytes B --upload-provider P]
    (the API key, if any, comes from BENCH_TOKEN)

Protocol on stdio: after warming up (W requests, not counted) it prints `ready`, waits for
one line on stdin, runs N GETs spread over C concurrent tasks sharing one httpx.AsyncClient
(C keep-alive connections), then prints one JSON line:
{"start": perf_counter, "end": perf_counter, "ok": n, "errors": n, "cpu": seconds}.
time.perf_counter is CLOCK_MONOTONIC on Linux, so several processes' windows can be merged.
With --upload-bytes each request is instead a POST of a distinct B-byte CSV (a fresh first
line, so no dedup) with purpose file-extract and provider P, counted ok when answered 200.
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

from bench.payloads import CSV_CONTENT_TYPE, CSV_FILENAME, PURPOSE, csv_base, csv_variant
from bench.rawhttp import RawClient


async def _raw_worker(client: RawClient, raw: bytes, n: int, counts: list[int]) -> None:
    for _ in range(n):
        status, _body = await client.get(raw)
        if status == 200:
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


async def _upload_worker(
    client: httpx.AsyncClient, url: str, n: int, counts: list[int], upload: Upload
) -> None:
    for _ in range(n):
        response = await client.post(
            url,
            data={"purpose": PURPOSE, "provider": upload.provider},
            files={"file": (CSV_FILENAME, csv_variant(upload.base), CSV_CONTENT_TYPE)},
        )
        await response.aread()
        if response.status_code == 200:
            counts[0] += 1
        else:
            counts[1] += 1


class Upload:
    """What each request uploads: a distinct CSV of len(base) bytes to `provider`."""

    def __init__(self, size: int, provider: str) -> None:
        self.base = csv_base(size)
        self.provider = provider


async def _run(
    url: str,
    n: int,
    concurrency: int,
    counts: list[int],
    client: httpx.AsyncClient | RawClient,
    headers: dict[str, str],
    upload: Upload | None = None,
) -> None:
    share, extra = divmod(n, concurrency)
    sizes = [share + (1 if i < extra else 0) for i in range(concurrency)]
    if upload is not None:
        assert isinstance(client, httpx.AsyncClient)
        await asyncio.gather(*(_upload_worker(client, url, k, counts, upload) for k in sizes))
    elif isinstance(client, RawClient):
        parts = urlsplit(url)
        raw = client.request(parts.path + (f"?{parts.query}" if parts.query else ""), headers)
        await asyncio.gather(*(_raw_worker(client, raw, k, counts) for k in sizes))
    else:
        await asyncio.gather(*(_worker(client, url, k, counts) for k in sizes))


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    client: httpx.AsyncClient | RawClient
    upload = Upload(args.upload_bytes, args.upload_provider) if args.upload_bytes else None
    if args.client == "raw" and upload is None:
        client = RawClient(args.url)
    else:
        limits = httpx.Limits(
            max_connections=args.concurrency, max_keepalive_connections=args.concurrency
        )
        client = httpx.AsyncClient(headers=headers, limits=limits, timeout=60)
    try:
        warm = [0, 0]
        await _run(
            args.url,
            max(args.warmup, args.concurrency),
            args.concurrency,
            warm,
            client,
            headers,
            upload,
        )
        if warm[1]:
            raise SystemExit(f"warm-up got {warm[1]} non-200 responses from {args.url}")
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)
        counts = [0, 0]
        cpu0 = time.process_time()
        start = time.perf_counter()
        await _run(args.url, args.requests, args.concurrency, counts, client, headers, upload)
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
    parser.add_argument("--upload-bytes", type=int, default=0, help="POST uploads of this size")
    parser.add_argument("--upload-provider", default="moonshot")
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
