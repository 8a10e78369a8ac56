"""13-14: throughput of two gateway replicas on one PostgreSQL database vs one replica, for
4 KiB uploads and for GET /v1/files/{id}, the same load split evenly in both cases."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from bench.context import Bench
from bench.database import NO_DATABASE, bench_database_url, fresh_database
from bench.measure import LoadResult, drive_split_load, median_run
from bench.processes import Processes, launch_gateway, read_keys, wait_for_keys, wait_ready
from bench.report import verdict

RATIO_AIM = 1.6
UPLOAD_BYTES = 4096
LOAD_PROCS = 2  # load processes in both cases: both on the one replica, or one per replica


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def replicas_phase(
    b: Bench, procs: Processes, work: Path, *, reps: int, uploads: int, requests: int
) -> None:
    """Replicas A and B serve one PostgreSQL database with their own data directories. Each
    run sends the same requests from LOAD_PROCS load processes, first all to A ("one"), then
    split between A and B ("two"); runs alternate so drift hits both alike."""
    found = bench_database_url()
    if found is None:
        for what in ("4 KiB uploads", "GET /v1/files/{id}"):
            b.report.add(f"{what}, two replicas vs one (PG)", "skipped", "-", "-", "-", "-")
        b.report.notes.append(f"replicas: skipped, {NO_DATABASE}")
        return
    started = time.perf_counter()
    url, create_from = found
    fresh_database(url, create_from=create_from)
    database = ["--database-url", url]
    # One at a time: the first migrates and makes the bench tenant, the second finds them.
    first, first_keys = launch_gateway(procs, work, b.sandbox, "replica-a", database)
    wait_for_keys(first, first_keys)
    second, second_keys = launch_gateway(procs, work, b.sandbox, "replica-b", database)
    wait_for_keys(second, second_keys)
    replicas = [first, second]
    for replica in replicas:
        wait_ready(replica, "/bench/bare")
    token = read_keys(first_keys)["token"]  # one tenant's key, valid on both replicas
    mark = b.foreign_mark()
    try:
        b.reset("moonshot")
        probe = b.client.post(
            first.base_url + "/v1/files",
            headers={"Authorization": f"Bearer {token}"},
            data={"purpose": "file-extract", "provider": "moonshot"},
            files={"file": ("probe.csv", b"id,name\n1,probe\n", "text/csv")},
        )
        if probe.status_code != 200:
            raise RuntimeError(f"probe upload -> {probe.status_code}: {probe.text[:300]}")
        file_id = probe.json()["id"]
        upload_args = ["--upload-bytes", str(UPLOAD_BYTES), "--upload-provider", "moonshot"]
        cases: tuple[tuple[str, str, int, int, list[str], int], ...] = (
            ("4 KiB uploads", "/v1/files", uploads, 4, upload_args, 20),
            ("GET /v1/files/{id}", f"/v1/files/{file_id}", requests, 8, [], 200),
        )
        for what, path, n, concurrency, extra, warmup in cases:
            runs: dict[str, list[LoadResult]] = {"one": [], "two": []}
            for i in range(reps):
                for name, targets in (("one", [first] * LOAD_PROCS), ("two", replicas)):
                    b.reset("moonshot")  # the sandbox account never fills up
                    result = drive_split_load(
                        [replica.base_url + path for replica in targets],
                        token=token,
                        requests=n,
                        concurrency=concurrency,
                        servers=[replica.ps for replica in replicas],
                        extra=extra,
                        warmup=warmup,
                    )
                    if result.errors:
                        raise RuntimeError(f"{what}: {result.errors} failed requests ({name})")
                    runs[name].append(result)
                    print(
                        f"replicas {what} {name} {i + 1}/{reps}: {result.rps:.0f}/s, gateways "
                        f"{result.server_cpu:.2f} CPU, machine {result.machine_cpu:.2f} CPU",
                        file=sys.stderr,
                    )
            _report(b, what, median_run(runs["one"]), median_run(runs["two"]), n, concurrency)
    finally:
        for replica in replicas:
            procs.stop(replica)
        b.reset("moonshot")
    b.report.notes.append(
        f"replicas: two gateway processes (own data directories) on one PostgreSQL database "
        f"and the one sandbox, both running throughout; each run is the same requests from "
        f"{LOAD_PROCS} load processes, all to replica A (one) or one process per replica "
        f"(two); median of {reps} alternating runs; {_cores()} CPUs here, shared by the "
        f"replicas, PostgreSQL, the sandbox and the load processes, so two replicas can only "
        f"gain where CPUs sit idle under one; the phase took "
        f"{time.perf_counter() - started:.0f} s; other processes used {b.foreign_since(mark)}"
    )


def _report(
    b: Bench, what: str, one: LoadResult, two: LoadResult, n: int, concurrency: int
) -> None:
    ratio = two.rps / one.rps
    b.report.add(
        f"{what}, two replicas vs one (req/s, PG)",
        f"{two.rps:.0f}",
        f"{one.rps:.0f} one",
        f"{ratio:.2f}x",
        f">= {RATIO_AIM:g}x aim",
        verdict(ratio >= RATIO_AIM),
    )
    b.report.notes.append(
        f"replicas, {what}: {n} requests per run, {concurrency} connections per load process; "
        f"CPUs busy: gateways {one.server_cpu:.2f} one / {two.server_cpu:.2f} two, machine "
        f"{one.machine_cpu:.2f} one / {two.machine_cpu:.2f} two of {_cores()}; load processes "
        f"{one.driver_cpu:.2f} / {two.driver_cpu:.2f}"
    )
