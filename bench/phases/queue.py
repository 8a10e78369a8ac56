"""Queued placement start: from a placement made due to the provider receiving the upload."""

from __future__ import annotations

import statistics
import sys
import time

from bench.context import Bench
from bench.payloads import CSV_CONTENT_TYPE, CSV_FILENAME, PURPOSE, SMALL_TIMEOUT, csv_variant

POLL_SECONDS = 0.005  # the sandbox's upload counter is read this often
GIVE_UP_S = 30.0
QUEUE_START_GOAL_MS = 100.0


def _pending_upload(b: Bench) -> str:
    """A provider=moonshot upload answered 202: its placement waits in the job queue."""
    response = b.client.post(
        b.gw_files,
        headers=b.auth,
        data={"purpose": PURPOSE, "provider": "moonshot"},
        files={"file": (CSV_FILENAME, csv_variant(b.csv), CSV_CONTENT_TYPE)},
        timeout=SMALL_TIMEOUT,
    )
    if response.status_code != 202:
        raise RuntimeError(f"a queued upload got {response.status_code}: {response.text[:300]}")
    file_id: str = response.json()["id"]
    return file_id


def _start_latency(b: Bench) -> float:
    """Seconds from closing moonshot's circuit (which makes its placements due) to its upload."""
    b.reset("moonshot")
    opened = b.breaker("moonshot", "open")
    if opened.get("state") != "open":
        raise RuntimeError(f"moonshot breaker did not open: {opened}")
    try:
        _pending_upload(b)
        before = b.upload_calls("moonshot")
    except BaseException:
        b.breaker("moonshot", "reset")
        raise
    due = time.perf_counter()
    b.breaker("moonshot", "reset")
    while b.upload_calls("moonshot") == before:
        if time.perf_counter() - due > GIVE_UP_S:
            raise RuntimeError(f"a queued placement did not start within {GIVE_UP_S:g} s")
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - due


def queue_phase(b: Bench, *, runs: int) -> None:
    """How soon a worker starts a placement once it is due (reported, not judged)."""
    mark = b.foreign_mark()
    latencies = [_start_latency(b) * 1e3 for _ in range(runs)]
    b.reset("moonshot")
    med = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else latencies[0]
    b.report.add(
        "queued placement start: due -> provider upload (ms)",
        f"{med:.0f} median",
        f"{p95:.0f} p95",
        "-",
        f"({QUEUE_START_GOAL_MS:g} ms)",
        "info",
    )
    b.report.notes.append(
        f"queued placement: {runs} provider=moonshot uploads answered 202 with moonshot's "
        f"circuit forced open; each time from the admin reset (closing the circuit makes the "
        f"placement due) to the moonshot sandbox counting the upload, polled every "
        f"{POLL_SECONDS * 1e3:g} ms; ms: {' '.join(f'{t:.0f}' for t in latencies)}; "
        f"other processes used {b.foreign_since(mark)} meanwhile"
    )
    print(f"queue: start median {med:.0f} ms  p95 {p95:.0f} ms", file=sys.stderr)
