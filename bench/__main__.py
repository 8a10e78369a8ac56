"""`python -m bench`: the filegate performance report (a report, not a test: always exits 0).

Starts, on loopback, a standalone provider sandbox process and a gateway process
(bench/server.py), then measures (bench/phases/):

1. a 100 MiB upload through the gateway vs the same upload straight to the sandbox;
2. a dedup hit (the same 100 MiB again, same tenant and purpose) vs the direct upload;
3. peak gateway RSS over idle during 8 concurrent 100 MiB uploads;
4. GET /v1/files/{id} requests/s vs GET /bench/bare in the same gateway process;
5. fallback overhead: with moonshot's circuit breaker forced open through the admin API, an
   `auto` 1 MiB CSV upload (order moonshot,zai) falls back to zai; median of per-pair deltas
   vs `provider=zai` over interleaved pairs (the moonshot sandbox must see no upload);
6. hanging-provider isolation: sequential provider=zai 1 MiB uploads while K provider=moonshot
   uploads are held by the sandbox's hang fault, vs the same uploads without the hang;
7. resilience, on a second gateway (first-byte timeout RESILIENCE_FIRST_BYTE_S, breaker
   reset RESILIENCE_BREAKER_RESET_S): (a) hung-provider fallback: with the sandbox's hang
   fault on moonshot uploads, the time for an `auto` 1 MiB CSV upload to answer from zai;
   (b) recovery: with moonshot answering 503, N provider=moonshot uploads answered 202
   (pending); the fault is cleared and the time until every file is `processed` is taken
   by polling GET /v1/files/{id};
8. authentication overhead: sequential GET /v1/files/{id} over one keep-alive connection with
   an API key and with an HS256 JWT, vs the same retrieve without authentication
   (GET /bench/noauth/v1/files/{id}, bench/server.py);
9. queued placement start: a provider=moonshot upload answered 202 while moonshot's circuit is
   forced open, then the time from closing the circuit (which makes the placement due) to the
   moonshot sandbox receiving the upload (median and p95; reported, not judged);
10. queued placement start across processes, on PostgreSQL (FILEGATE_BENCH_DATABASE_URL, a
   database the bench wipes, or else a `<name>_bench` database made beside
   FILEGATE_TEST_DATABASE_URL; skipped without either): a gateway without job loops answers
   provider=moonshot uploads 202 (moonshot's circuit forced open there) and closes the circuit,
   and a second gateway's job loop on the same database starts the placement; p50 and p95
   from the close to the sandbox receiving the upload, woken by NOTIFY, vs the same with the
   worker polling only (FILEGATE_JOB_LISTEN=false, the default 1 s poll) in the same run;
11. the object store: a 100 MiB upload and its download through a gateway on the S3 store (a
   SeaweedFS started for the phase) vs one on local disk, in the same run;
12. peak RSS over idle of the S3 gateway during 8 concurrent 100 MiB uploads;
13-14. throughput of 4 KiB uploads and of GET /v1/files/{id} through two gateway replicas on one
   PostgreSQL database (as in 10) vs one, the same load from two load processes either all
   on one replica or one per replica (the aim is >= 1.6x where CPUs allow; the CPU count and
   the CPU the gateways and the whole machine used are printed beside it);
15. a 100 MiB download through the gateway vs `python -m http.server` serving the same file;
16. a dedup hit with a declared digest (`Repr-Digest`, `Expect: 100-continue`, so the body is
   never sent) vs the same 100 MiB uploaded straight to the sandbox;
17. resumable uploads: a 100 MiB file through the Uploads API in 8 parts sent one after
   another (create, parts, complete) vs the same file as one ordinary upload;
18. capacity: 3,000 unique small provider=moonshot uploads through a Moonshot account capped
   at 1,000 files (a sandbox and gateway of its own, both at the cap): failed uploads (goal 0),
   copies evicted, and re-placements when the first 100 files' text is asked for;
19. a 100 MiB miss through the gateway, the provider upload pipelined with the client's, vs the
   same bytes straight to the sandbox: provider=moonshot and auto, each without a digest
   (speculative) and with a declared one (Repr-Digest);
20. peak RSS over idle of the gateway during 8 concurrent pipelined 100 MiB uploads;

and prints a table (also written to bench-results/latest.txt).  Timings are medians of
REPS runs (time.perf_counter).  Payloads are streamed from temp files written once.

Options (`python -m bench --help`): --reps N and a count per phase (runs, requests, files),
--phases (a comma-separated subset of bench.phases.PHASES, in that order), --profile (cProfile
inside the gateway per phase, written under bench-results/profile/).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import ForeignLoad
from bench.payloads import SIZE
from bench.phases import PHASES
from bench.processes import RESULTS, Processes
from bench.report import Report
from bench.runner import run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs per timing (median taken)")
    parser.add_argument("--size", type=int, default=SIZE, help="upload size in bytes")
    parser.add_argument("--concurrent", type=int, default=8, help="concurrent uploads (memory)")
    parser.add_argument("--rps-requests", type=int, default=2000)
    parser.add_argument("--rps-concurrency", type=int, default=8)
    parser.add_argument("--load-procs", type=int, default=1, help="load-generator processes")
    parser.add_argument("--fallback-pairs", type=int, default=30, help="auto/zai upload pairs")
    parser.add_argument("--hang-runs", type=int, default=40, help="zai uploads per condition")
    parser.add_argument("--hang-concurrency", type=int, default=4, help="hung moonshot uploads")
    parser.add_argument("--recovery-files", type=int, default=10, help="pending files")
    parser.add_argument("--auth-requests", type=int, default=1000, help="GETs per auth variant")
    parser.add_argument("--queue-runs", type=int, default=10, help="queued placements timed")
    parser.add_argument(
        "--wakeup-runs", type=int, default=10, help="cross-process placements timed per mode"
    )
    parser.add_argument(
        "--objectstore-runs", type=int, default=3, help="100 MiB round trips per store"
    )
    parser.add_argument(
        "--replica-uploads", type=int, default=400, help="4 KiB uploads per replicas run"
    )
    parser.add_argument(
        "--download-runs", type=int, default=3, help="100 MiB downloads and declared hits timed"
    )
    parser.add_argument(
        "--uploads-runs", type=int, default=3, help="100 MiB files per way (Uploads API, whole)"
    )
    parser.add_argument(
        "--capacity-uploads", type=int, default=3000, help="unique uploads (capacity phase)"
    )
    parser.add_argument(
        "--capacity-max-files", type=int, default=1000, help="the capped moonshot account"
    )
    parser.add_argument(
        "--pipelined-runs", type=int, default=3, help="100 MiB misses timed per pipelined row"
    )
    parser.add_argument(
        "--phases",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=list(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the gateway per phase")
    args = parser.parse_args(argv)
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {', '.join(PHASES)}")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up on `kill` too
    report = Report()
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="filegate-bench-"))
    started = time.perf_counter()
    error: str | None = None
    foreign = ForeignLoad()
    foreign.start()
    try:
        run(args, procs, work, report, foreign)
    except KeyboardInterrupt:
        error = "interrupted"
    except Exception as exc:  # a report, not a test: say what broke and still exit 0
        error = f"{type(exc).__name__}: {exc}"
        for server in procs.servers:
            error += f"\n--- {server.name} log tail ---\n{server.tail()}"
    finally:
        foreign.stop()
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    report.notes.append(foreign.summary())

    header = (
        f"filegate bench  {time.strftime('%Y-%m-%d %H:%M:%S')}  python {sys.version.split()[0]}  "
        f"{os.cpu_count()} CPUs  {time.perf_counter() - started:.0f}s"
    )
    text = header + "\n\n" + report.render()
    if error:
        text += f"\n\nBENCH DID NOT COMPLETE: {error}"
    print(text)
    with contextlib.suppress(OSError):
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "latest.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
