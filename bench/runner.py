"""One bench run: start the servers, run the chosen phases, fill the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

from bench.context import Bench
from bench.measure import ForeignLoad
from bench.payloads import UPLOAD_TIMEOUT, csv_base
from bench.phases import PHASES
from bench.phases.auth import auth_phase
from bench.phases.capacity import capacity_phase
from bench.phases.core import core_phases
from bench.phases.download import download_phase
from bench.phases.fallback import fallback_phase
from bench.phases.hang import hang_phase
from bench.phases.objectstore import objectstore_phase
from bench.phases.pipelined import pipelined_phase
from bench.phases.queue import queue_phase
from bench.phases.replicas import replicas_phase
from bench.phases.resilience import resilience_phase
from bench.phases.uploads import uploads_phase
from bench.phases.wakeup import wakeup_phase
from bench.processes import (
    GATEWAY_MODULE,
    RESULTS,
    Processes,
    child_env,
    free_port,
    read_keys,
    wait_ready,
)
from bench.report import Report, Row


def run(
    args: argparse.Namespace,
    procs: Processes,
    work: Path,
    report: Report,
    foreign: ForeignLoad | None = None,
) -> None:
    profile_dir = RESULTS / "profile"

    # ---- servers -------------------------------------------------------------------------
    sandbox_port, gateway_port = free_port(), free_port()
    filegate_cli = Path(sys.executable).with_name("filegate")
    if filegate_cli.exists():
        sandbox_argv = [str(filegate_cli), "sandbox", "--port", str(sandbox_port)]
    else:
        sandbox_argv = [sys.executable, "-m", "bench.sandbox_server", "--port", str(sandbox_port)]
    sandbox = procs.start(
        "sandbox",
        sandbox_argv,
        log=work / "sandbox.log",
        base_url=f"http://127.0.0.1:{sandbox_port}",
        env=child_env(),
    )
    key_file = work / "api-key"
    gateway_env = child_env(
        {"BENCH_PROFILE": "1", "BENCH_PROFILE_DIR": str(profile_dir)} if args.profile else {}
    )
    gateway = procs.start(
        "gateway",
        [
            *(sys.executable, "-m", GATEWAY_MODULE, "--port", str(gateway_port)),
            *("--data-dir", str(work / "gateway-data")),
            *("--sandbox-url", f"{sandbox.base_url}/sandbox"),
            *("--key-file", str(key_file)),
        ],
        log=work / "gateway.log",
        base_url=f"http://127.0.0.1:{gateway_port}",
        env=gateway_env,
    )
    wait_ready(sandbox, "/sandbox/moonshot/_stats")
    wait_ready(gateway, "/bench/bare")
    keys = read_keys(key_file)
    phases = set(args.phases)

    file_id: str | None = None
    context: Row | None = None
    if "core" in phases:
        file_id, context = core_phases(args, work, gateway, sandbox, keys["token"], report)

    with httpx.Client(timeout=UPLOAD_TIMEOUT) as client:
        b = Bench(
            client=client,
            gateway=gateway,
            sandbox=sandbox,
            token=keys["token"],
            admin_token=keys.get("admin_token"),
            tenant=keys.get("tenant", "bench"),
            report=report,
            profile=args.profile,
            csv=csv_base(),
            foreign=foreign,
        )
        client.get(gateway.base_url + "/bench/bare").raise_for_status()
        if "fallback" in phases:
            fallback_phase(b, pairs=args.fallback_pairs)
        if "hang" in phases:
            hang_phase(b, runs=args.hang_runs, k=args.hang_concurrency)
        if "resilience" in phases:
            resilience_phase(b, procs, work, files=args.recovery_files)
        if "auth" in phases:
            if file_id is None:
                b.reset("zai")
                file_id = b.small_upload("zai")["id"]
            auth_phase(b, file_id=file_id, requests=args.auth_requests)
        if "queue" in phases:
            queue_phase(b, runs=args.queue_runs)
        if "wakeup" in phases:
            wakeup_phase(b, procs, work, runs=args.wakeup_runs)
        if "objectstore" in phases:
            objectstore_phase(b, procs, work, runs=args.objectstore_runs)
        if "replicas" in phases:
            replicas_phase(
                b,
                procs,
                work,
                reps=args.reps,
                uploads=args.replica_uploads,
                requests=args.rps_requests,
            )
        if "download" in phases:
            download_phase(b, procs, work, runs=args.download_runs)
        if "uploads" in phases:
            uploads_phase(b, work, runs=args.uploads_runs)
        if "capacity" in phases:
            capacity_phase(
                b,
                procs,
                work,
                uploads=args.capacity_uploads,
                max_files=args.capacity_max_files,
            )
        if "pipelined" in phases:
            pipelined_phase(b, work, runs=args.pipelined_runs)
        b.reset("moonshot")
        b.reset("zai")

    if context is not None:
        report.rows.append(context)
    if phases != set(PHASES):
        report.notes.append(f"phases run: {', '.join(p for p in PHASES if p in phases)} (--phases)")
