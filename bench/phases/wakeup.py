"""10: queued placement start across processes on PostgreSQL, NOTIFY against polling only."""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

from app.core.config import Settings
from bench.context import Bench
from bench.database import NO_DATABASE, bench_database_url, fresh_database
from bench.payloads import CSV_CONTENT_TYPE, CSV_FILENAME, PURPOSE, SMALL_TIMEOUT, csv_variant
from bench.processes import (
    Processes,
    Server,
    launch_gateway,
    read_keys,
    wait_for_keys,
    wait_ready,
)
from bench.report import verdict

POLL_SECONDS = 0.005  # the sandbox's upload counter is read this often
GIVE_UP_S = 30.0
START_GOAL_MS = 100.0
POLL_BASELINE_S = Settings.model_fields["job_poll_seconds"].default


def _start_latency(
    b: Bench, api: Server, auth: dict[str, str], admin: dict[str, str], *, offset: float
) -> float:
    """Seconds from the API gateway making a queued placement due (closing moonshot's circuit
    commits the change, and its NOTIFY) to the moonshot sandbox receiving the upload that the
    worker gateway makes. Waiting `offset` seconds first keeps runs from falling into step
    with the worker's poll (each run would otherwise start just after the worker's last look)."""
    b.reset("moonshot")
    time.sleep(offset)
    breaker = f"{api.base_url}/admin/providers/moonshot/breaker"

    def set_breaker(action: str) -> None:
        response = b.client.post(breaker, headers=admin, json={"action": action}, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"breaker {action} -> {response.status_code}: {response.text}")

    set_breaker("open")
    try:
        response = b.client.post(
            api.base_url + "/v1/files",
            headers=auth,
            data={"purpose": PURPOSE, "provider": "moonshot"},
            files={"file": (CSV_FILENAME, csv_variant(b.csv), CSV_CONTENT_TYPE)},
            timeout=SMALL_TIMEOUT,
        )
        if response.status_code != 202:
            raise RuntimeError(f"a queued upload got {response.status_code}: {response.text}")
        before = b.upload_calls("moonshot")
    except BaseException:
        set_breaker("reset")
        raise
    due = time.perf_counter()
    set_breaker("reset")
    while b.upload_calls("moonshot") == before:
        if time.perf_counter() - due > GIVE_UP_S:
            raise RuntimeError(f"a queued placement did not start within {GIVE_UP_S:g} s")
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - due


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def wakeup_phase(b: Bench, procs: Processes, work: Path, *, runs: int) -> None:
    """An API gateway without job loops queues placements; a worker gateway on the same
    PostgreSQL database starts them, woken by NOTIFY, then (the baseline) by polling only."""
    found = bench_database_url()
    name = "queued placement start, other process (PG)"
    if found is None:
        b.report.add(name, "skipped", "-", "-", "-", "-")
        b.report.notes.append(f"cross-process placement start: skipped, {NO_DATABASE}")
        return
    started = time.perf_counter()
    url, create_from = found
    fresh_database(url, create_from=create_from)
    shared = work / "wakeup-data"  # one blob store: the worker reads what the API stored
    database = ["--database-url", url]
    api, api_key_file = launch_gateway(
        procs,
        work,
        b.sandbox,
        "wakeup-api",
        [*database, "--workers-in-process", "0"],
        data_dir=shared,
    )
    # The NOTIFY worker starts once the API gateway has migrated and made the bench tenant
    # (two processes creating it at once would collide), and boots while the API does.
    wait_for_keys(api, api_key_file)
    notify_worker, _ = launch_gateway(
        procs,
        work,
        b.sandbox,
        "wakeup-worker-notify",
        [*database, "--workers-in-process", "1"],
        data_dir=shared,
    )
    wait_ready(api, "/bench/bare")
    api_keys = read_keys(api_key_file)
    auth = {"Authorization": f"Bearer {api_keys['token']}"}
    admin = {"Authorization": f"Bearer {api_keys['admin_token']}"}
    mark = b.foreign_mark()
    rng = random.Random(0)  # the same offsets every run

    def timed_runs(worker: Server, *, spread: float) -> list[float]:
        """Milliseconds per run with `worker` the only one; the worker is stopped after."""
        try:
            wait_ready(worker, "/bench/bare")
            _start_latency(b, api, auth, admin, offset=0)  # warm: connections, first upload
            return [
                _start_latency(b, api, auth, admin, offset=rng.uniform(0, spread)) * 1e3
                for _ in range(runs)
            ]
        finally:
            procs.stop(worker)

    try:
        notify = timed_runs(notify_worker, spread=0.0)
        # Only a polling worker's start depends on when it last looked (a NOTIFY wakes it
        # whenever it comes), so only its runs start at random offsets within one poll.
        poll_worker, _ = launch_gateway(
            procs,
            work,
            b.sandbox,
            "wakeup-worker-poll",
            [*database, "--workers-in-process", "1", "--no-job-listen"],
            data_dir=shared,
        )
        poll = timed_runs(poll_worker, spread=POLL_BASELINE_S)
    finally:
        procs.stop(api)
        b.reset("moonshot")
    for label, pick in (("p50", statistics.median), ("p95", _p95)):
        with_notify, polling = pick(notify), pick(poll)
        b.report.add(
            f"{name} {label} (ms)",
            f"{with_notify:.0f} NOTIFY",
            f"{polling:.0f} polling",
            f"{with_notify / max(polling, 1e-9):.2f}x",
            f"<= {START_GOAL_MS:g} ms",
            verdict(with_notify <= START_GOAL_MS),
        )
    b.report.notes.append(
        f"cross-process placement start: {runs} provider=moonshot uploads answered 202 by a "
        f"gateway without job loops (moonshot's circuit forced open there), each timed from its "
        f"admin reset (which makes the placement due and commits a NOTIFY) to the moonshot "
        f"sandbox counting the upload made by a second gateway with one job loop on the same "
        f"PostgreSQL database; first with LISTEN, then polling only every "
        f"{POLL_BASELINE_S:g} s (the default), each polling run started at a random offset "
        f"within one poll; one warm-up run each not counted; ms NOTIFY: "
        f"{' '.join(f'{t:.0f}' for t in notify)}; ms polling: "
        f"{' '.join(f'{t:.0f}' for t in poll)}; the phase took "
        f"{time.perf_counter() - started:.0f} s; other processes used {b.foreign_since(mark)} "
        f"meanwhile"
    )
    print(
        f"wakeup: NOTIFY p50 {statistics.median(notify):.0f} ms p95 {_p95(notify):.0f} ms; "
        f"polling p50 {statistics.median(poll):.0f} ms p95 {_p95(poll):.0f} ms",
        file=sys.stderr,
    )
