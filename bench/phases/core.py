"""1-4: big uploads vs direct, dedup, memory under concurrent uploads, request rate."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.context import profiled
from bench.measure import (
    SAMPLE_SECONDS,
    LoadResult,
    RssSampler,
    drive_load,
    mbps,
    median_run,
    timed,
    tree_rss,
)
from bench.payloads import DIRECT_KEY, UPLOAD_TIMEOUT, MiB, upload, variant, write_random
from bench.processes import RESULTS, Server
from bench.report import Report, Row, verdict

UPLOAD_RATIO_MAX = 2.5
DEDUP_RATIO_MAX = 1.0
RSS_DELTA_MAX_MIB = 64.0
RPS_RATIO_MIN = 0.4


def core_phases(
    args: argparse.Namespace,
    work: Path,
    gateway: Server,
    sandbox: Server,
    token: str,
    report: Report,
) -> tuple[str, Row]:
    """Rows 1-4 (big uploads, dedup, memory, request rate); returns a file id, the context row."""
    size: int = args.size
    reps: int = args.reps
    profile_dir = RESULTS / "profile"
    gw_auth = {"Authorization": f"Bearer {token}"}
    direct_auth = {"Authorization": f"Bearer {DIRECT_KEY}"}
    gw_files = gateway.base_url + "/v1/files"
    direct_files = sandbox.base_url + "/sandbox/moonshot/v1/files"
    reset_url = sandbox.base_url + "/sandbox/moonshot/_reset"
    gw_ps = gateway.ps

    # ---- payloads (written once; streamed from disk by httpx) ----------------------------
    t0 = time.perf_counter()
    payloads = work / "payloads"
    payloads.mkdir()
    base = payloads / "base.bin"
    write_random(base, size)
    gw_payloads = [variant(base, payloads / f"gw-{i}.bin") for i in range(reps)]
    conc_payloads = [variant(base, payloads / f"conc-{i}.bin") for i in range(args.concurrent)]
    warm = variant(base, payloads / "warm.bin")
    os.sync()  # no writeback of the payloads may land inside a timed run
    print(f"payloads written in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    with httpx.Client(timeout=UPLOAD_TIMEOUT) as client:

        def reset() -> None:
            client.post(reset_url).raise_for_status()

        # ---- warm-up: connections, imports, first SQLite connects, first big buffers ----
        reset()
        upload(client, direct_files, warm, direct_auth)
        reset()
        warm_file = upload(client, gw_files, warm, gw_auth)
        file_id = warm_file["id"]
        client.get(f"{gw_files}/{file_id}", headers=gw_auth).raise_for_status()

        # ---- 1 + 2: sequential uploads, interleaved so drift hits all three alike --------
        direct_t: list[float] = []
        gw_t: list[float] = []
        dedup_t: list[float] = []
        gw_ids: list[str] = []
        for i in range(reps):
            reset()
            os.sync()  # each timed run starts without the previous run's dirty pages
            t, body = timed(partial(upload, client, direct_files, base, direct_auth))
            if body.get("bytes") != size:
                raise RuntimeError(f"sandbox stored {body.get('bytes')} bytes, not {size}")
            direct_t.append(t)

            reset()
            os.sync()
            with profiled(client, gateway, f"upload-{i}", args.profile):
                t, body = timed(partial(upload, client, gw_files, gw_payloads[i], gw_auth))
            if body.get("status") != "processed" or body.get("bytes") != size:
                raise RuntimeError(f"gateway upload not processed: {body}")
            gw_t.append(t)
            gw_ids.append(body["id"])

            reset()
            os.sync()
            with profiled(client, gateway, f"dedup-{i}", args.profile):
                t, body = timed(partial(upload, client, gw_files, gw_payloads[0], gw_auth))
            if body.get("id") != gw_ids[0]:
                raise RuntimeError(f"dedup expected {gw_ids[0]}, got {body.get('id')}")
            dedup_t.append(t)
            print(
                f"rep {i + 1}/{reps}: direct {direct_t[-1]:.2f}s  gateway {gw_t[-1]:.2f}s  "
                f"dedup {dedup_t[-1]:.2f}s",
                file=sys.stderr,
            )

        direct_med = statistics.median(direct_t)
        gw_med = statistics.median(gw_t)
        dedup_med = statistics.median(dedup_t)
        up_ratio = gw_med / direct_med
        dd_ratio = dedup_med / direct_med
        mib = size / MiB
        report.add(
            f"upload {mib:g} MiB via gateway (s)",
            f"{gw_med:.3f}",
            f"{direct_med:.3f} direct",
            f"{up_ratio:.2f}",
            f"<= {UPLOAD_RATIO_MAX}",
            verdict(up_ratio <= UPLOAD_RATIO_MAX),
        )
        report.add(
            f"dedup hit {mib:g} MiB (s)",
            f"{dedup_med:.3f}",
            f"{direct_med:.3f} direct",
            f"{dd_ratio:.2f}",
            f"<= {DEDUP_RATIO_MAX}",
            verdict(dd_ratio <= DEDUP_RATIO_MAX),
        )

        # ---- 3: memory during concurrent uploads ------------------------------------------
        reset()
        os.sync()
        time.sleep(1.0)
        idle_samples = []
        for _ in range(5):
            idle_samples.append(tree_rss(gw_ps))
            time.sleep(0.05)
        idle = statistics.median(idle_samples)
        sampler = RssSampler(gw_ps)
        sampler.start()

        def one(path: Path) -> dict[str, Any]:
            with httpx.Client(timeout=UPLOAD_TIMEOUT) as c:
                return upload(c, gw_files, path, gw_auth)

        with profiled(client, gateway, "concurrent", args.profile):
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(conc_payloads)) as pool:
                bodies = list(pool.map(one, conc_payloads))
            conc_elapsed = time.perf_counter() - start
        peak = sampler.stop()
        if any(b.get("status") != "processed" for b in bodies):
            raise RuntimeError(f"a concurrent upload was not processed: {bodies}")
        delta_mib = (peak - idle) / MiB
        report.add(
            f"peak RSS over idle, {len(conc_payloads)} x {mib:g} MiB concurrent (MiB)",
            f"{delta_mib:.1f}",
            f"{idle / MiB:.1f} idle",
            "-",
            f"<= {RSS_DELTA_MAX_MIB:g}",
            verdict(delta_mib <= RSS_DELTA_MAX_MIB),
        )
        report.notes.append(
            f"RSS: idle {idle / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB "
            f"({sampler.samples} samples every {SAMPLE_SECONDS * 1000:.0f} ms, process + children)"
        )
        reset()

        # ---- 4: request rate, retrieve vs bare --------------------------------------------
        retrieve_url = f"{gw_files}/{gw_ids[0]}"
        bare_url = gateway.base_url + "/bench/bare"
        for client_kind in ("httpx", "raw"):
            bare: list[LoadResult] = []
            retr: list[LoadResult] = []
            for i in range(reps):
                for name, url, tok, sink in (
                    ("bare", bare_url, None, bare),
                    ("retrieve", retrieve_url, token, retr),
                ):
                    with profiled(client, gateway, f"rps-{client_kind}-{name}-{i}", args.profile):
                        res = drive_load(
                            url,
                            token=tok,
                            requests=args.rps_requests,
                            concurrency=args.rps_concurrency,
                            procs=args.load_procs,
                            server=gw_ps,
                            client=client_kind,
                        )
                    if res.errors:
                        raise RuntimeError(f"{res.errors} non-200 responses from {url}")
                    sink.append(res)
                    print(
                        f"rps {client_kind} {name} {i + 1}/{reps}: {res.rps:.0f}/s  gateway CPU "
                        f"{res.server_cpu * 100:.0f}%  load CPU {res.driver_cpu * 100:.0f}%",
                        file=sys.stderr,
                    )
            b, r = median_run(bare), median_run(retr)
            rps_ratio = r.rps / b.rps
            if client_kind == "httpx":
                report.add(
                    "GET /v1/files/{id} (req/s, httpx client)",
                    f"{r.rps:.0f}",
                    f"{b.rps:.0f} bare",
                    f"{rps_ratio:.2f}",
                    f">= {RPS_RATIO_MIN}",
                    verdict(rps_ratio >= RPS_RATIO_MIN),
                )
            else:
                report.add(
                    "GET /v1/files/{id} (req/s, raw-socket client)",
                    f"{r.rps:.0f}",
                    f"{b.rps:.0f} bare",
                    f"{rps_ratio:.2f}",
                    f"(>= {RPS_RATIO_MIN})",
                    "info",
                )
            bound = (
                "bare is gateway-bound"
                if b.server_cpu >= 0.8
                else "bare is NOT gateway-bound: the load generator or latency limits it"
            )
            report.notes.append(
                f"req/s ({client_kind}): {args.rps_requests} requests x {reps} runs each, "
                f"{args.rps_concurrency} keep-alive connections x {args.load_procs} load "
                f"process(es); gateway CPU bare {b.server_cpu * 100:.0f}% / retrieve "
                f"{r.server_cpu * 100:.0f}%, load CPU bare {b.driver_cpu * 100:.0f}% / retrieve "
                f"{r.driver_cpu * 100:.0f}% ({os.cpu_count()} CPUs; {bound}); "
                f"gateway CPU per request: bare {b.server_cpu / b.rps * 1e3:.2f} ms, "
                f"retrieve {r.server_cpu / r.rps * 1e3:.2f} ms"
            )

    # ---- context: absolute throughput (added last by run()) --------------------------------
    context = Row(
        "throughput, context (MB/s, 1 MB = 10^6 B)",
        f"gw {mbps(size, gw_med):.0f} | dedup {mbps(size, dedup_med):.0f} | "
        f"{len(conc_payloads)}x concurrent {mbps(size * len(conc_payloads), conc_elapsed):.0f}",
        f"direct {mbps(size, direct_med):.0f}",
        "-",
        "-",
        "info",
    )
    report.notes.insert(
        0,
        "upload times (s): direct "
        + " ".join(f"{t:.2f}" for t in direct_t)
        + " | gateway "
        + " ".join(f"{t:.2f}" for t in gw_t)
        + " | dedup "
        + " ".join(f"{t:.2f}" for t in dedup_t)
        + f" | {len(conc_payloads)} concurrent: {conc_elapsed:.2f} total",
    )
    if args.profile:
        report.notes.append(f"profiles: {profile_dir}/*.txt (cProfile, gateway event-loop thread)")
    return gw_ids[0], context
