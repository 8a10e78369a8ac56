"""Middleware over a real connection (app/api/middleware.py): an answer that spares an
`Expect: 100-continue` client its body closes the connection; one that read it keeps it."""

from __future__ import annotations

import asyncio

from app.core.config import Settings
from tests.api.test_digest import multipart, read_answer, request_head
from tests.api.test_files import TEXT
from tests.conftest import Gateway
from tests.support.servers import serve_started_app


async def test_a_refusal_before_the_body_closes_an_expect_continue_connection(
    gateway: Gateway, settings: Settings
) -> None:
    async with serve_started_app(gateway.app, settings) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = request_head(
                "/v1/files", "fg_aaaaaaaaaaaa_" + "x" * 43, 10 * 1024 * 1024, Expect="100-continue"
            )
            writer.write(head)
            await writer.drain()
            status, headers, _ = await read_answer(reader)
            assert status.startswith(b"HTTP/1.1 401"), status
            assert headers["connection"] == "close"
            assert await reader.read() == b""
        finally:
            writer.close()


async def test_an_expect_continue_upload_that_is_read_keeps_its_connection(
    gateway: Gateway, settings: Settings
) -> None:
    token = await gateway.key()
    head, tail = multipart(TEXT, fields={"purpose": "file-extract"})
    async with serve_started_app(gateway.app, settings) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            length = len(head) + len(tail)
            writer.write(request_head("/v1/files", token, length, Expect="100-continue"))
            await writer.drain()
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=20)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            writer.write(head + tail)
            await writer.drain()
            status, headers, _ = await read_answer(reader)
            assert status.startswith(b"HTTP/1.1 200"), status
            assert "close" not in headers.get("connection", "")
            writer.write(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
            await writer.drain()
            status, _, _ = await read_answer(reader)
            assert status.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()
