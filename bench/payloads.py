"""Payloads and the uploads that send them: big random files and small distinct CSVs."""

from __future__ import annotations

import os
import random
import secrets
import shutil
from pathlib import Path
from typing import Any

import httpx

MiB = 1024 * 1024
SIZE = 100 * MiB  # 104857600 bytes
CHUNK = MiB
PURPOSE = "file-extract"
FILENAME = "big.txt"
CONTENT_TYPE = "text/plain"
DIRECT_KEY = "sk-x"
UPLOAD_TIMEOUT = httpx.Timeout(300.0, connect=10.0)

# The small-upload rows (fallback, hanging provider): Z.ai file-extract takes .csv up to 50 MiB.
CSV_SIZE = MiB
CSV_FILENAME = "bench.csv"
CSV_CONTENT_TYPE = "text/csv"
CSV_HEAD = 37  # the first line, "key,<32 hex>\n", differs per upload (distinct sha256: no dedup)
SMALL_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


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
