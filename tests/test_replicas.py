"""Stateless replicas: three gateway processes, each with its own data directory (no shared
disk), on one PostgreSQL, one Redis and one S3 bucket, sharing one provider sandbox and one
secret key, behave as one gateway."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.auth.cache import KEY_CACHE_SECONDS
from app.core.db import create_engine as create_async_engine
from app.core.db import create_sessionmaker
from app.core.migrations import sync_url
from app.repositories.files import FileRepository
from app.storage.s3 import PART_BYTES, S3BlobStore, S3Location
from tests.conftest import REDIS_URL, S3_BUCKET, TEST_SECRET, _truncate
from tests.support.blobs import leftovers
from tests.support.clock import FakeClock
from tests.support.processes import (
    ServerProcess,
    gateway_env,
    mint_key,
    start_gateway,
    start_sandbox,
)
from tests.support.seaweed import ObjectStore
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MiB = 1024 * 1024
REPLICAS = 3
LEFTOVER_MAX_AGE = 60.0  # the least FILEGATE_STORAGE_LEFTOVER_MAX_AGE_SECONDS allows


def rows(url: str, sql: str, **params: object) -> list[dict[str, Any]]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


@dataclass
class Cluster:
    """Three replicas of one deployment, and what they share."""

    replicas: list[ServerProcess]
    envs: list[dict[str, str]]
    sandbox_url: str
    database_url: str
    location: S3Location
    admin_token: str
    parts: Path  # the part files of the tests' own S3BlobStore, apart from every replica's

    def store(self, clock: FakeClock | None = None) -> AbstractAsyncContextManager[S3BlobStore]:
        """The replicas' object store, seen by the test itself (on `clock`, if given)."""
        return S3BlobStore.connect(
            self.location, part_dir=self.parts, clock=clock.time if clock is not None else time.time
        )

    def client(self, index: int, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.AsyncClient(base_url=self.replicas[index].url, headers=headers, timeout=60)

    def revive(self) -> None:
        """Start again any replica a test killed (on a fresh port, with the same settings)."""
        dead = [i for i, r in enumerate(self.replicas) if r.poll() is not None]
        for i in dead:
            self.replicas[i].close()
            self.replicas[i] = start_gateway(self.envs[i], None, "--no-migrate", wait=False)
        for i in dead:
            self.replicas[i].wait_ready()

    async def tenant_key(self, tenant: str | None = None) -> tuple[str, str]:
        """A new key of a tenant of the test's own: (key id, token)."""
        tenant = tenant or f"t-{secrets.token_hex(4)}"
        async with self.client(0) as admin:
            resp = await admin.post("/admin/keys", json={"tenant": tenant, "name": "replicas"})
        assert resp.status_code == 201, resp.text
        return str(resp.json()["id"]), str(resp.json()["key"])

    async def sandbox_stats(self, provider: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as direct:
            resp = await direct.get(f"{self.sandbox_url}/{provider}/_stats")
        resp.raise_for_status()
        stats: dict[str, Any] = resp.json()
        return stats

    async def uploads(self, provider: str) -> int:
        return int((await self.sandbox_stats(provider))["calls"]["upload"])

    async def sandbox_fault(self, provider: str, **fault: object) -> None:
        async with httpx.AsyncClient(timeout=10) as direct:
            resp = await direct.post(f"{self.sandbox_url}/{provider}/_faults", json=fault)
        resp.raise_for_status()

    async def force_breaker(self, index: int, provider: str, action: str) -> None:
        async with self.client(index) as admin:
            resp = await admin.post(f"/admin/providers/{provider}/breaker", json={"action": action})
        assert resp.status_code == 200, resp.text

    async def breaker_everywhere(self, provider: str, state: str) -> None:
        """Until every replica says the circuit is in `state` (shared through Redis)."""

        async def seen() -> bool:
            for i in range(REPLICAS):
                async with self.client(i) as admin:
                    listed = (await admin.get("/admin/providers")).json()["data"]
                [row] = [p for p in listed if p["provider"] == provider]
                if row["breaker"]["state"] != state:
                    return False
            return True

        await wait_until(seen, timeout=10, what=f"every replica to see {provider} {state}")

    def last_job_id(self) -> int:
        return int(rows(self.database_url, "SELECT coalesce(max(id), 0) AS n FROM jobs")[0]["n"])

    def jobs(self, *, since: int = 0, file_id: str | None = None) -> list[dict[str, Any]]:
        """Jobs queued after job `since`; with `file_id`, that file's placements only."""
        return rows(
            self.database_url,
            "SELECT id, kind, dedupe_key, state, attempts, last_error FROM jobs "
            "WHERE id > :since AND (CAST(:file AS text) IS NULL "
            "OR (kind = 'place' AND payload LIKE '%' || CAST(:file AS text) || '%')) ORDER BY id",
            since=since,
            file=file_id,
        )

    def copies(self, file_ids: list[str]) -> list[dict[str, Any]]:
        return rows(
            self.database_url,
            "SELECT file_id, provider, status FROM provider_copies "
            "WHERE file_id = ANY(:ids) ORDER BY file_id, provider",
            ids=file_ids,
        )

    def assert_sound(self) -> None:
        """No replica died on its own, and none logged an unexpected error."""
        for replica in self.replicas:
            assert replica.poll() is None, f"a replica died:\n{replica.log()}"
            assert "Traceback" not in replica.log(), replica.log()


async def blob_objects(store: S3BlobStore) -> list[str]:
    listed = await store.client.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.prefix}blobs/")
    return sorted(str(o["Key"]) for o in listed.get("Contents", []))


async def upload(
    client: httpx.AsyncClient,
    data: bytes,
    *,
    filename: str = "report.txt",
    content_type: str = "text/plain",
    provider: str | None = None,
) -> httpx.Response:
    return await client.post(
        "/v1/files",
        data={"purpose": "file-extract", **({"provider": provider} if provider else {})},
        files={"file": (filename, data, content_type)},
    )


@pytest.fixture(scope="module")
def sandbox() -> Iterator[str]:
    with start_sandbox() as proc:
        yield f"{proc.url}/sandbox"


@pytest.fixture(scope="module")
async def shared_cluster(
    pg_url: str,
    object_store: ObjectStore,
    sandbox: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    """Three replicas on a clean registry, a fresh sandbox and an S3 prefix of the module's own.

    Started once (a replica takes seconds to start on a busy machine); tests keep apart by
    tenant, by the jobs queued after they began, and by counting provider calls as deltas.
    """
    if not REDIS_URL:
        pytest.skip("FILEGATE_TEST_REDIS_URL is not set")
    _truncate(pg_url)
    async with httpx.AsyncClient(timeout=10) as direct:
        for provider in ("moonshot", "zai"):
            (await direct.post(f"{sandbox}/{provider}/_reset")).raise_for_status()
    prefix = f"replicas-{secrets.token_hex(6)}"
    namespace = f"filegate-test:{uuid.uuid4().hex}:breaker"
    location = S3Location(
        endpoint_url=object_store.endpoint_url,
        bucket=S3_BUCKET,
        region=object_store.region,
        access_key_id=object_store.access_key_id,
        secret_access_key=object_store.secret_access_key,
        prefix=f"{prefix}/",
    )
    settings = {
        "blob_store": "s3",
        "s3_endpoint_url": object_store.endpoint_url,
        "s3_bucket": S3_BUCKET,
        "s3_region": object_store.region,
        "s3_access_key_id": object_store.access_key_id,
        "s3_secret_access_key": object_store.secret_access_key,
        "s3_prefix": prefix,
        "breaker_namespace": namespace,
        # A circuit opened by hand stays open until the test closes it (no probe meanwhile),
        # and a job it deferred (a reconciliation) is due again soon after.
        "breaker_reset_seconds": "10",
        "dedup_wait_seconds": "30",
        "job_backoff_base": "0.1",
        "job_backoff_max": "0.5",
        "workers_in_process": "2",
        # Periodic jobs due at every scheduler pass, so every worker competes for them.
        "expiry_interval_seconds": "1",
        "reconcile_interval_seconds": "1",
        "health_check_interval_seconds": "1",
        "storage_sweep_interval_seconds": "1",
        "log_level": "WARNING",
    }
    root = tmp_path_factory.mktemp("replicas")
    envs = [
        gateway_env(
            database_url=pg_url,
            data_dir=root / f"replica-{i}",  # each its own: nothing shared on disk
            secret_key=TEST_SECRET,
            sandbox_url=sandbox,
            redis_url=REDIS_URL,
            **settings,
        )
        for i in range(REPLICAS)
    ]
    replicas: list[ServerProcess] = []
    try:
        replicas += [start_gateway(env, None, "--no-migrate", wait=False) for env in envs]
        for replica in replicas:
            replica.wait_ready()
        admin = await mint_key(
            pg_url, TEST_SECRET.encode(), tenant="ops", name="root", scopes=("admin",)
        )
        yield Cluster(replicas, envs, sandbox, pg_url, location, admin, root / "test-parts")
    finally:
        for replica in replicas:
            replica.close()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}*"))
        if keys:
            client.delete(*keys)
        client.close()
        _truncate(pg_url)


@pytest.fixture
def cluster(shared_cluster: Cluster) -> Cluster:
    """The module's replicas, all running (one a previous test killed is started again)."""
    shared_cluster.revive()
    return shared_cluster


@pytest.fixture
async def store(cluster: Cluster) -> AsyncIterator[S3BlobStore]:
    """The replicas' S3 prefix, seen from the test."""
    async with cluster.store() as s3:
        yield s3


async def test_a_file_uploaded_on_one_replica_is_served_and_deleted_by_the_others(
    cluster: Cluster, store: S3BlobStore
) -> None:
    _, token = await cluster.tenant_key()
    data = b"Quarterly report\nRevenue grew 12%.\n" * 300
    async with (
        cluster.client(0, token) as first,
        cluster.client(1, token) as second,
        cluster.client(2, token) as third,
    ):
        created = await upload(first, data)
        assert created.status_code == 200, created.text
        body = created.json()
        assert body["status"] == "processed" and body["sha256"] == hashlib.sha256(data).hexdigest()
        file_id = body["id"]
        key = store.key_for(body["sha256"])
        assert key in await blob_objects(store)

        whole = await second.get(f"/v1/files/{file_id}/content")
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["etag"] == f'"{body["sha256"]}"'
        part = await second.get(f"/v1/files/{file_id}/content", headers={"Range": "bytes=10-16"})
        assert part.status_code == 206 and part.content == data[10:17]
        assert part.headers["content-range"] == f"bytes 10-16/{len(data)}"
        extracted = await second.get(f"/v1/files/{file_id}/extract")
        assert extracted.status_code == 200, extracted.text
        assert extracted.json()["content"].startswith("Quarterly report")

        deleted = await third.delete(f"/v1/files/{file_id}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        for client in (first, second, third):
            assert (await client.get(f"/v1/files/{file_id}")).status_code == 404
    # Nothing under the prefix but the blobs of files still live (none from this test).
    live = rows(cluster.database_url, "SELECT sha256 FROM blobs")
    assert await blob_objects(store) == sorted(store.key_for(r["sha256"]) for r in live)
    assert key not in await blob_objects(store)
    assert await leftovers(store) == []
    copies = cluster.copies([file_id])
    assert [c["status"] for c in copies] == ["deleted"], copies
    cluster.assert_sound()


async def test_concurrent_identical_uploads_across_replicas_settle_on_one_file(
    cluster: Cluster, store: S3BlobStore
) -> None:
    _, token = await cluster.tenant_key()
    data = b"the same bytes, sent to every replica at once\n" * 4000
    sha = hashlib.sha256(data).hexdigest()
    files_before = (await cluster.sandbox_stats("moonshot"))["files"]
    clients = [cluster.client(i, token) for i in range(REPLICAS)]
    try:
        answers = await asyncio.gather(*(upload(clients[n % REPLICAS], data) for n in range(20)))
    finally:
        for client in clients:
            await client.aclose()
    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1, ids
    assert {a.json()["status"] for a in answers} == {"processed"}
    assert rows(cluster.database_url, "SELECT sha256 FROM blobs WHERE sha256 = :s", s=sha) == [
        {"sha256": sha}
    ]
    assert len(rows(cluster.database_url, "SELECT id FROM files WHERE sha256 = :s", s=sha)) == 1
    listed = await blob_objects(store)
    assert listed.count(store.key_for(sha)) == 1
    assert await leftovers(store) == []
    # Every twin's speculative (pipelined) upload but the kept one was cut: one provider file.
    assert (await cluster.sandbox_stats("moonshot"))["files"] == files_before + 1
    assert cluster.copies(list(ids)) == [
        {"file_id": ids.pop(), "provider": "moonshot", "status": "active"}
    ]
    cluster.assert_sound()


async def test_a_pending_file_is_placed_once_by_whichever_worker_takes_its_job(
    cluster: Cluster,
) -> None:
    _, token = await cluster.tenant_key()
    uploads_before = await cluster.uploads("moonshot")
    await cluster.force_breaker(0, "moonshot", "open")
    try:
        await cluster.breaker_everywhere("moonshot", "open")
        async with cluster.client(1, token) as second:
            accepted = await upload(second, b"placed later\n" * 50, provider="moonshot")
            assert accepted.status_code == 202, accepted.text
            assert accepted.json()["status"] == "pending"
            file_id = accepted.json()["id"]
            [job] = cluster.jobs(file_id=file_id)
            assert job["state"] == "queued" and job["attempts"] == 1, job  # the request's try
            await cluster.force_breaker(2, "moonshot", "close")

            async def placed() -> bool:
                resp = await second.get(f"/v1/files/{file_id}")
                return bool(resp.json()["status"] == "processed")

            await wait_until(placed, timeout=20, what="the pending file to be placed")
    finally:
        await cluster.force_breaker(0, "moonshot", "reset")
    [job] = cluster.jobs(file_id=file_id)
    # one worker run after the request's own attempt, and it succeeded
    assert job["state"] == "done" and job["attempts"] == 2, job
    assert await cluster.uploads("moonshot") == uploads_before + 1
    assert cluster.copies([file_id]) == [
        {"file_id": file_id, "provider": "moonshot", "status": "active"}
    ]
    cluster.assert_sound()


PERIODIC = ("expire", "health_sweep", "sweep_storage", "reconcile:moonshot", "reconcile:zai")


async def test_no_job_runs_twice_across_the_workers_of_all_replicas(cluster: Cluster) -> None:
    _, token = await cluster.tenant_key()
    since = cluster.last_job_id()
    uploads_before = await cluster.uploads("moonshot")
    clients = [cluster.client(i, token) for i in range(REPLICAS)]
    try:
        await cluster.force_breaker(0, "moonshot", "open")
        try:
            await cluster.breaker_everywhere("moonshot", "open")
            accepted = await asyncio.gather(
                *(
                    upload(
                        clients[n % REPLICAS], f"pending {n}\n".encode() * 40, provider="moonshot"
                    )
                    for n in range(6)
                )
            )
            assert [a.status_code for a in accepted] == [202] * 6, [a.text for a in accepted]
            file_ids = [a.json()["id"] for a in accepted]
            await cluster.force_breaker(1, "moonshot", "close")

            async def all_placed() -> bool:
                got = await asyncio.gather(
                    *(clients[n % REPLICAS].get(f"/v1/files/{f}") for n, f in enumerate(file_ids))
                )
                return all(g.json()["status"] == "processed" for g in got)

            await wait_until(all_placed, timeout=30, what="every pending file to be placed")
        finally:
            await cluster.force_breaker(0, "moonshot", "reset")
    finally:
        for client in clients:
            await client.aclose()
    places = [j for j in cluster.jobs(since=since) if j["kind"] == "place"]
    assert len(places) == 6 and {j["state"] for j in places} == {"done"}, places
    # each placement: the request's own try, then exactly one worker's
    assert {j["attempts"] for j in places} == {2}, places

    # Periodic jobs queued from now on, with every circuit closed: each runs at its first claim.
    periodic_since = cluster.last_job_id()

    async def periodic_done() -> bool:
        done = [j for j in cluster.jobs(since=periodic_since) if j["state"] == "done"]
        return set(PERIODIC) <= {j["dedupe_key"] for j in done}

    await wait_until(periodic_done, timeout=45, what="a run of every periodic job", every=0.5)
    others = cluster.jobs(since=periodic_since)
    finished = [j for j in others if j["state"] == "done"]
    assert {j["kind"] for j in finished} >= {"expire", "health_sweep", "reconcile", "check_file"}
    assert all(j["attempts"] == 1 and j["last_error"] is None for j in finished), finished
    # a job still running now was claimed once; none was retried or went dead
    assert all(j["attempts"] <= 1 and j["state"] != "dead" for j in others), others
    assert await cluster.uploads("moonshot") == uploads_before + len(file_ids)
    assert cluster.copies(file_ids) == [
        {"file_id": f, "provider": "moonshot", "status": "active"} for f in sorted(file_ids)
    ]
    cluster.assert_sound()


async def test_a_revoked_key_is_refused_by_every_replica_within_the_cache_bound(
    cluster: Cluster,
) -> None:
    key_id, token = await cluster.tenant_key()
    clients = [cluster.client(i, token) for i in range(REPLICAS)]
    try:
        for client in clients:  # every replica has the key in its identity cache now
            assert (await client.get("/v1/files")).status_code == 200
        async with cluster.client(0) as admin:
            revoked = await admin.delete(f"/admin/keys/{key_id}")
        assert revoked.status_code == 200, revoked.text
        deadline = time.monotonic() + KEY_CACHE_SECONDS + 1.0
        # the revoking replica at once
        assert (await clients[0].get("/v1/files")).status_code == 401
        refused: set[int] = {0}
        while refused != set(range(REPLICAS)) and time.monotonic() < deadline:
            for i in set(range(REPLICAS)) - refused:
                if (await clients[i].get("/v1/files")).status_code == 401:
                    refused.add(i)
            await asyncio.sleep(0.05)
        answers = [(await client.get("/v1/files")).status_code for client in clients]
        assert answers == [401] * REPLICAS, answers
        assert refused == set(range(REPLICAS)), (
            f"still accepted by {set(range(REPLICAS)) - refused}"
        )
    finally:
        for client in clients:
            await client.aclose()
    cluster.assert_sound()


async def test_a_sweep_keeps_a_leftover_blob_that_an_upload_on_another_replica_reuses(
    cluster: Cluster, store: S3BlobStore
) -> None:
    _, token = await cluster.tenant_key()
    data = b"stored by a replica that died before committing the row\n" * 100
    # What a replica killed between storing a blob and committing its row leaves behind.
    spool = store.new_spool()
    await spool.write(data)
    stored = await store.commit(spool, sha256=await spool.finish())
    head = await store.client.head_object(Bucket=store.bucket, Key=stored.storage_key)
    stored_at = float(head["LastModified"].timestamp())

    async def store_clock_moved_on() -> bool:  # object times have a resolution of a second
        return time.time() > stored_at + 2

    await wait_until(store_clock_moved_on, timeout=5, what="the next second")
    engine = create_async_engine(cluster.database_url)
    try:
        async with create_sessionmaker(engine)() as session, cluster.client(1, token) as other:
            registry = FileRepository(session)
            answers: list[httpx.Response] = []

            async def referenced(sha256s: list[str]) -> set[str]:
                live = await registry.blobs_with_rows(sha256s)
                # the same bytes arrive on another replica between the sweep's two looks
                answers.append(await upload(other, data))
                return live

            clock = FakeClock()
            clock.advance(stored_at + 1 + LEFTOVER_MAX_AGE - time.time())  # only it is old
            async with S3BlobStore.connect(
                cluster.location, part_dir=cluster.parts, clock=clock.time
            ) as sweeper:
                await sweeper.sweep(max_age_seconds=LEFTOVER_MAX_AGE, referenced=referenced)
    finally:
        await engine.dispose()
    [created] = answers
    assert created.status_code == 200, created.text
    assert await store.exists(stored.storage_key)
    async with cluster.client(0, token) as first:
        got = await first.get(f"/v1/files/{created.json()['id']}/content")
        assert got.status_code == 200 and got.content == data
        assert (await first.delete(f"/v1/files/{created.json()['id']}")).status_code == 200
    assert await leftovers(store) == []
    cluster.assert_sound()


def multipart_head(boundary: str, *, purpose: str, filename: str, content_type: str) -> bytes:
    return (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\n'
        f"{purpose}\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()


async def multipart_uploads_with_parts(store: S3BlobStore) -> int:
    """Multipart uploads under the prefix's temp area that hold at least one part."""
    listed = await store.client.list_multipart_uploads(
        Bucket=store.bucket, Prefix=f"{store.prefix}tmp/"
    )
    held = 0
    for entry in listed.get("Uploads", []):
        parts = await store.client.list_parts(
            Bucket=store.bucket, Key=entry["Key"], UploadId=entry["UploadId"]
        )
        held += bool(parts.get("Parts"))
    return held


async def multipart_uploads(store: S3BlobStore) -> list[dict[str, Any]]:
    listed = await store.client.list_multipart_uploads(
        Bucket=store.bucket, Prefix=f"{store.prefix}tmp/"
    )
    return list(listed.get("Uploads", []))


async def part_times(store: S3BlobStore, *, besides: set[str]) -> list[float]:
    """When each part of the multipart uploads under the temp area, but for the upload ids
    `besides` (what earlier tests left for a sweep), was stored."""
    times: list[float] = []
    for entry in await multipart_uploads(store):
        if entry["UploadId"] in besides:
            continue
        parts = await store.client.list_parts(
            Bucket=store.bucket, Key=entry["Key"], UploadId=entry["UploadId"]
        )
        times += [float(part["LastModified"].timestamp()) for part in parts.get("Parts", [])]
    return sorted(times)


async def test_a_sweep_leaves_alone_an_upload_still_streaming_into_another_replica(
    cluster: Cluster, store: S3BlobStore
) -> None:
    _, token = await cluster.tenant_key()
    boundary = f"replicas{secrets.token_hex(8)}"
    chunk = secrets.token_bytes(MiB)
    total = 3 * PART_BYTES + 3 * MiB
    # Bytes the client may send so far: a part goes once it holds PART_BYTES, so with the
    # intake's own buffering a little more than that must arrive before it does.
    allowed = PART_BYTES + 2 * MiB
    more = asyncio.Event()
    earlier = {u["UploadId"] for u in await multipart_uploads(store)}

    async def body() -> AsyncIterator[bytes]:
        yield multipart_head(
            boundary, purpose="file-extract", filename="slow.txt", content_type="text/plain"
        )
        sent = 0
        while sent < total:
            while sent >= allowed:
                more.clear()
                await more.wait()
            yield chunk
            sent += len(chunk)
        yield f"\r\n--{boundary}--\r\n".encode()

    async with cluster.client(1, token) as slow:
        streaming = asyncio.create_task(
            slow.post(
                "/v1/files",
                content=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        )
        try:

            def parts(n: int) -> Callable[[], Awaitable[bool]]:
                async def stored() -> bool:
                    assert not streaming.done(), streaming.result().text
                    return len(await part_times(store, besides=earlier)) >= n

                return stored

            await wait_until(parts(1), timeout=30, what="the first part in the store")
            [first] = await part_times(store, besides=earlier)

            async def next_second() -> bool:  # object times have a resolution of a second
                return time.time() > first + 2

            await wait_until(next_second, timeout=5, what="the next second")
            allowed = 2 * PART_BYTES + 2 * MiB
            more.set()
            await wait_until(parts(2), timeout=30, what="the second part in the store")
            # Another replica's sweep, to which the upload began long ago but is still moving.
            clock = FakeClock()
            clock.advance(first + 1 + LEFTOVER_MAX_AGE - time.time())
            engine = create_async_engine(cluster.database_url)
            try:
                async with (
                    S3BlobStore.connect(
                        cluster.location, part_dir=cluster.parts, clock=clock.time
                    ) as sweeper,
                    create_sessionmaker(engine)() as session,
                ):
                    removed = await sweeper.sweep(
                        max_age_seconds=LEFTOVER_MAX_AGE,
                        referenced=FileRepository(session).blobs_with_rows,
                    )
            finally:
                await engine.dispose()
            ours = {u["UploadId"] for u in await multipart_uploads(store)} - earlier
            assert len(ours) == 1
            # What earlier tests left may go; the upload still streaming stays.
            assert not [r for r in removed if any(f"?uploadId={u}" in r for u in ours)], removed
        finally:
            allowed = total
            more.set()
        created = await streaming
        assert created.status_code == 200, created.text
        got = await slow.get(f"/v1/files/{created.json()['id']}/content")
        assert got.status_code == 200 and len(got.content) == total
        assert got.content == chunk * (total // MiB)
        assert (await slow.delete(f"/v1/files/{created.json()['id']}")).status_code == 200
    assert await leftovers(store) == []
    cluster.assert_sound()


async def test_a_replica_killed_mid_upload_loses_nothing_accepted_and_the_sweep_cleans_up(
    cluster: Cluster, store: S3BlobStore
) -> None:
    _, token = await cluster.tenant_key()
    victim = cluster.replicas[2]
    accepted: dict[str, bytes] = {}
    async with cluster.client(2, token) as doomed:
        placed = b"accepted before the crash\n" * 500
        resp = await upload(doomed, placed)
        assert resp.status_code == 200, resp.text
        accepted[resp.json()["id"]] = placed
        # a provider fault leaves the next one pending: accepted, placed later by a worker (it
        # fails the pipelined upload and the one from the blob after it; cleared once answered)
        await cluster.sandbox_fault("zai", status=503, operations=["upload"])
        pending = b"region,revenue\nnorth,12\n" * 200
        resp = await upload(
            doomed, pending, filename="sales.csv", content_type="text/csv", provider="zai"
        )
        async with httpx.AsyncClient(timeout=10) as direct:
            (await direct.delete(f"{cluster.sandbox_url}/zai/_faults")).raise_for_status()
        assert resp.status_code == 202, resp.text
        accepted[resp.json()["id"]] = pending

        boundary = f"replicas{secrets.token_hex(8)}"
        chunk = b"x" * MiB
        total = 24 * MiB
        stall = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield multipart_head(
                boundary, purpose="file-extract", filename="big.txt", content_type="text/plain"
            )
            sent = 0
            while sent < total:
                if sent >= PART_BYTES + 2 * MiB:
                    await stall.wait()  # mid-body: a part is in the store, the rest is not
                yield chunk
                sent += len(chunk)
                await asyncio.sleep(0.01)
            yield f"\r\n--{boundary}--\r\n".encode()

        big = asyncio.create_task(
            doomed.post(
                "/v1/files",
                content=body(),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        )
        try:

            async def part_stored() -> bool:
                assert not big.done(), big.result().text
                return await multipart_uploads_with_parts(store) > 0

            await wait_until(part_stored, timeout=30, what="a multipart upload part in the store")
            victim.kill()  # SIGKILL: no shutdown, no clean-up of any kind
            victim.wait(15)
            stall.set()
            with pytest.raises(httpx.TransportError):
                await big
        finally:
            stall.set()
            if not big.done():
                big.cancel()
    assert await multipart_uploads_with_parts(store) == 1  # the crash left a half-written object

    async with cluster.client(0, token) as survivor:

        async def all_processed() -> bool:
            got = [await survivor.get(f"/v1/files/{f}") for f in accepted]
            return all(g.json()["status"] == "processed" for g in got)

        await wait_until(all_processed, timeout=30, what="the pending file to be placed")
        for file_id, data in accepted.items():
            got = await survivor.get(f"/v1/files/{file_id}/content")
            assert got.status_code == 200 and got.content == data

        # The sweep every replica runs, as it will see things once they are old enough.
        clock = FakeClock()
        clock.advance(LEFTOVER_MAX_AGE + 60)
        engine = create_async_engine(cluster.database_url)
        try:
            async with (
                cluster.store(clock) as later,
                create_sessionmaker(engine)() as session,
            ):
                removed = await later.sweep(
                    max_age_seconds=LEFTOVER_MAX_AGE,
                    referenced=FileRepository(session).blobs_with_rows,
                )
        finally:
            await engine.dispose()
        assert any("?uploadId=" in r for r in removed), removed
        assert await leftovers(store) == []
        live = rows(cluster.database_url, "SELECT sha256 FROM blobs")
        assert await blob_objects(store) == sorted(store.key_for(r["sha256"]) for r in live)
        for file_id, data in accepted.items():
            got = await survivor.get(f"/v1/files/{file_id}/content")
            assert got.status_code == 200 and got.content == data
    for replica in cluster.replicas:
        if replica is not victim:
            assert replica.poll() is None and "Traceback" not in replica.log(), replica.log()
