"""Provider accounts as a cache: placement with caps in mind, eviction, re-placement on demand.

These gateways run their own sandbox (FILEGATE_SANDBOX_URL unset), which takes the gateway's
cap settings, so a few uploads fill an account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from app.jobs import queue
from app.jobs.worker import Worker
from app.models import Job, LifecycleEvent, ProviderCopy
from tests.conftest import Gateway
from tests.support.invariants import assert_registry_sound

OWN_SANDBOX = pytest.mark.settings(sandbox_url=None, moonshot_max_files=3)


@pytest.fixture
async def own(gateway: Gateway) -> AsyncIterator[Gateway]:
    """The gateway, speaking of the sandbox it serves itself."""
    url = gateway.runtime.sandbox_url
    assert url is not None and url.endswith("/sandbox")
    yield Gateway(app=gateway.app, sandbox_url=url.removesuffix("/sandbox"))


async def _upload(c: httpx.AsyncClient, name: str, data: bytes, **fields: str) -> httpx.Response:
    form = {"purpose": "file-extract", **fields}
    return await c.post("/v1/files", files={"file": (name, data)}, data=form)


async def _copies(gw: Gateway) -> dict[str, dict[str, ProviderCopy]]:
    """Every copy by file id and provider."""
    async with gw.runtime.sessionmaker() as session:
        rows = (await session.execute(select(ProviderCopy))).scalars().all()
    out: dict[str, dict[str, ProviderCopy]] = {}
    for copy in rows:
        out.setdefault(copy.file_id, {})[copy.provider] = copy
    return out


async def _evicted_in_order(gw: Gateway) -> list[str]:
    """The files whose copies were evicted, in the order it happened."""
    async with gw.runtime.sessionmaker() as session:
        stmt = (
            select(LifecycleEvent.file_id)
            .where(LifecycleEvent.to_status == "evicted")
            .order_by(LifecycleEvent.id)
        )
        return list((await session.execute(stmt)).scalars())


async def _status(c: httpx.AsyncClient, fid: str) -> dict[str, Any]:
    body: dict[str, Any] = (await c.get(f"/v1/files/{fid}")).json()
    return body


@OWN_SANDBOX
async def test_a_full_account_evicts_and_every_file_stays_usable(
    own: Gateway, client: httpx.AsyncClient
) -> None:
    ids, blobs = [], {}
    for n in range(8):
        data = f"report number {n}\n".encode()
        resp = await _upload(client, f"r{n}.txt", data)
        assert resp.status_code == 200, resp.text  # no upload fails
        ids.append(resp.json()["id"])
        blobs[ids[-1]] = data
    assert (await own.sandbox_stats("moonshot"))["files"] == 3
    copies = await _copies(own)
    evicted = [fid for fid in ids if copies[fid]["moonshot"].status == "evicted"]
    assert evicted == ids[:5]  # least recently used first
    first = await _status(client, ids[0])
    assert first["status"] == "processed"
    assert first["providers"] == [
        {"provider": "moonshot", "provider_file_id": None, "status": "evicted"}
    ]
    for fid, data in blobs.items():
        assert (await client.get(f"/v1/files/{fid}/content")).content == data
    # An uncached extract re-places the evicted copy (evicting the oldest other one).
    extracted = await client.get(f"/v1/files/{ids[0]}/extract")
    assert extracted.status_code == 200, extracted.text
    assert extracted.json()["content"] == blobs[ids[0]].decode()
    # A caller who needs a provider file id ensures a copy and gets the new id.
    ensured = await client.post(f"/v1/files/{ids[1]}/providers", json={"provider": "auto"})
    assert ensured.status_code == 200, ensured.text
    (copy,) = ensured.json()["providers"]
    assert copy["status"] == "active" and copy["provider_file_id"]
    assert (await own.sandbox_stats("moonshot"))["files"] == 3
    copies = await _copies(own)
    assert copies[ids[5]]["moonshot"].status == "evicted"  # made room for the extract
    # ids[0]'s text is cached now, so its copy went first for the ensured one ...
    assert copies[ids[0]]["moonshot"].status == "evicted"
    assert copies[ids[1]]["moonshot"].status == "active"
    calls = (await own.sandbox_stats("moonshot"))["calls"]
    again = await client.get(f"/v1/files/{ids[0]}/extract")
    assert again.json()["content"] == blobs[ids[0]].decode()  # ... and is served from cache
    assert (await own.sandbox_stats("moonshot"))["calls"] == calls
    events = (await client.get(f"/v1/files/{ids[0]}/events")).json()["data"]
    moves = [(e["from_status"], e["to_status"]) for e in events if e["provider"] == "moonshot"]
    assert ("active", "evicted") in moves and ("evicted", "placing") in moves
    metrics = (await client.get("/metrics")).text
    assert 'filegate_evictions_total{provider="moonshot",tier="lru"} 6.0' in metrics
    assert 'filegate_evictions_total{provider="moonshot",tier="extracted"} 1.0' in metrics
    assert 'filegate_replacements_total{provider="moonshot"} 2.0' in metrics
    assert 'filegate_provider_account_files{provider="moonshot",purpose_class="all"} 3.0' in (
        metrics
    )
    await assert_registry_sound(own, reconciled=True)


@pytest.mark.settings(sandbox_url=None, moonshot_max_files=5)
async def test_evictions_follow_the_policy_and_spare_batch_and_pinned(
    own: Gateway, client: httpx.AsyncClient
) -> None:
    batch = await client.post(
        "/v1/files",
        files={"file": ("in.jsonl", b'{"custom_id":"1"}\n')},
        data={"purpose": "batch"},
    )
    assert batch.status_code == 200, batch.text
    pinned = (await _upload(client, "keep.txt", b"keep me\n", pin="true")).json()
    assert pinned["pinned"] is True
    lru = (await _upload(client, "old.txt", b"least recently used\n")).json()["id"]
    extracted = (await _upload(client, "read.txt", b"its text is cached\n")).json()["id"]
    replicated = (await _upload(client, "both.csv", b"a,b\n1,2\n")).json()["id"]
    copied = await client.post(f"/v1/files/{replicated}/providers", json={"provider": "zai"})
    assert copied.status_code == 200, copied.text
    assert (await client.get(f"/v1/files/{extracted}/extract")).status_code == 200
    later = [(await _upload(client, f"n{n}.txt", f"new {n}\n".encode())).json() for n in range(4)]
    assert all(body["status"] == "processed" for body in later)
    order = await _evicted_in_order(own)
    # Another live copy first, then cached text, then least recently used.
    assert order == [replicated, extracted, lru, later[0]["id"]]
    copies = await _copies(own)
    assert copies[batch.json()["id"]]["moonshot"].status == "active"
    assert copies[pinned["id"]]["moonshot"].status == "active"
    assert copies[replicated]["zai"].status == "active"
    # The cached text is still served without its copy.
    again = await client.get(f"/v1/files/{extracted}/extract")
    assert again.json()["content"] == "its text is cached\n"
    assert copies[extracted]["moonshot"].status == "evicted"
    await assert_registry_sound(own, reconciled=True)


@pytest.mark.settings(sandbox_url=None, moonshot_max_files=2, capacity_retry_seconds=3600)
async def test_nothing_to_evict_waits_pending_and_places_when_room_appears(
    own: Gateway, client: httpx.AsyncClient
) -> None:
    kept = [(await _upload(client, f"p{n}.txt", b"p%d\n" % n, pin="true")).json() for n in (1, 2)]
    waiting = await _upload(client, "late.txt", b"late\n")
    assert waiting.status_code == 202, waiting.text
    body = waiting.json()
    assert body["status"] == "pending"
    assert "Waiting for room on a provider" in body["status_details"]
    assert "2 of 2 files" in body["status_details"]
    # Waiting is not failing: the retry costs no attempts, however often it runs.
    for _ in range(3):
        await Worker(own.runtime, concurrency=1).drain()
        async with own.runtime.sessionmaker() as session:
            await session.execute(
                update(Job).where(Job.kind == "place").values(run_after=Job.created_at)
            )
            await session.commit()
    async with own.runtime.sessionmaker() as session:
        key = f"place:{body['id']}:auto"
        job = (await session.execute(select(Job).where(Job.dedupe_key == key))).scalar_one()
        assert job.state == "queued" and job.attempts <= 1, (job.state, job.attempts)
    assert (await _status(client, body["id"]))["status"] == "pending"
    # Unpinning makes room possible: the waiting placement is made due and evicts it.
    unpinned = await client.delete(f"/v1/files/{kept[0]['id']}/pin")
    assert unpinned.status_code == 200 and unpinned.json()["pinned"] is False
    await Worker(own.runtime, concurrency=1).drain()
    placed = await _status(client, body["id"])
    assert placed["status"] == "processed", placed
    assert (await _copies(own))[kept[0]["id"]]["moonshot"].status == "evicted"
    await assert_registry_sound(own, reconciled=True)


@pytest.mark.settings(sandbox_url=None, moonshot_max_files=2)
async def test_an_explicit_provider_evicts_there_and_is_never_swapped(
    own: Gateway, client: httpx.AsyncClient
) -> None:
    first = [
        (await _upload(client, f"t{n}.csv", b"k,v\n%d,1\n" % n, provider="moonshot")).json()
        for n in range(3)
    ]
    assert all(body["providers"][0]["provider"] == "moonshot" for body in first)
    assert (await own.sandbox_stats("zai"))["files"] == 0
    assert (await _copies(own))[first[0]["id"]]["moonshot"].status == "evicted"
    # auto, by contrast, goes where there is room before evicting anything.
    auto = (await _upload(client, "auto.csv", b"k,v\n9,9\n")).json()
    assert auto["providers"][0]["provider"] == "zai"
    await assert_registry_sound(own, reconciled=True)


@pytest.mark.settings(sandbox_url=None, moonshot_max_files=4, capacity_tenant_share=0.5)
async def test_a_tenant_at_its_share_evicts_only_its_own_copies(own: Gateway) -> None:
    async with own.client(await own.key("alpha")) as alpha:
        mine = [(await _upload(alpha, f"a{n}.txt", b"alpha %d\n" % n)).json() for n in range(4)]
    async with own.client(await own.key("beta")) as beta:
        theirs = [(await _upload(beta, f"b{n}.txt", b"beta %d\n" % n)).json() for n in range(4)]
        assert all(body["status"] == "processed" for body in theirs)
    copies = await _copies(own)
    alpha_live = [b["id"] for b in mine if copies[b["id"]]["moonshot"].status == "active"]
    beta_live = [b["id"] for b in theirs if copies[b["id"]]["moonshot"].status == "active"]
    # beta evicted alpha's two oldest, then only its own: alpha keeps its share.
    assert alpha_live == [mine[2]["id"], mine[3]["id"]]
    assert beta_live == [theirs[2]["id"], theirs[3]["id"]]
    await assert_registry_sound(own, reconciled=True)


@OWN_SANDBOX
async def test_a_quota_full_answer_evicts_and_reconciliation_counts_foreign_files(
    own: Gateway, client: httpx.AsyncClient
) -> None:
    base = f"{own.sandbox_url}/sandbox/moonshot/v1/files"
    async with httpx.AsyncClient(headers={"Authorization": "Bearer sk-other"}) as other:
        for n in range(2):  # another deployment's files fill two of the three slots
            resp = await other.post(
                base, files={"file": (f"x{n}.txt", b"other")}, data={"purpose": "file-extract"}
            )
            resp.raise_for_status()
    ids = [(await _upload(client, f"m{n}.txt", b"mine %d\n" % n)).json()["id"] for n in range(2)]
    copies = await _copies(own)
    assert [copies[fid]["moonshot"].status for fid in ids] == ["evicted", "active"]
    await Worker(own.runtime, concurrency=1).drain()
    async with own.runtime.sessionmaker() as session:
        await queue.enqueue(
            session=session, kind="reconcile", payload={"provider": "moonshot"}, max_attempts=1
        )
        await session.commit()
    await Worker(own.runtime, concurrency=1).drain()
    admin = await own.key("ops", ("admin",))
    async with own.client(admin) as ops:
        rows = (await ops.get("/admin/providers")).json()["data"]
    moonshot = next(r for r in rows if r["provider"] == "moonshot")
    assert moonshot["quota_files"] == 3
    assert moonshot["usage"] == [
        {
            "purpose_class": "all",
            "files": 3,
            "bytes": len(b"mine 1\n") + 2 * len(b"other"),
            "max_files": 3,
            "max_bytes": 10 * 1024**3,
            "foreign_files": 2,
        }
    ]
    zai = next(r for r in rows if r["provider"] == "zai")
    assert {u["purpose_class"]: u["max_files"] for u in zai["usage"]}["file-extract"] == 100
    # With the foreign files counted, the next upload evicts to make room. Its speculative
    # upload reaches the sandbox first and is refused (full): one more from the blob after.
    before = await own.sandbox_stats("moonshot")
    placed = (await _upload(client, "m9.txt", b"mine 9\n")).json()
    assert [(c["provider"], c["status"]) for c in placed["providers"]] == [("moonshot", "active")]
    after = await own.sandbox_stats("moonshot")
    assert after["files"] == before["files"]  # one evicted, one placed
    assert after["calls"]["upload"] == before["calls"]["upload"] + 2
    assert (await _copies(own))[ids[1]]["moonshot"].status == "evicted"


@pytest.mark.settings(sandbox_url=None, moonshot_max_bytes=40)
async def test_the_byte_cap_evicts_as_much_as_the_upload_needs(
    own: Gateway, client: httpx.AsyncClient
) -> None:
    small = [(await _upload(client, f"s{n}.txt", b"%014d\n" % n)).json() for n in range(2)]
    big = await _upload(client, "big.txt", b"x" * 29 + b"\n")
    assert big.status_code == 200, big.text
    copies = await _copies(own)
    assert [copies[b["id"]]["moonshot"].status for b in small] == ["evicted", "evicted"]
    assert (await own.sandbox_stats("moonshot"))["bytes"] == 30
    too_big = await _upload(client, "huge.txt", b"y" * 40 + b"\n")
    assert too_big.status_code == 202  # larger than the whole account: nothing is evicted
    assert "30 of 40 bytes" in too_big.json()["status_details"]
    assert (await _copies(own))[big.json()["id"]]["moonshot"].status == "active"
    await assert_registry_sound(own, reconciled=True)


async def test_pinning_is_recorded_and_a_duplicate_upload_can_pin(
    client: httpx.AsyncClient,
) -> None:
    body = (await _upload(client, "p.txt", b"pin me\n")).json()
    assert body["pinned"] is False
    again = await _upload(client, "p.txt", b"pin me\n", pin="true")
    assert again.json()["id"] == body["id"] and again.json()["pinned"] is True
    unpinned = await client.delete(f"/v1/files/{body['id']}/pin")
    assert unpinned.json()["pinned"] is False
    pinned = await client.post(f"/v1/files/{body['id']}/pin")
    assert pinned.status_code == 200 and pinned.json()["pinned"] is True
    assert (await client.get(f"/v1/files/{body['id']}")).json()["pinned"] is True
    events = (await client.get(f"/v1/files/{body['id']}/events")).json()["data"]
    reasons = [e["reason"] for e in events if e["provider"] is None]
    assert [r.split(":")[0] for r in reasons if "pinned" in r] == ["pinned", "unpinned", "pinned"]
    bad = await _upload(client, "q.txt", b"q\n", pin="yes")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "pin"
