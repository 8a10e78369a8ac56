"""Pipelined placement (app/services/files/pipelined.py): the provider upload runs while the
client's body arrives, over real loopback HTTP to the gateway and from it to the sandbox.

A slow client sends all but the file's last piece and holds it: what the sandbox shows
meanwhile (`receiving`, its upload calls) proves the overlap without timing anything."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.jobs.worker import Worker
from app.models import Blob, File, FileStatus, ProviderCopy
from tests.api.test_digest import header_of, read_answer, request_head
from tests.api.test_files import count
from tests.conftest import Gateway
from tests.support.blobs import leftovers, read_blob
from tests.support.invariants import assert_registry_sound
from tests.support.servers import serve_started_app
from tests.support.waiting import wait_until

MiB = 1024 * 1024
SIZE = 4 * MiB
HELD = 256 * 1024  # what the client keeps back until the sandbox has shown what it saw
BOUNDARY = "pipelined-test-boundary"


def body(
    data: bytes, *, fields: dict[str, str], filename: str = "report.txt"
) -> tuple[bytes, bytes]:
    """A multipart body split before the file's last HELD bytes: (sent at once, held back)."""
    head = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()
    whole = head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    cut = len(whole) - HELD
    return whole[:cut], whole[cut:]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    json: dict[str, Any]


@dataclass
class SlowUpload:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    held: bytes

    async def finish(self) -> Answer:
        self.writer.write(self.held)
        await self.writer.drain()
        status, headers, raw = await read_answer(self.reader)
        return Answer(int(status.split()[1]), headers, json.loads(raw))

    def disconnect(self) -> None:
        self.writer.transport.abort()


@asynccontextmanager
async def slow_upload(
    gateway: Gateway,
    settings: Settings,
    token: str,
    data: bytes,
    *,
    fields: dict[str, str],
    filename: str = "report.txt",
    headers: dict[str, str] | None = None,
) -> AsyncIterator[SlowUpload]:
    """Everything but the held piece sent to the gateway on a loopback port."""
    sent, held = body(data, fields=fields, filename=filename)
    async with serve_started_app(gateway.app, settings) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = request_head("/v1/files", token, len(sent) + len(held), **(headers or {}))
            writer.write(head.replace(b"digest-test-boundary", BOUNDARY.encode()) + sent)
            await writer.drain()
            yield SlowUpload(reader, writer, held)
        finally:
            writer.close()


async def receiving(gateway: Gateway, provider: str) -> int:
    return int((await gateway.sandbox_stats(provider))["receiving"])


async def sending(gateway: Gateway, provider: str) -> bool:
    """Whether an upload's body is arriving at the sandbox right now."""
    return await receiving(gateway, provider) > 0


async def provider_files(gateway: Gateway, provider: str) -> int:
    return int((await gateway.sandbox_stats(provider))["files"])


def wasted(gateway: Gateway, provider: str, how: str) -> float:
    value = gateway.runtime.metrics.registry.get_sample_value(
        "filegate_wasted_provider_uploads_total", {"provider": provider, "how": how}
    )
    return value or 0.0


async def nothing_left(gateway: Gateway) -> None:
    """No row, no blob, no spool, and no provider upload still arriving or stored."""
    for provider in ("moonshot", "zai"):
        await wait_until(lambda p=provider: _idle(gateway, p), what=f"{provider} idle")  # type: ignore[misc]
        assert await provider_files(gateway, provider) == 0
    assert await count(gateway, File) == 0
    assert await count(gateway, Blob) == 0
    assert await leftovers(gateway.runtime.blob_store) == []


async def _idle(gateway: Gateway, provider: str) -> bool:
    return await receiving(gateway, provider) == 0


@pytest.mark.parametrize(
    ("provider", "declared"),
    [
        ("moonshot", False),
        ("auto", False),
        pytest.param("zai", True, marks=pytest.mark.settings(speculative_placement=False)),
    ],
)
async def test_the_provider_receives_the_bytes_before_the_client_finishes(
    gateway: Gateway, settings: Settings, provider: str, declared: bool
) -> None:
    """Explicit or auto, speculative or with a declared digest (pipelined even with
    speculation off): the sandbox is reading the upload while the client still holds its end,
    and the file is stored and placed from that one read."""
    token = await gateway.key()
    data = secrets.token_bytes(SIZE)
    target = "zai" if provider == "zai" else "moonshot"
    filename = "table.csv"  # both providers take CSV for file-extract
    headers = {"Repr-Digest": header_of(data)} if declared else {}
    fields = {"purpose": "file-extract", "provider": provider}
    async with slow_upload(
        gateway, settings, token, data, fields=fields, filename=filename, headers=headers
    ) as client:
        await wait_until(lambda: sending(gateway, target), what="the provider upload", timeout=20)
        answer = await client.finish()
    assert answer.status == 200, answer.json
    assert answer.headers["filegate-dedup"] == "miss"
    assert answer.json["status"] == "processed"
    stats = await gateway.sandbox_stats(target)
    assert stats["calls"]["upload"] == 1 and stats["files"] == 1 and stats["bytes"] == SIZE
    async with gateway.runtime.sessionmaker() as session:
        blob = await session.get(Blob, hashlib.sha256(data).hexdigest())
        assert blob is not None
        stored = await read_blob(gateway.runtime.blob_store, blob.storage_key)
    assert stored == data
    await assert_registry_sound(gateway)


async def test_a_late_dedup_hit_aborts_the_speculative_upload(
    gateway: Gateway, settings: Settings
) -> None:
    """The tenant's own bytes again: the speculative upload is cut before its last byte, the
    sandbox keeps one file, and the waste is counted."""
    token = await gateway.key()
    data = secrets.token_bytes(SIZE)
    fields = {"purpose": "file-extract", "provider": "moonshot"}
    async with slow_upload(gateway, settings, token, data, fields=fields) as client:
        first = await client.finish()
    assert first.status == 200
    async with slow_upload(gateway, settings, token, data, fields=fields) as client:
        await wait_until(lambda: sending(gateway, "moonshot"), what="the speculation")
        second = await client.finish()
    assert second.status == 200 and second.headers["filegate-dedup"] == "hit"
    assert second.json["id"] == first.json["id"]
    await wait_until(lambda: _idle(gateway, "moonshot"), what="the cut upload to end")
    stats = await gateway.sandbox_stats("moonshot")
    assert stats["calls"]["upload"] == 2 and stats["files"] == 1
    assert wasted(gateway, "moonshot", "aborted") == 1
    await assert_registry_sound(gateway)


async def test_another_tenants_bytes_are_a_miss_and_the_speculation_is_kept(
    gateway: Gateway, settings: Settings
) -> None:
    """A cross-tenant "hit" is a miss and goes exactly as one: the same pipelined upload,
    kept as the tenant's own copy; nothing is wasted."""
    data = secrets.token_bytes(SIZE)
    fields = {"purpose": "file-extract", "provider": "moonshot"}
    answers = []
    for tenant in ("globex", "acme"):
        token = await gateway.key(tenant)
        async with slow_upload(gateway, settings, token, data, fields=fields) as client:
            await wait_until(lambda: sending(gateway, "moonshot"), what="the provider upload")
            answers.append(await client.finish())
    theirs, mine = answers
    assert theirs.status == mine.status == 200
    assert theirs.headers["filegate-dedup"] == mine.headers["filegate-dedup"] == "miss"
    assert mine.json["id"] != theirs.json["id"]
    assert await provider_files(gateway, "moonshot") == 2
    assert wasted(gateway, "moonshot", "aborted") == wasted(gateway, "moonshot", "deleted") == 0


@pytest.mark.settings(speculative_placement=False)
async def test_without_speculation_the_upload_is_stored_then_forwarded(
    gateway: Gateway, settings: Settings
) -> None:
    """With speculation off and no digest, nothing goes to the provider while the body
    arrives: once the gateway has spooled what was sent, the sandbox has seen no call."""
    token = await gateway.key()
    data = secrets.token_bytes(SIZE)
    store = gateway.runtime.blob_store
    fields = {"purpose": "file-extract", "provider": "moonshot"}
    async with slow_upload(gateway, settings, token, data, fields=fields) as client:

        async def spooled() -> bool:
            spools = await leftovers(store)
            return bool(spools) and store.tmp_dir.joinpath(spools[0]).stat().st_size >= 2 * MiB  # type: ignore[attr-defined]

        await wait_until(spooled, what="the spool", timeout=20)
        assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 0
        answer = await client.finish()
    assert answer.status == 200 and answer.json["status"] == "processed"
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 1


async def test_a_client_gone_mid_stream_leaves_nothing(
    gateway: Gateway, settings: Settings
) -> None:
    token = await gateway.key()
    data = secrets.token_bytes(SIZE)
    fields = {"purpose": "file-extract", "provider": "auto"}
    async with slow_upload(gateway, settings, token, data, fields=fields) as client:
        await wait_until(lambda: sending(gateway, "moonshot"), what="the provider upload")
        client.disconnect()
        await wait_until(lambda: _idle(gateway, "moonshot"), what="the cut upload to end")
    await wait_until(lambda: wasted(gateway, "moonshot", "aborted") == 1, what="the count")
    await nothing_left(gateway)


async def test_a_digest_mismatch_cuts_the_provider_upload_and_leaves_nothing(
    gateway: Gateway, settings: Settings
) -> None:
    token = await gateway.key()
    data = secrets.token_bytes(SIZE)
    headers = {"Repr-Digest": header_of(b"other bytes")}
    fields = {"purpose": "file-extract", "provider": "moonshot"}
    async with slow_upload(gateway, settings, token, data, fields=fields, headers=headers) as c:
        await wait_until(lambda: sending(gateway, "moonshot"), what="the provider upload")
        answer = await c.finish()
    assert answer.status == 400 and answer.json["error"]["code"] == "digest_mismatch"
    assert wasted(gateway, "moonshot", "aborted") == 1
    await nothing_left(gateway)


@pytest.mark.settings(max_upload_bytes=16 * MiB)
async def test_a_size_past_the_providers_limit_mid_stream_leaves_nothing(
    gateway: Gateway, settings: Settings
) -> None:
    """Z.ai takes images of at most 5 MiB for file-extract: the upload to it is cut once
    more has arrived, and the request is refused as it would be up front."""
    token = await gateway.key()
    data = secrets.token_bytes(8 * MiB)
    sent, held = body(data, fields={"purpose": "file-extract", "provider": "zai"}, filename="a.png")
    async with serve_started_app(gateway.app, settings) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = request_head("/v1/files", token, len(sent) + len(held))
            writer.write(head.replace(b"digest-test-boundary", BOUNDARY.encode()))

            async def send() -> None:
                for at in range(0, len(sent), MiB):
                    writer.write(sent[at : at + MiB])
                    await writer.drain()

            sending = asyncio.create_task(send())
            status, _, raw = await read_answer(reader)
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        finally:
            writer.close()
    assert status.split()[1] == b"400", raw
    assert "5 MiB" in json.loads(raw)["error"]["message"]
    assert (await gateway.sandbox_stats("zai"))["calls"]["upload"] == 1
    assert wasted(gateway, "zai", "aborted") == 1
    await nothing_left(gateway)


@pytest.mark.settings(provider_order=["moonshot"], retry_max_attempts=1)
async def test_a_provider_failing_mid_stream_keeps_the_file_and_places_it_later(
    gateway: Gateway, settings: Settings
) -> None:
    """The provider drops the pipelined upload and the one from the blob: the accepted file
    waits as pending with its blob stored, and a job places it once the provider is back."""
    await gateway.sandbox_fault("moonshot", reset=True, count=2, operations=["upload"])
    token = await gateway.key()
    data = secrets.token_bytes(SIZE)
    fields = {"purpose": "file-extract", "provider": "moonshot"}
    async with slow_upload(gateway, settings, token, data, fields=fields) as client:
        await wait_until(lambda: sending(gateway, "moonshot"), what="the provider upload")
        answer = await client.finish()
    assert answer.status == 202 and answer.json["status"] == "pending", answer.json
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 2
    file_id = str(answer.json["id"])

    async def placed() -> bool:
        await Worker(gateway.runtime).drain()
        async with gateway.runtime.sessionmaker() as session:
            return await session.scalar(select(File.status).where(File.id == file_id)) == (
                FileStatus.PROCESSED
            )

    await wait_until(placed, timeout=20)
    assert await provider_files(gateway, "moonshot") == 1
    await assert_registry_sound(gateway)


async def test_auto_falls_back_from_a_failed_pipelined_upload_to_the_next_provider(
    gateway: Gateway, settings: Settings
) -> None:
    """Moonshot fails the upload that ran while the body arrived: the next provider gets the
    file from its stored blob, in the same request."""
    await gateway.sandbox_fault("moonshot", status=503, operations=["upload"])
    token = await gateway.key()
    data = secrets.token_bytes(SIZE)
    fields = {"purpose": "file-extract", "provider": "auto"}
    async with slow_upload(gateway, settings, token, data, fields=fields, filename="t.csv") as c:
        await wait_until(lambda: sending(gateway, "moonshot"), what="the provider upload")
        answer = await c.finish()
    assert answer.status == 200, answer.json
    placed = [p for p in answer.json["providers"] if p["status"] == "active"]
    assert [p["provider"] for p in placed] == ["zai"]
    assert await provider_files(gateway, "moonshot") == 0
    assert await provider_files(gateway, "zai") == 1
    async with gateway.runtime.sessionmaker() as session:
        copies = (await session.scalars(select(ProviderCopy.provider))).all()
    assert sorted(copies) == ["moonshot", "zai"]  # the failed try is on record
    await assert_registry_sound(gateway)


async def test_a_claim_refused_after_the_last_byte_deletes_the_copy_it_made(
    gateway: Gateway, settings: Settings
) -> None:
    """The last byte goes to the provider once the upload is no dedup hit, while the file is
    claimed: a quota refusal then deletes the provider's new copy at once."""
    admin = await gateway.key("ops", ("admin",))
    token = await gateway.key("acme")
    fields = {"purpose": "file-extract", "provider": "moonshot"}
    async with gateway.client(admin) as ops:
        await ops.put("/admin/tenants/acme/quota", json={"max_files": 1})
    async with slow_upload(gateway, settings, token, b"kept\n" * 1000, fields=fields) as client:
        assert (await client.finish()).status == 200
    async with slow_upload(gateway, settings, token, secrets.token_bytes(SIZE), fields=fields) as c:
        await wait_until(lambda: sending(gateway, "moonshot"), what="the provider upload")
        refused = await c.finish()
    assert refused.status == 403 and refused.json["error"]["code"] == "quota_exceeded"
    stats = await gateway.sandbox_stats("moonshot")
    assert stats["calls"]["upload"] == 2 and stats["calls"]["delete"] == 1
    assert stats["files"] == 1
    assert wasted(gateway, "moonshot", "deleted") == 1
    assert await count(gateway, File) == 1
    assert await leftovers(gateway.runtime.blob_store) == []


@pytest.mark.settings(breaker_reset_seconds=600.0)
async def test_an_open_circuit_gets_no_pipelined_upload(
    gateway: Gateway, settings: Settings
) -> None:
    """The breaker still decides: with moonshot's circuit open nothing is sent to it while the
    body arrives, and the accepted file waits as pending."""
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        opened = await ops.post("/admin/providers/moonshot/breaker", json={"action": "open"})
        assert opened.status_code == 200, opened.text
    token = await gateway.key()
    fields = {"purpose": "file-extract", "provider": "moonshot"}
    async with slow_upload(gateway, settings, token, secrets.token_bytes(SIZE), fields=fields) as c:
        answer = await c.finish()
    assert answer.status == 202 and answer.json["status"] == "pending", answer.json
    assert (await gateway.sandbox_stats("moonshot"))["calls"]["upload"] == 0
