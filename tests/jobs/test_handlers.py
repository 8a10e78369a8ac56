"""Resilience end to end: pending placement, lost copies, orphans, expiry, dead letters."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.core.db import utcnow
from app.jobs import queue
from app.jobs.queue import JobKind
from app.jobs.worker import Worker
from app.main import create_app
from app.models import File, Job, ProviderCopy
from app.services.placement import provider_filename
from app.storage.blobs import LocalBlobStore
from tests.api.test_files import upload
from tests.conftest import Gateway, settings_with, started_gateway
from tests.support.blobs import overwrite_blob
from tests.support.bodies import FileBody
from tests.support.invariants import assert_registry_sound
from tests.support.waiting import wait_until


async def clear_faults(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as c:
        for provider in ("moonshot", "zai"):
            await c.delete(f"{gateway.sandbox_url}/sandbox/{provider}/_faults")


async def drain(gateway: Gateway) -> int:
    return await Worker(gateway.runtime, concurrency=1).drain()


async def drain_until(gateway: Gateway, check: Callable[[], Awaitable[bool]]) -> None:
    """Run the due jobs until `check()` holds; jobs that back off come due on the real clock."""

    async def done() -> bool:
        await drain(gateway)
        return await check()

    await wait_until(done)


async def provider_called(gateway: Gateway, provider: str, operation: str) -> bool:
    """The sandbox has seen at least one `operation` call to `provider`."""
    return bool((await gateway.sandbox_stats(provider))["calls"][operation])


async def test_burst_on_preferred_provider_lands_on_the_other(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    await gateway.sandbox_fault("moonshot", status=502, rate=1.0)
    bodies = []
    for i in range(5):
        resp = await upload(client, f"row,{i}\n".encode(), filename=f"r{i}.csv")
        assert resp.status_code == 200, resp.text
        bodies.append(resp.json())
    assert all(
        [p["provider"] for p in b["providers"] if p["status"] == "active"] == ["zai"]
        for b in bodies
    )
    assert (await gateway.sandbox_stats("zai"))["files"] == 5
    await clear_faults(gateway)
    await assert_registry_sound(gateway)


async def test_both_down_then_back_completes_without_client_retry(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    await gateway.sandbox_fault("moonshot", status=503, rate=1.0)
    await gateway.sandbox_fault("zai", status=503, rate=1.0)
    resp = await upload(client, b"a,b\n1,2\n", filename="t.csv")
    assert resp.status_code == 202
    file_id = resp.json()["id"]
    assert resp.json()["status"] == "pending"
    await drain(gateway)  # still down: the job backs off and stays queued
    assert (await client.get(f"/v1/files/{file_id}")).json()["status"] == "pending"
    await clear_faults(gateway)

    async def processed() -> bool:
        return bool((await client.get(f"/v1/files/{file_id}")).json()["status"] == "processed")

    await drain_until(gateway, processed)
    body = (await client.get(f"/v1/files/{file_id}")).json()
    assert body["status"] == "processed"
    assert any(p["status"] == "active" for p in body["providers"])
    content = await client.get(f"/v1/files/{file_id}/content")
    assert content.content == b"a,b\n1,2\n"
    events = (await client.get(f"/v1/files/{file_id}/events")).json()["data"]
    assert [e["to_status"] for e in events if e["provider"] is None] == [
        "uploaded",
        "pending",
        "processed",
    ]
    await assert_registry_sound(gateway, reconciled=True)


async def test_lost_copy_is_found_by_health_check_and_replaced(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    body = (await upload(client)).json()
    old_id = body["providers"][0]["provider_file_id"]
    async with httpx.AsyncClient() as c:
        lost = await c.post(f"{gateway.sandbox_url}/sandbox/moonshot/_lose/{old_id}")
        assert lost.status_code == 200
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        report = (await ops.post(f"/admin/files/{body['id']}/check")).json()
    assert report == {"file_id": body["id"], "blob": "ok", "copies": {"moonshot": "missing"}}
    await drain(gateway)
    after = (await client.get(f"/v1/files/{body['id']}")).json()
    [copy] = [p for p in after["providers"] if p["status"] == "active"]
    assert copy["provider"] == "moonshot" and copy["provider_file_id"] != old_id
    await assert_registry_sound(gateway, reconciled=True)


async def test_corrupt_blob_is_withheld_and_never_pushed(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    body = (await upload(client, b"a,b\n", filename="t.csv")).json()
    store = gateway.runtime.blob_store
    await overwrite_blob(store, store.key_for(body["sha256"]), b"bit rot")
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:
        report = (await ops.post(f"/admin/files/{body['id']}/check")).json()
    assert report["blob"] == "corrupt"
    content = await client.get(f"/v1/files/{body['id']}/content")
    assert content.status_code == 500
    assert content.json()["error"]["code"] == "blob_corrupt"
    retrieved = (await client.get(f"/v1/files/{body['id']}")).json()
    assert "blob corrupt" in retrieved["status_details"]
    replicate = await client.post(f"/v1/files/{body['id']}/providers", json={"provider": "zai"})
    assert replicate.status_code == 500
    assert (await gateway.sandbox_stats("zai"))["calls"]["upload"] == 0


@pytest.mark.settings(orphan_grace_seconds=0)
async def test_reconciliation_adopts_upload_whose_commit_was_lost(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    # Simulate a crash after the provider answered but before the commit: the intent row
    # stays 'placing' while the provider holds the file.
    await gateway.sandbox_fault("moonshot", status=503, rate=1.0, operations=["upload"])
    await gateway.sandbox_fault("zai", status=503, rate=1.0, operations=["upload"])
    body = (await upload(client)).json()
    await clear_faults(gateway)
    rt = gateway.runtime
    async with rt.sessionmaker() as session:
        file = await session.get(File, body["id"])
        copy = (
            await session.execute(
                select(ProviderCopy).where(
                    ProviderCopy.file_id == body["id"], ProviderCopy.provider == "moonshot"
                )
            )
        ).scalar_one()
        copy.status = "placing"
        await session.commit()
        assert file is not None
        async with await rt.blob_store.open(rt.blob_store.key_for(file.sha256)) as blob:
            placed = await rt.providers.adapter("moonshot").upload(
                body=blob,
                filename=provider_filename(file, tag=await rt.deployment.tag()),
                purpose="file-extract",
                content_type="text/plain",
            )
        blob_key = rt.blob_store.key_for(file.sha256)

        async def put(filename: str) -> str:
            async with await rt.blob_store.open(blob_key) as blob:
                placed = await rt.providers.adapter("moonshot").upload(
                    body=blob,
                    filename=filename,
                    purpose="file-extract",
                    content_type="text/plain",
                )
            return placed.id

        # an orphan of ours (our tag) naming a file the registry never kept
        ghost = await put(f"file-{'Q' * 24}.{await rt.deployment.tag()}__ghost.txt")
        # the same without a tag: the id is not in this registry, so it is not ours to judge
        untagged = await put(f"file-{'Q' * 24}__ghost.txt")
        other_deployment = await put(f"file-{'Q' * 24}.{'z' * 10}__ghost.txt")
        stranger = await put("not-ours.txt")
        await session.execute(select(Job))  # keep session open across the await above
    async with rt.sessionmaker() as session:
        from app.jobs import queue
        from app.jobs.queue import JobKind

        await session.execute(delete(Job))
        await queue.enqueue(
            session=session, kind=JobKind.RECONCILE, payload={"provider": "moonshot"}
        )
        await session.commit()
    await drain(gateway)
    after = (await client.get(f"/v1/files/{body['id']}")).json()
    active = [p for p in after["providers"] if p["status"] == "active"]
    assert [(p["provider"], p["provider_file_id"]) for p in active] == [("moonshot", placed.id)]
    assert after["status"] == "processed"
    async with httpx.AsyncClient() as c:
        listing = (
            await c.get(
                f"{gateway.sandbox_url}/sandbox/moonshot/v1/files",
                headers={"Authorization": "Bearer sk-x"},
            )
        ).json()["data"]
    ids = {f["id"] for f in listing}
    assert placed.id in ids and ghost not in ids
    assert {stranger, untagged, other_deployment} <= ids
    async with httpx.AsyncClient() as c:
        for foreign in (stranger, untagged, other_deployment):
            await c.delete(
                f"{gateway.sandbox_url}/sandbox/moonshot/v1/files/{foreign}",
                headers={"Authorization": "Bearer sk-x"},
            )
    await assert_registry_sound(gateway, reconciled=True)


async def test_expired_files_are_removed_everywhere(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    resp = await client.post(
        "/v1/files",
        data={
            "purpose": "file-extract",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "3600",
        },
        files={"file": ("e.txt", b"ephemeral", "text/plain")},
    )
    body = resp.json()
    assert body["expires_at"] - body["created_at"] in (3599, 3600, 3601)
    async with gateway.runtime.sessionmaker() as session:
        file = await session.get(File, body["id"])
        assert file is not None
        file.expires_at = utcnow() - timedelta(seconds=1)
        await session.commit()
    assert (await client.get(f"/v1/files/{body['id']}")).status_code == 404
    async with gateway.runtime.sessionmaker() as session:
        from app.jobs import queue
        from app.jobs.queue import JobKind

        await queue.enqueue(session=session, kind=JobKind.EXPIRE, payload={})
        await session.commit()
    await drain(gateway)
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 0
    assert not [p for p in (gateway.runtime.settings.data_dir / "blobs").rglob("*") if p.is_file()]
    bad = await client.post(
        "/v1/files",
        data={
            "purpose": "file-extract",
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "5",
        },
        files={"file": ("e.txt", b"x", "text/plain")},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "expires_after[seconds]"


async def test_replicate_to_another_provider(gateway: Gateway, client: httpx.AsyncClient) -> None:
    body = (await upload(client, b"a,b\n", filename="t.csv")).json()
    resp = await client.post(f"/v1/files/{body['id']}/providers", json={"provider": "zai"})
    assert resp.status_code == 200, resp.text
    active = {p["provider"] for p in resp.json()["providers"] if p["status"] == "active"}
    assert active == {"moonshot", "zai"}
    again = await client.post(f"/v1/files/{body['id']}/providers", json={"provider": "zai"})
    assert again.status_code == 200
    assert (await gateway.sandbox_stats("zai"))["calls"]["upload"] == 1
    deleted = await client.delete(f"/v1/files/{body['id']}")
    assert deleted.status_code == 200
    assert (await gateway.sandbox_stats("zai"))["files"] == 0
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 0


async def test_failed_provider_delete_is_retried_by_a_job(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    body = (await upload(client)).json()
    await gateway.sandbox_fault("moonshot", status=503, rate=1.0, operations=["delete"])
    resp = await client.delete(f"/v1/files/{body['id']}")
    assert resp.status_code == 200
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 1
    await clear_faults(gateway)
    await drain(gateway)
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 0


@pytest.mark.settings(job_max_attempts=2)
async def test_dead_letters_are_listed_and_retryable(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    await gateway.sandbox_fault("zai", status=503, rate=1.0)
    resp = await upload(client, b"a,b\n", filename="t.csv", provider="zai")
    assert resp.status_code == 202
    admin = await gateway.key("ops", ("admin",))
    async with gateway.client(admin) as ops:

        async def dead() -> bool:
            return bool((await ops.get("/admin/jobs/summary")).json()["counts"]["dead"])

        await drain_until(gateway, dead)
        summary = (await ops.get("/admin/jobs/summary")).json()
        assert summary["counts"]["dead"] == 1
        [letter] = summary["dead_letters"]
        assert letter["kind"] == "place" and letter["payload"]["provider"] == "zai"
        file = (await client.get(f"/v1/files/{resp.json()['id']}")).json()
        assert file["status"] == "error" and "gave up" in file["status_details"]
        await clear_faults(gateway)
        retried = await ops.post(f"/admin/jobs/{letter['id']}/retry")
        assert retried.status_code == 200 and retried.json()["state"] == "queued"
    await drain(gateway)
    file = (await client.get(f"/v1/files/{resp.json()['id']}")).json()
    assert file["status"] == "processed"
    await assert_registry_sound(gateway, reconciled=True)


async def test_delete_during_placement_leaves_no_copy_behind(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    import asyncio

    await gateway.sandbox_fault(
        "moonshot", status=None, latency_ms=800, rate=1.0, operations=["upload"]
    )
    pending = asyncio.ensure_future(upload(client, b"racing delete\n"))
    listed: list[dict[str, str]] = []

    async def listed_yet() -> bool:
        listed[:] = (await client.get("/v1/files")).json()["data"]
        return bool(listed)

    await wait_until(listed_yet, every=0.02)
    file_id = listed[0]["id"]
    assert file_id is not None and listed[0]["status"] == "uploaded"
    assert (await client.delete(f"/v1/files/{file_id}")).status_code == 200
    resp = await pending
    assert resp.status_code == 404
    await clear_faults(gateway)
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 0
    async with gateway.runtime.sessionmaker() as session:
        from app.models import LifecycleEvent

        events = (
            (
                await session.execute(
                    select(LifecycleEvent.reason).where(LifecycleEvent.file_id == file_id)
                )
            )
            .scalars()
            .all()
        )
    assert any("deleted during placement" in e for e in events)
    await assert_registry_sound(gateway, reconciled=True)


@pytest.mark.settings(orphan_grace_seconds=0)
async def test_reconciliation_adopts_lost_commit_while_other_uploads_carry_on(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    # The crashed upload's entry is 'placing'; a later upload to the same provider is active.
    # The adoption decision must read the stuck file's own entry, not the newest copy's.
    await gateway.sandbox_fault("moonshot", status=503, rate=1.0, operations=["upload"])
    await gateway.sandbox_fault("zai", status=503, rate=1.0, operations=["upload"])
    stuck = (await upload(client, content=b"stuck bytes")).json()
    await clear_faults(gateway)
    rt = gateway.runtime
    async with rt.sessionmaker() as session:
        file = await session.get(File, stuck["id"])
        assert file is not None
        copy = (
            await session.execute(
                select(ProviderCopy).where(
                    ProviderCopy.file_id == stuck["id"], ProviderCopy.provider == "moonshot"
                )
            )
        ).scalar_one()
        copy.status = "placing"
        await session.commit()
        async with await rt.blob_store.open(rt.blob_store.key_for(file.sha256)) as blob:
            placed = await rt.providers.adapter("moonshot").upload(
                body=blob,
                filename=provider_filename(file, tag=await rt.deployment.tag()),
                purpose="file-extract",
                content_type="text/plain",
            )
    later = (await upload(client, content=b"later bytes")).json()
    assert later["status"] == "processed"
    async with rt.sessionmaker() as session:
        from app.jobs import queue
        from app.jobs.queue import JobKind

        await session.execute(delete(Job))
        await queue.enqueue(
            session=session, kind=JobKind.RECONCILE, payload={"provider": "moonshot"}
        )
        await session.commit()
    await drain(gateway)
    after = (await client.get(f"/v1/files/{stuck['id']}")).json()
    active = [(p["provider"], p["provider_file_id"]) for p in after["providers"]]
    assert ("moonshot", placed.id) in active
    assert after["status"] == "processed"
    await assert_registry_sound(gateway, reconciled=True)


@asynccontextmanager
async def deployment(settings: Settings, database_url: str, name: str) -> AsyncIterator[Gateway]:
    """Another gateway with a registry of its own, on the same sandbox provider accounts."""
    own = settings_with(
        settings, database_url=database_url, data_dir=settings.data_dir.parent / name
    )
    async with started_gateway(own, str(settings.sandbox_url).removesuffix("/sandbox")) as gateway:
        yield gateway


async def reconcile(gateway: Gateway, *providers: str) -> None:
    async with gateway.runtime.sessionmaker() as session:
        for provider in providers:
            await queue.enqueue(
                session=session, kind=JobKind.RECONCILE, payload={"provider": provider}
            )
        await session.commit()
    await drain(gateway)


async def sandbox_names(gateway: Gateway, provider: str) -> dict[str, str]:
    """Provider file id -> name, as the provider lists them."""
    return {f.id: f.filename for f in await gateway.runtime.providers.adapter(provider).list()}


def sample(gateway: Gateway, name: str, provider: str) -> float:
    value = gateway.runtime.metrics.registry.get_sample_value(name, {"provider": provider})
    return float(value or 0.0)


async def test_deployment_tag_survives_restarts_and_differs_between_registries(
    settings: Settings, peer_database_url: str
) -> None:
    assert settings.database_url is not None
    tags = []
    for url in (settings.database_url, settings.database_url, peer_database_url):
        async with deployment(settings, url, "d") as gw:
            tags.append(await gw.runtime.deployment.tag())
    assert tags[0] == tags[1] != tags[2]
    assert all(len(t) == 10 and t.isalnum() and t == t.lower() for t in tags)


async def test_provider_names_carry_the_tag_and_keep_the_extension(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    tag = await gateway.runtime.deployment.tag()
    long_name = "quarterly figures " * 13 + ".csv"  # 238 characters: the head pushes it over
    body = (await upload(client, b"a,b\n1,2\n", filename=long_name, provider="zai")).json()
    assert body["status"] == "processed" and body["filename"] == long_name
    [name] = (await sandbox_names(gateway, "zai")).values()
    assert name.startswith(f"{body['id']}.{tag}__quarterly figures")
    assert name.endswith(".csv") and len(name) <= 255


# The worst case: anything judged an orphan goes now (the peer's settings are derived).
@pytest.mark.settings(orphan_grace_seconds=0)
async def test_two_deployments_on_one_account_never_delete_each_others_copies(
    gateway: Gateway, client: httpx.AsyncClient, settings: Settings, peer_database_url: str
) -> None:
    rt = gateway.runtime
    ours = [
        (await upload(client, f"a,{i}\n".encode(), filename=f"o{i}.csv")).json() for i in range(6)
    ]
    for body in ours[:2]:
        copied = await client.post(f"/v1/files/{body['id']}/providers", json={"provider": "zai"})
        assert copied.status_code == 200, copied.text
    # A copy of ours written before tags existed: the registry holds its id, so it is adopted.
    async with rt.sessionmaker() as session:
        legacy = await session.get(File, ours[5]["id"])
        copy = (
            await session.execute(select(ProviderCopy).where(ProviderCopy.file_id == ours[5]["id"]))
        ).scalar_one()
        assert legacy is not None
        await rt.providers.adapter("moonshot").delete(str(copy.provider_file_id))
        copy.status, copy.provider_file_id = "placing", None
        await session.commit()
        async with await rt.blob_store.open(rt.blob_store.key_for(legacy.sha256)) as blob:
            untagged = await rt.providers.adapter("moonshot").upload(
                body=blob,
                filename=f"{legacy.id}__{legacy.filename}",
                purpose="file-extract",
                content_type="text/plain",
            )
    async with deployment(settings, peer_database_url, "peer") as peer:
        async with peer.client(await peer.key()) as peer_client:
            theirs = [
                (await upload(peer_client, f"b,{i}\n".encode(), filename=f"t{i}.csv")).json()
                for i in range(5)
            ]
            copied = await peer_client.post(
                f"/v1/files/{theirs[0]['id']}/providers", json={"provider": "zai"}
            )
            assert copied.status_code == 200, copied.text
        before = {p: await sandbox_names(gateway, p) for p in ("moonshot", "zai")}
        assert len(before["moonshot"]) == 11 and len(before["zai"]) == 3
        for _ in range(2):
            await reconcile(peer, "moonshot", "zai")
            await reconcile(gateway, "moonshot", "zai")
        after = {p: await sandbox_names(gateway, p) for p in ("moonshot", "zai")}
        assert after == before
        # Each saw the other's files as foreign; the legacy name only the peer did.
        assert sample(gateway, "filegate_reconcile_foreign_files", "moonshot") == 5
        assert sample(peer, "filegate_reconcile_foreign_files", "moonshot") == 6
        assert sample(peer, "filegate_reconcile_foreign_files", "zai") == 2
        for gw, c, bodies in ((gateway, client, ours), (peer, None, theirs)):
            async with gw.client(await gw.key()) if c is None else nullcontext(c) as cl:
                for body in bodies:
                    got = (await cl.get(f"/v1/files/{body['id']}")).json()
                    assert got["status"] == "processed"
                    assert any(p["status"] == "active" for p in got["providers"])
        adopted = (await client.get(f"/v1/files/{ours[5]['id']}")).json()
        assert [p["provider_file_id"] for p in adopted["providers"]] == [untagged.id]
        await assert_registry_sound(gateway, reconciled=True, sharing=[peer])
        await assert_registry_sound(peer, reconciled=True, sharing=[gateway])


@pytest.mark.settings(orphan_grace_seconds=0, reconcile_max_deletions=10)
async def test_a_run_with_many_true_orphans_deletes_at_most_the_cap(
    gateway: Gateway,
    client: httpx.AsyncClient,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt = gateway.runtime
    kept = (await upload(client, b"registered\n")).json()
    tag = await rt.deployment.tag()
    source = rt.settings.data_dir / "orphan.txt"
    source.write_bytes(b"orphan bytes\n")
    # Ours by tag, unknown to the registry: what a registry restored from an old backup sees.
    for i in range(34):
        await rt.providers.adapter("moonshot").upload(
            body=FileBody(source),
            filename=f"file-{'R' * 22}{i:02d}.{tag}__lost.txt",
            purpose="file-extract",
            content_type="text/plain",
        )
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 35
    with caplog.at_level(logging.WARNING, logger="filegate.recovery"):
        await reconcile(gateway, "moonshot")
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 25
    assert sample(gateway, "filegate_reconcile_deletions_held", "moonshot") == 24
    assert sample(gateway, "filegate_reconcile_deletions_capped_total", "moonshot") == 24
    warnings = [r for r in caplog.records if "held back" in r.getMessage()]
    assert len(warnings) == 1 and "FILEGATE_RECONCILE_MAX_DELETIONS" in warnings[0].getMessage()
    await reconcile(gateway, "moonshot")
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 15
    assert sample(gateway, "filegate_reconcile_deletions_held", "moonshot") == 14
    assert sample(gateway, "filegate_reconcile_deletions_capped_total", "moonshot") == 38
    # The operator raises the cap: a gateway started with it on the same registry.
    async with started_gateway(
        settings_with(settings, reconcile_max_deletions=100), gateway.sandbox_url
    ) as raised:
        await reconcile(raised, "moonshot")
        assert sample(raised, "filegate_reconcile_deletions_held", "moonshot") == 0
        listed = await sandbox_names(raised, "moonshot")
        assert list(listed) == [kept["providers"][0]["provider_file_id"]]
        await assert_registry_sound(raised, reconciled=True)


async def test_placing_a_file_whose_blob_a_delete_collected_is_withdrawn(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    # A duplicate upload asking for another provider joins a live file; a delete then takes
    # the file and its blob before the placement reads it. The upload must not answer 500.
    from app.auth.principal import system_context
    from app.services import placement

    body = (await upload(client, b"joined, then deleted\n", filename="t.csv")).json()
    rt = gateway.runtime
    async with rt.sessionmaker() as session:
        joined = await session.get(File, body["id"])
        assert joined is not None and joined.deleted_at is None
        assert (await client.delete(f"/v1/files/{body['id']}")).status_code == 200
        targets = rt.providers.targets(
            purpose="file-extract", filename="t.csv", size=joined.bytes, requested="zai"
        )
        outcome = await placement.place(
            session=session,
            blob_store=rt.blob_store,
            providers=rt.providers,
            deployment=rt.deployment,
            metrics=rt.metrics,
            capacity=rt.capacity,
            ctx=system_context(tenant_id=joined.tenant_id, task="test"),
            file=joined,
            targets=targets,
            retry_seconds=rt.settings.capacity_retry_seconds,
        )
    assert outcome.withdrawn and outcome.placed_on is None
    assert (await gateway.sandbox_stats("zai"))["calls"]["upload"] == 0
    await assert_registry_sound(gateway, reconciled=True)


async def test_copy_placed_while_a_delete_runs_is_deleted_with_the_file(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    # The delete commits the file's tombstone, then waits on a slow provider; a copy asked for
    # meanwhile finds the file gone, and nothing is left at either provider.
    import asyncio

    body = (await upload(client, b"copied during a delete\n", filename="t.csv")).json()
    await gateway.sandbox_fault(
        "moonshot", status=None, latency_ms=1500, rate=1.0, operations=["delete"]
    )
    deleting = asyncio.ensure_future(client.delete(f"/v1/files/{body['id']}"))
    await wait_until(lambda: provider_called(gateway, "moonshot", "delete"), every=0.01)
    copied = await client.post(f"/v1/files/{body['id']}/providers", json={"provider": "zai"})
    assert copied.status_code == 404, copied.text
    assert (await deleting).status_code == 200
    await clear_faults(gateway)
    await drain(gateway)
    assert (await gateway.sandbox_stats("zai"))["files"] == 0
    assert (await gateway.sandbox_stats("moonshot"))["files"] == 0
    async with gateway.runtime.sessionmaker() as session:
        copies = (
            (await session.execute(select(ProviderCopy).where(ProviderCopy.file_id == body["id"])))
            .scalars()
            .all()
        )
    assert {c.provider: c.status for c in copies} == {"moonshot": "deleted"}
    await assert_registry_sound(gateway, reconciled=True)


async def test_concurrent_placements_of_one_copy_never_fail_on_its_row(
    gateway: Gateway, client: httpx.AsyncClient
) -> None:
    # Duplicate uploads (or a job and a request) may place the same file on the same provider
    # at once; the second to write the copy row takes it over instead of answering 500.
    import asyncio

    body = (await upload(client, b"placed twice at once\n", filename="t.csv")).json()
    copies = await asyncio.gather(
        *(
            client.post(f"/v1/files/{body['id']}/providers", json={"provider": "zai"})
            for _ in range(8)
        )
    )
    assert [r.status_code for r in copies] == [200] * 8, [r.text for r in copies]
    for _ in range(3):
        await drain(gateway)
    async with gateway.runtime.sessionmaker() as session:
        rows = (
            (await session.execute(select(ProviderCopy).where(ProviderCopy.file_id == body["id"])))
            .scalars()
            .all()
        )
    assert sorted((c.provider, c.status) for c in rows) == [
        ("moonshot", "active"),
        ("zai", "active"),
    ]
    await assert_registry_sound(gateway)


async def test_placement_cut_off_from_the_database_is_finished_later(
    pg_url: str, tmp_path: Path, sandbox_reset: str, breaker_namespace: str
) -> None:
    import asyncio

    from tests.conftest import REDIS_URL, TEST_SECRET, _truncate
    from tests.support.proxy import TcpProxy

    _truncate(pg_url)
    proxy = TcpProxy("127.0.0.1", make_url(pg_url).port or 5432)
    proxy.start()
    settings = Settings(
        breaker_namespace=breaker_namespace,
        env="test",
        data_dir=tmp_path / "data",
        database_url=proxy.url(pg_url),
        redis_url=REDIS_URL,
        secret_key=TEST_SECRET,
        sandbox=True,
        sandbox_url=f"{sandbox_reset}/sandbox",
        workers_in_process=0,
        job_backoff_base=0.01,
        job_backoff_max=0.05,
        database_connect_timeout=2,
        dedup_wait_seconds=1,
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            gateway = Gateway(app=app, sandbox_url=sandbox_reset)
            async with gateway.client(await gateway.key()) as client:
                # Both providers answer 503 after a while: the placement is in flight, nothing
                # reaches a provider, and the database goes away before the outcome is written.
                for provider in ("moonshot", "zai"):
                    await gateway.sandbox_fault(
                        provider, status=503, latency_ms=700, operations=["upload"]
                    )
                pending = asyncio.ensure_future(upload(client, b"cut off\n", filename="t.csv"))
                await wait_until(lambda: provider_called(gateway, "moonshot", "upload"), every=0.01)
                await asyncio.to_thread(proxy.stop)
                assert (await asyncio.wait_for(pending, 20)).status_code == 503
                await asyncio.to_thread(proxy.start)
                await clear_faults(gateway)
                # The client retries; the gateway has everything it needs to finish.
                body: dict[str, object] = {}

                async def retried() -> bool:
                    body.update((await upload(client, b"cut off\n", filename="t.csv")).json())
                    await drain(gateway)
                    return body.get("status") == "processed"

                await wait_until(retried, timeout=20, every=0.1)
                assert body.get("status") == "processed", body
    finally:
        proxy.stop()


async def test_the_storage_sweep_counts_what_it_removes_by_kind(gateway: Gateway) -> None:
    store = gateway.runtime.blob_store
    assert isinstance(store, LocalBlobStore)
    crashed = store.new_spool()  # its upload died before committing
    await crashed.write(b"half an upload")
    await crashed.finish()
    orphan = store.new_spool()  # committed to the store, its row never written
    await orphan.write(b"no row")
    orphan_sha = await orphan.finish()
    await store.commit(orphan, sha256=orphan_sha)
    past = time.time() - 2 * gateway.runtime.settings.storage_leftover_max_age_seconds
    for path in (crashed.path, store.local_path(store.key_for(orphan_sha))):
        os.utime(path, (past, past))
    async with gateway.runtime.sessionmaker() as session:
        await queue.enqueue(session=session, kind=JobKind.SWEEP_STORAGE, payload={})
        await session.commit()
    await drain(gateway)
    registry = gateway.runtime.metrics.registry
    for kind in ("spool", "blob"):
        assert registry.get_sample_value("filegate_storage_swept_total", {"kind": kind}) == 1
    assert not await store.exists(store.key_for(orphan_sha))
    assert not crashed.path.exists()
