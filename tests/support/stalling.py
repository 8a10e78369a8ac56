"""A loopback HTTP/1.1 server that stalls or throttles on purpose, at the byte level."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]

FILE_OBJECT = {
    "id": "stalled0000000000001",
    "object": "file",
    "bytes": 1,
    "created_at": 1,
    "filename": "a.txt",
    "purpose": "file-extract",
    "status": "ok",
    "status_details": "",
}
# Small server buffers, so a server that stops reading stops the client's writes soon.
_RCVBUF = 64 * 1024


async def _forever() -> None:
    await asyncio.Event().wait()


def head(length: int, status: int = 200) -> bytes:
    return (
        f"HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n"
    ).encode()


async def stop_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    """Take the request headers, then never read the body (nor answer)."""
    await _forever()


async def stall_mid_response(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int
) -> None:
    """Read the whole request, send the headers and a few body bytes, then nothing."""
    await reader.readexactly(length)
    writer.write(head(1000) + b'{"id":')
    await writer.drain()
    await _forever()


def read_slowly(chunk: int, pause: float) -> Behaviour:
    """Read the body `chunk` bytes at a time with `pause` seconds between, then answer."""

    async def behave(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int
    ) -> None:
        left = length
        while left:
            data = await reader.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            await asyncio.sleep(pause)
        body = json.dumps(FILE_OBJECT).encode()
        writer.write(head(len(body)) + body)
        await writer.drain()

    return behave


def trickle(payload: Any, pieces: int, pause: float) -> Behaviour:
    """Answer with `payload` as JSON, sent in `pieces` parts `pause` seconds apart."""

    async def behave(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int
    ) -> None:
        await reader.readexactly(length)
        body = json.dumps(payload).encode() + b" " * 64 * pieces
        step = -(-len(body) // pieces)
        writer.write(head(len(body)))
        for start in range(0, len(body), step):
            writer.write(body[start : start + step])
            await writer.drain()
            await asyncio.sleep(pause)

    return behave


@contextlib.asynccontextmanager
async def stalling_server(behaviour: Behaviour) -> AsyncIterator[str]:
    """Serve `behaviour` on 127.0.0.1 in this event loop; yields the base URL."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in raw.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await behaviour(reader, writer, length)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # the server is closing: this handler's task ends here, quietly
        finally:
            handlers.discard(task)
            writer.close()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(handle, sock=sock)
    port = sock.getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
