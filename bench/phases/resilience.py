"""7: resilience, falling back from a hung provider and recovering pending files."""

from __future__ import annotations

import statistics
import sys
import time
from functools import partial
from pathlib import Path

from app.core.config import Settings
from bench.context import Bench
from bench.measure import timed
from bench.payloads import (
    CSV_CONTENT_TYPE,
    CSV_FILENAME,
    CSV_SIZE,
    PURPOSE,
    SMALL_TIMEOUT,
    MiB,
    csv_variant,
    placed_on,
    upload_csv,
)
from bench.processes import Processes, start_gateway
from bench.report import verdict

RECOVERY_GOAL_S = 5.0
HUNG_FALLBACK_GOAL_S = 5.0
# The resilience gateway runs the production defaults: a hung call is cut after this, and an
# open circuit lets one probe through after this.
RESILIENCE_FIRST_BYTE_S = Settings.model_fields["provider_first_byte_timeout"].default
RESILIENCE_BREAKER_RESET_S = Settings.model_fields["breaker_reset_seconds"].default
RECOVERY_OUTAGE_S = 3.0  # how long the provider keeps failing after the last pending upload


def resilience_phase(
    b: Bench, procs: Processes, work: Path, *, runs: int = 3, files: int = 10
) -> None:
    """Rows (a) hung-provider fallback and (b) recovery time, on a gateway of their own."""
    b.reset("moonshot")
    b.reset("zai")
    gateway, keys = start_gateway(
        procs,
        work,
        b.sandbox,
        "resilience-gateway",
        [
            *("--first-byte-timeout", f"{RESILIENCE_FIRST_BYTE_S:g}"),
            *("--breaker-reset-seconds", f"{RESILIENCE_BREAKER_RESET_S:g}"),
        ],
    )
    mark = b.foreign_mark()
    auth = {"Authorization": f"Bearer {keys['token']}"}
    files_url = gateway.base_url + "/v1/files"
    try:
        upload_csv(b.client, files_url, csv_variant(b.csv), auth, provider="auto")  # warm
        # ---- (a): every auto upload waits out the hung moonshot, then zai answers -------
        b.sandbox_call("POST", "moonshot", "_faults", json={"hang": True, "operations": ["upload"]})
        fallback: list[float] = []
        try:
            for _ in range(runs):  # fewer than fail_max: each run meets the hang itself
                data = csv_variant(b.csv)
                t, body = timed(
                    partial(upload_csv, b.client, files_url, data, auth, provider="auto")
                )
                if placed_on(body) != ["zai"]:
                    raise RuntimeError(f"a hung-fallback upload was not placed on zai: {body}")
                fallback.append(t)
        finally:
            b.sandbox_call("DELETE", "moonshot", "_faults")
        hung_calls = b.upload_calls("moonshot")
        admin = {"Authorization": f"Bearer {keys['admin_token']}"}
        b.client.post(
            gateway.base_url + "/admin/providers/moonshot/breaker",
            headers=admin,
            json={"action": "reset"},
        ).raise_for_status()

        # ---- (b): pending files while moonshot fails, then the time to place them all ---
        b.reset("moonshot")
        b.reset("zai")
        outage = {"status": 503, "operations": ["upload"]}
        b.sandbox_call("POST", "moonshot", "_faults", json=outage)
        ids: list[str] = []
        try:
            for _ in range(files):
                response = b.client.post(
                    files_url,
                    headers=auth,
                    data={"purpose": PURPOSE, "provider": "moonshot"},
                    files={"file": (CSV_FILENAME, csv_variant(b.csv), CSV_CONTENT_TYPE)},
                    timeout=SMALL_TIMEOUT,
                )
                if response.status_code != 202:
                    raise RuntimeError(
                        f"a pending upload got {response.status_code}: {response.text[:300]}"
                    )
                ids.append(response.json()["id"])
            time.sleep(RECOVERY_OUTAGE_S)
        finally:
            b.sandbox_call("DELETE", "moonshot", "_faults")
        recovered = time.perf_counter()
        left = set(ids)
        deadline = recovered + 120
        while left:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{len(left)} pending files not placed within 120 s")
            for file_id in sorted(left):
                got = b.client.get(f"{files_url}/{file_id}", headers=auth, timeout=10)
                if got.status_code == 200 and got.json().get("status") == "processed":
                    left.discard(file_id)
            if left:
                time.sleep(0.05)
        recovery = time.perf_counter() - recovered
        placed = b.sandbox_call("GET", "moonshot", "_stats")["files"]
    finally:
        procs.stop(gateway)
        b.reset("moonshot")
        b.reset("zai")
    med = statistics.median(fallback)
    b.report.add(
        f"auto upload, moonshot hung -> answered by zai, {CSV_SIZE / MiB:g} MiB (s)",
        f"{med:.2f}",
        f"{RESILIENCE_FIRST_BYTE_S:g} first-byte",
        f"{med / RESILIENCE_FIRST_BYTE_S:.2f}",
        f"<= {HUNG_FALLBACK_GOAL_S:g} s",
        verdict(med <= HUNG_FALLBACK_GOAL_S),
    )
    b.report.add(
        f"recovery: moonshot back -> {files} pending files processed (s)",
        f"{recovery:.2f}",
        f"{RESILIENCE_BREAKER_RESET_S:g} breaker reset",
        "-",
        f"<= {RECOVERY_GOAL_S:g} s",
        verdict(recovery <= RECOVERY_GOAL_S),
    )
    b.report.notes.append(
        f"resilience: a second gateway with FILEGATE_PROVIDER_FIRST_BYTE_TIMEOUT="
        f"{RESILIENCE_FIRST_BYTE_S:g} and FILEGATE_BREAKER_RESET_SECONDS="
        f"{RESILIENCE_BREAKER_RESET_S:g} (the production defaults); hung fallback runs (s): "
        f"{' '.join(f'{t:.2f}' for t in fallback)}, moonshot saw {hung_calls} upload calls; "
        f"recovery: {files} provider=moonshot uploads answered 202 while it answered 503, the "
        f"fault held {RECOVERY_OUTAGE_S:g} s more, then cleared; moonshot then held {placed} "
        f"files; other processes used {b.foreign_since(mark)} meanwhile"
    )
    print(f"resilience: hung fallback {med:.2f} s  recovery {recovery:.2f} s", file=sys.stderr)
