"""Chaos: two gateway processes, kills and restarts, provider faults, a database cut, racing
uploads and deletes; afterwards the registry must be sound and every accepted file intact.

The run is driven by one seed (printed; set FILEGATE_CHAOS_SEED to replay its choices; the
interleaving of processes is never fully reproducible). It takes about two minutes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from app.core.migrations import sync_url
from app.services.placement import file_id_from_provider_name
from tests.conftest import REDIS_URL, TEST_SECRET, _truncate
from tests.support.processes import ServerProcess, gateway_env, mint_key, start_gateway
from tests.support.processes import start_sandbox as spawn_sandbox
from tests.support.proxy import TcpProxy
from tests.support.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CHAOS_SECONDS = 60.0
# Kills and database cuts stop this early, so that what they leave on disk (spools, blobs
# without rows) is old enough for the storage sweep by the time the checks run.
DISRUPT_SECONDS = 35.0
LEFTOVER_MAX_AGE = 60.0
SWEEP_INTERVAL = 5.0
SETTLE_SECONDS = 60.0
CLIENTS = 6
PROVIDERS = ("moonshot", "zai")
ENVELOPE_KEYS = {"message", "type", "code", "param"}
TRANSIENT = {409, 429, 502, 503, 504}


@dataclass
class Ledger:
    """What the gateways answered: accepted uploads, confirmed deletes, and anything wrong."""

    payloads: list[bytes]
    accepted: dict[str, str] = field(default_factory=dict)  # file id -> sha256 it was sent
    claimed_for_delete: set[str] = field(default_factory=set)
    deleted_at: dict[str, float] = field(default_factory=dict)  # file id -> confirmation time
    idempotency_keys: dict[str, str] = field(default_factory=dict)  # key -> outcome
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    violations: list[str] = field(default_factory=list)

    def deletable(self) -> list[str]:
        return sorted(set(self.accepted) - self.claimed_for_delete)


@dataclass
class GatewaySlot:
    """One of the two replicas: its port, its current process and whether it serves."""

    port: int
    proc: ServerProcess | None = None
    up: bool = False
    busy: bool = False  # being killed or restarted

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Cluster:
    """Two gateway replicas on one database (through a proxy) and one data directory."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.slots = [GatewaySlot(free_port()), GatewaySlot(free_port())]
        self.restarts = 0

    def _start(self, slot: GatewaySlot) -> None:
        last: Exception | None = None
        for _ in range(5):  # start-up may meet the database cut; try again
            try:
                slot.proc = start_gateway(self.env, slot.port, "--no-migrate")
                slot.up = True
                return
            except RuntimeError as exc:
                last = exc
                time.sleep(1)
        raise AssertionError(f"gateway on port {slot.port} would not start: {last}")

    async def start_all(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(self._start, s) for s in self.slots))

    def up_urls(self) -> list[str]:
        return [s.url for s in self.slots if s.up]

    async def kill_and_restart(self, slot: GatewaySlot, downtime: float) -> None:
        slot.busy = True
        slot.up = False
        proc = slot.proc
        assert proc is not None
        proc.kill()  # SIGKILL: no shutdown, no cleanup
        await asyncio.to_thread(proc.wait)
        await asyncio.to_thread(proc.close)
        await asyncio.sleep(downtime)
        await asyncio.to_thread(self._start, slot)
        self.restarts += 1
        slot.busy = False

    async def ensure_up(self) -> None:
        for slot in self.slots:
            if slot.proc is None or slot.proc.poll() is not None:
                if slot.proc is not None:
                    await asyncio.to_thread(slot.proc.close)
                await asyncio.to_thread(self._start, slot)

    def close(self) -> None:
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.close()


def _envelope_ok(resp: httpx.Response) -> bool:
    try:
        body = resp.json()
    except ValueError:
        return False
    return (
        isinstance(body, dict)
        and isinstance(body.get("error"), dict)
        and set(body["error"]) == ENVELOPE_KEYS
    )


class ChaosClient:
    """One API client: uploads (some with Idempotency-Key), deletes and re-uploads."""

    def __init__(self, index: int, seed: int, cluster: Cluster, ledger: Ledger, token: str) -> None:
        self.index = index
        self.rng = random.Random(f"{seed}:client:{index}")
        self.cluster = cluster
        self.ledger = ledger
        self.headers = {"Authorization": f"Bearer {token}"}
        self.seed = seed
        self.counter = 0

    async def send(
        self, http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One request to a replica that is up; None when the connection failed."""
        urls = self.cluster.up_urls()
        while not urls:
            await asyncio.sleep(0.1)
            urls = self.cluster.up_urls()
        url = self.rng.choice(urls)
        try:
            resp = await http.request(
                method, url + path, headers=kwargs.pop("headers", {}), **kwargs
            )
        except httpx.TransportError:
            self.ledger.transport_errors += 1
            return None
        self.ledger.statuses[resp.status_code] += 1
        if resp.status_code >= 400 and not _envelope_ok(resp):
            self.ledger.violations.append(
                f"{method} {path} answered {resp.status_code} outside the error envelope: "
                f"{resp.text[:300]}"
            )
        if resp.status_code == 500:
            self.ledger.violations.append(f"{method} {path} answered 500: {resp.text[:300]}")
        return resp

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(headers=self.headers, timeout=30) as http:
            while not stop.is_set():
                deletable = self.ledger.deletable()
                if deletable and self.rng.random() < 0.2:
                    await self.delete(http, self.rng.choice(deletable))
                else:
                    await self.upload(http, self.rng.choice(self.ledger.payloads))
                await asyncio.sleep(self.rng.uniform(0, 0.2))

    async def upload(self, http: httpx.AsyncClient, payload: bytes) -> str | None:
        self.counter += 1
        provider = self.rng.choice(["auto", "auto", "auto", "moonshot", "zai"])
        idempotent = self.rng.random() < 0.35
        key = f"chaos-{self.seed}-{self.index}-{self.counter}" if idempotent else None
        headers = {"Idempotency-Key": key} if key else {}
        started = time.monotonic()
        deadline = started + 45
        while True:
            resp = await self.send(
                http,
                "POST",
                "/v1/files",
                headers=headers,
                data={"purpose": "file-extract", "provider": provider},
                files={"file": (f"chaos-{self.counter}.csv", payload, "text/csv")},
            )
            definitive = resp is not None and resp.status_code not in TRANSIENT
            if key is None or definitive or time.monotonic() > deadline:
                break
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))
        if key is not None:
            self.ledger.idempotency_keys[key] = (
                str(resp.status_code) if resp is not None else "transport error"
            )
        if resp is None or resp.status_code not in (200, 202):
            return None
        body = resp.json()
        file_id, sha = body["id"], hashlib.sha256(payload).hexdigest()
        if body["sha256"] != sha:
            self.ledger.violations.append(f"upload answered {file_id} with sha {body['sha256']}")
        gone = self.ledger.deleted_at.get(file_id)
        if gone is not None and gone < started:
            self.ledger.violations.append(
                f"an upload begun after {file_id} was deleted was answered with that id"
            )
        self.ledger.accepted.setdefault(file_id, sha)
        return str(file_id)

    async def delete(self, http: httpx.AsyncClient, file_id: str) -> None:
        self.ledger.claimed_for_delete.add(file_id)  # one client deletes a given id
        first = True
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            resp = await self.send(http, "DELETE", f"/v1/files/{file_id}")
            if resp is not None and resp.status_code == 200:
                break
            if resp is not None and resp.status_code == 404:
                if first:
                    self.ledger.violations.append(
                        f"accepted {file_id} was gone before anyone deleted it"
                    )
                break
            first = False  # an earlier attempt may have deleted it without saying so
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))
        else:
            return
        self.ledger.deleted_at[file_id] = time.monotonic()
        if self.rng.random() < 0.5:
            sha = self.ledger.accepted[file_id]
            payload = next(p for p in self.ledger.payloads if hashlib.sha256(p).hexdigest() == sha)
            again = await self.upload(http, payload)
            if again == file_id:
                self.ledger.violations.append(f"re-upload of deleted {file_id} revived it")


class ChaosDriver:
    """Kills and restarts replicas, injects provider faults and cuts the database at random."""

    def __init__(self, seed: int, cluster: Cluster, proxy: TcpProxy, sandbox: str) -> None:
        self.rng = random.Random(f"{seed}:chaos")
        self.cluster = cluster
        self.proxy = proxy
        self.sandbox = sandbox
        self.db_cut = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.log: list[str] = []
        self.last_disruption = time.monotonic()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        start = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as http:
            while (elapsed := time.monotonic() - start) < CHAOS_SECONDS:
                await asyncio.sleep(self.rng.uniform(0.8, 2.5))
                disrupt = elapsed < DISRUPT_SECONDS
                action = self.rng.choices(
                    ["kill", "fault", "db"], weights=[3, 4, 2] if disrupt else [0, 1, 0]
                )[0]
                if action == "kill":
                    self.kill()
                elif action == "db" and not self.db_cut:
                    self.db_cut = True
                    self.spawn(self.cut_database(self.rng.uniform(1, 3)))
                elif action == "fault":
                    provider = self.rng.choice(PROVIDERS)
                    spec = self.fault_spec()
                    self.log.append(f"{elapsed:5.1f}s fault {provider} {spec}")
                    resp = await http.post(f"{self.sandbox}/sandbox/{provider}/_faults", json=spec)
                    assert resp.status_code == 200, resp.text
                    self.spawn(self.clear_fault(http, provider, self.rng.uniform(1, 5)))
            while self.tasks:
                await asyncio.gather(*list(self.tasks))

    def kill(self) -> None:
        ready = [s for s in self.cluster.slots if s.up and not s.busy]
        others_up = [s for s in self.cluster.slots if s.up]
        if not ready or len(others_up) < 2:
            return  # keep one replica serving
        slot = self.rng.choice(ready)
        self.log.append(f"kill gateway on {slot.port}")
        self.last_disruption = time.monotonic()
        self.spawn(self.cluster.kill_and_restart(slot, self.rng.uniform(0, 2)))

    def fault_spec(self) -> dict[str, Any]:
        kind = self.rng.choice(["503", "429", "latency", "reset", "500"])
        spec: dict[str, Any]
        if kind == "503":
            spec = {"status": 503, "rate": round(self.rng.uniform(0.3, 1.0), 2)}
        elif kind == "429":
            spec = {"status": 429, "retry_after": 1}
        elif kind == "latency":
            spec = {"latency_ms": round(self.rng.uniform(100, 1500))}
        elif kind == "reset":
            spec = {"reset": True, "rate": 0.5}
        else:
            spec = {"status": 500, "rate": 0.5}
        if self.rng.random() < 0.4:
            ops = ["upload", "delete", "list", "retrieve"]
            spec["operations"] = self.rng.sample(ops, self.rng.randint(1, 2))
        return spec

    async def clear_fault(self, http: httpx.AsyncClient, provider: str, after: float) -> None:
        await asyncio.sleep(after)
        resp = await http.delete(f"{self.sandbox}/sandbox/{provider}/_faults")
        assert resp.status_code == 200, resp.text

    async def cut_database(self, seconds: float) -> None:
        self.log.append(f"cut database for {seconds:.1f}s")
        self.last_disruption = time.monotonic()
        await asyncio.to_thread(self.proxy.stop)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self.proxy.start)
        self.last_disruption = time.monotonic()
        self.db_cut = False


def _rows(engine: Engine, sql: str, **params: object) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).mappings())


def _unsettled(engine: Engine) -> list[str]:
    """What still has to happen before the registry may be judged; empty once settled."""
    problems = [
        f"file {r['id']} is {r['status']}"
        for r in _rows(
            engine,
            "SELECT id, status FROM files WHERE deleted_at IS NULL "
            "AND status IN ('uploaded', 'pending')",
        )
    ]
    problems += [
        f"copy {r['file_id']}@{r['provider']} is {r['status']}"
        for r in _rows(
            engine,
            "SELECT c.file_id, c.provider, c.status FROM provider_copies c "
            "JOIN files f ON f.id = c.file_id "
            "WHERE c.status = 'deleting' OR (c.status = 'placing' AND f.deleted_at IS NULL)",
        )
    ]
    problems += [
        f"job {r['id']} {r['kind']} is {r['state']} (attempts {r['attempts']})"
        for r in _rows(
            engine,
            "SELECT id, kind, state, attempts FROM jobs WHERE state IN ('queued', 'running') "
            "AND kind IN ('place', 'delete_copy', 'check_file')",
        )
    ]
    return problems


def _reconciled_since(engine: Engine, since: float) -> bool:
    """True once a reconcile of every provider queued after `since` (epoch s) has finished."""
    rows = _rows(
        engine,
        "SELECT payload FROM jobs WHERE kind = 'reconcile' AND state = 'done' "
        "AND created_at > to_timestamp(:since)",
        since=since,
    )
    return all(any(f'"{p}"' in r["payload"] for r in rows) for p in PROVIDERS)


async def _provider_listing(
    http: httpx.AsyncClient, sandbox: str, provider: str
) -> list[dict[str, Any]]:
    """Every file the sandbox holds for `provider`, through the provider's own list API."""
    if provider == "moonshot":
        resp = await http.get(
            f"{sandbox}/sandbox/moonshot/v1/files", headers={"Authorization": "Bearer sk-sandbox"}
        )
        assert resp.status_code == 200, resp.text
        return list(resp.json()["data"])
    files: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        resp = await http.get(
            f"{sandbox}/sandbox/zai/api/paas/v4/files",
            params=params,
            headers={"Authorization": "Bearer sandbox.key"},
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        files += body["data"]
        if not body["has_more"] or not body["data"]:
            return files
        params["after"] = body["data"][-1]["id"]


def _registry_problems(
    engine: Engine,
    data_dir: Path,
    listings: dict[str, list[dict[str, Any]]],
) -> list[str]:
    """The registry-soundness check, from the database, the data directory and the providers."""
    problems: list[str] = []
    files = {r["id"]: r for r in _rows(engine, "SELECT * FROM files")}
    blobs = {r["sha256"]: r for r in _rows(engine, "SELECT * FROM blobs")}
    copies = _rows(engine, "SELECT * FROM provider_copies")
    live = {fid: f for fid, f in files.items() if f["deleted_at"] is None}
    for fid, f in live.items():
        if f["status"] != "processed":
            problems.append(f"live {fid} is {f['status']}: {f['status_details']}")
        blob = blobs.get(f["sha256"])
        if blob is None:
            problems.append(f"live {fid} has no blob row")
            continue
        path = data_dir / "blobs" / blob["storage_key"]
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            problems.append(f"live {fid}: blob file {path.name} is missing")
            continue
        if digest != f["sha256"]:
            problems.append(f"live {fid}: blob re-hashes to {digest}")
        active = Counter(
            c["provider"] for c in copies if c["file_id"] == fid and c["status"] == "active"
        )
        if not active:
            problems.append(f"live {fid} has no active copy")
        problems += [
            f"live {fid} has {n} active copies on {p}" for p, n in active.items() if n != 1
        ]
    referenced = {f["sha256"] for f in live.values()}
    problems += [f"blob {sha} is kept with no live file" for sha in blobs if sha not in referenced]
    [tag] = [r["tag"] for r in _rows(engine, "SELECT tag FROM deployment")]
    for provider in PROVIDERS:
        listed = {item["id"]: item for item in listings[provider]}
        ours = {
            c["provider_file_id"]: c
            for c in copies
            if c["provider"] == provider and c["status"] == "active"
        }
        for pid, c in ours.items():
            if c["file_id"] not in live:
                problems.append(f"{provider}:{pid} is an active copy of deleted {c['file_id']}")
            elif pid not in listed:
                problems.append(f"{provider}:{pid} (copy of {c['file_id']}) is not at {provider}")
        for pid, item in listed.items():
            named = file_id_from_provider_name(item["filename"], tag=tag, registered=files)
            if named is None:
                problems.append(f"{provider}:{pid} ({item['filename']}) is not this deployment's")
            elif pid not in ours:
                state = "deleted" if named in files and named not in live else "live"
                statuses = [c["status"] for c in copies if c["provider_file_id"] == pid]
                problems.append(
                    f"{provider}:{pid} holds {state} {named} but the registry has no active "
                    f"copy for it (copy rows: {statuses or 'none'})"
                )
    return problems


def _disk_leftovers(engine: Engine, data_dir: Path) -> list[str]:
    """Spools and blob files that no crash-free run leaves behind, and no row accounts for."""
    known = {r["storage_key"] for r in _rows(engine, "SELECT storage_key FROM blobs")}
    blob_root = data_dir / "blobs"
    stray = [
        str(p.relative_to(blob_root))
        for p in blob_root.glob("??/??/*")
        if str(p.relative_to(blob_root)) not in known
    ]
    spools = sorted(p.name for p in (data_dir / "tmp").glob("*.part"))
    return [f"spool {name}" for name in spools] + [f"blob file {k} has no row" for k in stray]


def _history(engine: Engine, problems: list[str]) -> str:
    """The lifecycle of every file a problem names, to tell a race from a crash."""
    ids = sorted({w.strip(":,()") for p in problems for w in p.split() if w.startswith("file-")})
    lines = []
    for file_id in ids[:10]:
        lines.append(f"{file_id}:")
        for r in _rows(
            engine,
            "SELECT created_at, provider, from_status, to_status, reason, request_id "
            "FROM lifecycle_events WHERE file_id = :id ORDER BY id",
            id=file_id,
        ):
            lines.append(
                f"  {r['created_at']:%H:%M:%S.%f} {r['provider'] or '-':8} "
                f"{r['from_status']} -> {r['to_status']}: {r['reason']} ({r['request_id']})"
            )
    return "\n".join(lines)


def _stuck_keys(engine: Engine) -> list[str]:
    rows = _rows(
        engine,
        "SELECT key, lease_until FROM idempotency_keys "
        "WHERE state = 'running' AND (lease_until IS NULL OR lease_until < now())",
    )
    return [f"idempotency key {r['key']} stuck running (lease {r['lease_until']})" for r in rows]


@pytest.fixture
def pg(pg_url: str) -> Iterator[str]:
    _truncate(pg_url)
    yield pg_url
    _truncate(pg_url)


@pytest.fixture
def breaker_redis() -> Iterator[tuple[str | None, str]]:
    namespace = f"filegate-chaos:{uuid.uuid4().hex}:breaker"
    yield REDIS_URL, namespace
    if REDIS_URL:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}*"))
        if keys:
            client.delete(*keys)
        client.close()


async def test_chaos_keeps_the_registry_sound(
    pg: str, tmp_path: Path, breaker_redis: tuple[str | None, str]
) -> None:
    seed = int(os.environ.get("FILEGATE_CHAOS_SEED") or secrets.randbelow(2**31))
    print(f"chaos seed: {seed} (replay with FILEGATE_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    redis_url, namespace = breaker_redis
    data_dir = tmp_path / "shared-volume"
    engine = create_engine(sync_url(pg))
    payloads = [
        (
            "id,value\n"
            + "".join(f"{i},{rng.getrandbits(64):x}\n" for i in range(rng.randint(5, 400)))
        ).encode()
        for _ in range(30)
    ]
    ledger = Ledger(payloads=payloads)
    with ExitStack() as stack:
        stack.callback(engine.dispose)
        sandbox = stack.enter_context(spawn_sandbox())
        proxy = TcpProxy("127.0.0.1", engine.url.port or 5432)
        proxy.start()
        stack.callback(proxy.stop)
        env = gateway_env(
            database_url=proxy.url(pg),
            data_dir=data_dir,
            secret_key=TEST_SECRET,
            sandbox_url=f"{sandbox.url}/sandbox",
            redis_url=redis_url,
            breaker_namespace=namespace,
            env="test",
            log_level="WARNING",
            workers_in_process="1",
            reconcile_interval_seconds="5",
            orphan_grace_seconds="2",
            job_poll_seconds="0.2",
            job_backoff_base="0.1",
            job_backoff_max="1",
            job_lease_seconds="3",
            job_max_attempts="1000",
            breaker_reset_seconds="1",
            idempotency_lease_seconds="2",
            dedup_wait_seconds="2",
            storage_leftover_max_age_seconds=str(int(LEFTOVER_MAX_AGE)),
            storage_sweep_interval_seconds=str(SWEEP_INTERVAL),
            database_connect_timeout="2",
            provider_timeout="10",
        )
        cluster = Cluster(env)
        stack.callback(cluster.close)
        await cluster.start_all()
        token = await mint_key(pg, TEST_SECRET.encode(), tenant="acme", name="chaos")
        admin = await mint_key(
            pg, TEST_SECRET.encode(), tenant="ops", name="admin", scopes=["admin"]
        )

        # -- chaos ------------------------------------------------------------------------
        stop = asyncio.Event()
        driver = ChaosDriver(seed, cluster, proxy, sandbox.url)
        clients = [ChaosClient(i, seed, cluster, ledger, token) for i in range(CLIENTS)]
        client_tasks = [asyncio.ensure_future(c.run(stop)) for c in clients]
        await driver.run()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*client_tasks), timeout=60)
        print("chaos:", *driver.log, sep="\n  ")
        print(
            f"answers {dict(ledger.statuses)}, transport errors {ledger.transport_errors}, "
            f"accepted {len(ledger.accepted)}, deleted {len(ledger.deleted_at)}, "
            f"restarts {cluster.restarts}, idempotent uploads "
            f"{dict(Counter(ledger.idempotency_keys.values()))}"
        )

        # -- settle -----------------------------------------------------------------------
        async with httpx.AsyncClient(timeout=30) as http:
            for provider in PROVIDERS:
                resp = await http.delete(f"{sandbox.url}/sandbox/{provider}/_faults")
                assert resp.status_code == 200
            await cluster.ensure_up()
            deadline = time.monotonic() + SETTLE_SECONDS
            settled_at: float | None = None
            while True:
                unsettled = await asyncio.to_thread(_unsettled, engine)
                if unsettled:
                    settled_at = None
                elif settled_at is None:
                    settled_at = time.time() + 2.5  # past the orphan grace of late uploads
                elif await asyncio.to_thread(_reconciled_since, engine, settled_at):
                    break
                if time.monotonic() > deadline:
                    jobs = (
                        await http.get(
                            f"{cluster.slots[0].url}/admin/jobs/summary",
                            headers={"Authorization": f"Bearer {admin}"},
                        )
                    ).text
                    pytest.fail(
                        f"seed {seed}: the registry did not settle within {SETTLE_SECONDS:.0f}s: "
                        f"{unsettled[:20]}; jobs: {jobs[:2000]}"
                    )
                await asyncio.sleep(0.5)

            # -- check: accepted files are intact, deleted ones stay deleted ---------------
            base = cluster.slots[0].url
            auth = {"Authorization": f"Bearer {token}"}
            lost: list[str] = []
            by_sha = {hashlib.sha256(p).hexdigest(): p for p in payloads}
            for file_id, sha in sorted(ledger.accepted.items()):
                got = await http.get(f"{base}/v1/files/{file_id}", headers=auth)
                if file_id in ledger.deleted_at:
                    if got.status_code != 404:
                        lost.append(f"deleted {file_id} answers {got.status_code}")
                    continue
                if file_id in ledger.claimed_for_delete:
                    continue  # its delete never got a definitive answer: either way is right
                if got.status_code != 200:
                    lost.append(f"accepted {file_id} answers {got.status_code}: {got.text[:200]}")
                    continue
                if got.json()["status"] != "processed":
                    lost.append(f"accepted {file_id} is {got.json()['status']}")
                content = await http.get(f"{base}/v1/files/{file_id}/content", headers=auth)
                if content.status_code != 200 or content.content != by_sha[sha]:
                    lost.append(f"accepted {file_id}: content {content.status_code} differs")
            listings = {p: await _provider_listing(http, sandbox.url, p) for p in PROVIDERS}

        registry = await asyncio.to_thread(_registry_problems, engine, data_dir, listings)
        stuck = await asyncio.to_thread(_stuck_keys, engine)

        # -- check: nothing left on disk once the sweep may take it -------------------------
        sweep_by = driver.last_disruption + LEFTOVER_MAX_AGE + 3 * SWEEP_INTERVAL + 5
        while (leftovers := await asyncio.to_thread(_disk_leftovers, engine, data_dir)) and (
            time.monotonic() < sweep_by
        ):
            await asyncio.sleep(1)

        for slot in cluster.slots:
            assert slot.proc is not None and slot.proc.poll() is None, slot.proc and slot.proc.log()
        report = {
            "answers": ledger.violations,
            "accepted files": lost,
            "registry": registry,
            "idempotency": stuck,
            "disk": leftovers,
        }
        failed = {name: items for name, items in report.items() if items}
        if failed:
            problems = [item for items in failed.values() for item in items]
            print(await asyncio.to_thread(_history, engine, problems))
        assert not failed, f"seed {seed}: " + "; ".join(
            f"{name}: {items[:15]}" for name, items in failed.items()
        )
        assert ledger.accepted, f"seed {seed}: no upload was accepted at all"
