"""Minimal HTTP/1.1 keep-alive GETs over asyncio streams.

Far less client CPU per request than httpx, so that a fast endpoint is measured by the
server's capacity (bench.load) and per-request latency differences are the server's (auth).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class RawClient:
    """Prepared GET requests sent over a small pool of keep-alive connections."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.netloc = parts.netloc
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def request(self, path: str, headers: dict[str, str]) -> bytes:
        """The raw bytes of a GET for `path`, built once and sent many times."""
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.netloc}", "Accept: */*"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def get(self, raw_request: bytes) -> tuple[int, bytes]:
        """Send a prepared request; its status and body."""
        # asyncio sets TCP_NODELAY on the connections it opens.
        reader, writer = (
            self.conns.pop() if self.conns else await asyncio.open_connection(self.host, self.port)
        )
        writer.write(raw_request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length: int | None = None
        keep = True
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by the raw client")
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
        if length is None:
            raise RuntimeError("response without content-length")
        body = await reader.readexactly(length) if length else b""
        if keep:
            self.conns.append((reader, writer))
        else:
            writer.close()
        return status, body

    async def aclose(self) -> None:
        for _, writer in self.conns:
            writer.close()
        self.conns.clear()
