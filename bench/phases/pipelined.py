"""19-20: a 100 MiB miss through the gateway (pipelined placement) vs the same bytes straight to
the sandbox, with an explicit provider and with auto, without a digest (speculative) and with a
declared one; peak RSS over idle during 8 concurrent pipelined 100 MiB uploads."""

from __future__ import annotations

import base64
import hashlib
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.context import Bench, profiled
from bench.measure import RssSampler, timed, tree_cpu, tree_rss
from bench.payloads import (
    CONTENT_TYPE,
    DIRECT_KEY,
    FILENAME,
    PURPOSE,
    SIZE,
    UPLOAD_TIMEOUT,
    MiB,
    upload,
    variant,
    write_random,
)
from bench.report import verdict

RATIO_GOAL = 1.2  # of a direct upload's time
CONCURRENT = 8
RSS_GOAL_MIB = 32


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MiB):
            h.update(chunk)
    return f"sha-256=:{base64.b64encode(h.digest()).decode()}:"


def _gateway_upload(
    client: httpx.Client, b: Bench, path: Path, *, provider: str, digest: str | None
) -> dict[str, Any]:
    headers = dict(b.auth)
    if digest is not None:
        headers["Repr-Digest"] = digest
    with open(path, "rb") as fh:
        response = client.post(
            b.gw_files,
            headers=headers,
            data={"purpose": PURPOSE, "provider": provider},
            files={"file": (FILENAME, fh, CONTENT_TYPE)},
            timeout=UPLOAD_TIMEOUT,
        )
    if response.status_code != 200 or response.headers.get("Filegate-Dedup") != "miss":
        raise RuntimeError(f"pipelined upload -> {response.status_code}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def pipelined_phase(b: Bench, work: Path, *, runs: int) -> None:
    base = work / "pipelined-base.bin"
    write_random(base, SIZE)
    direct_files = f"{b.sandbox.base_url}/sandbox/moonshot/v1/files"
    direct_auth = {"Authorization": f"Bearer {DIRECT_KEY}"}
    cpu: dict[str, list[float]] = {"gateway": [], "sandbox": [], "sandbox direct": []}
    try:
        for provider in ("moonshot", "auto"):
            for declared in (False, True):
                gateway: list[float] = []
                direct: list[float] = []
                for i in range(runs):
                    path = variant(base, work / f"pipelined-{i}.bin")  # new bytes: a miss
                    digest = _digest(path) if declared else None
                    b.reset("moonshot")
                    before = tree_cpu(b.sandbox.ps)
                    seconds, _ = timed(partial(upload, b.client, direct_files, path, direct_auth))
                    cpu["sandbox direct"].append(tree_cpu(b.sandbox.ps) - before)
                    direct.append(seconds)
                    b.reset("moonshot")
                    go = partial(
                        _gateway_upload, b.client, b, path, provider=provider, digest=digest
                    )
                    name = f"pipelined-{provider}-{'declared' if declared else 'speculative'}"
                    before_gw, before_sb = tree_cpu(b.gateway.ps), tree_cpu(b.sandbox.ps)
                    with profiled(b.client, b.gateway, name, b.profile):
                        seconds, _ = timed(go)
                    cpu["gateway"].append(tree_cpu(b.gateway.ps) - before_gw)
                    cpu["sandbox"].append(tree_cpu(b.sandbox.ps) - before_sb)
                    gateway.append(seconds)
                    path.unlink()
                gateway_s, direct_s = statistics.median(gateway), statistics.median(direct)
                ratio = gateway_s / direct_s
                how = "declared digest" if declared else "speculative"
                b.report.add(
                    f"{SIZE // MiB} MiB miss, provider={provider}, {how} (s, median of {runs})",
                    f"{gateway_s:.2f}",
                    f"{direct_s:.2f} direct",
                    f"{ratio:.2f}x",
                    f"<= {RATIO_GOAL:g}x",
                    verdict(ratio <= RATIO_GOAL),
                )
        b.report.notes.append(
            f"pipelined: CPU per {SIZE // MiB} MiB miss (median): "
            + ", ".join(f"{name} {statistics.median(v):.2f}s" for name, v in cpu.items())
        )
        _concurrent_rss(b, work, base)
    finally:
        base.unlink(missing_ok=True)
        b.reset("moonshot")


def _concurrent_rss(b: Bench, work: Path, base: Path) -> None:
    paths = [variant(base, work / f"pipelined-conc-{i}.bin") for i in range(CONCURRENT)]
    b.reset("moonshot")
    ps = b.gateway.ps
    time.sleep(0.5)
    idle = statistics.median(tree_rss(ps) for _ in range(5))
    sampler = RssSampler(ps)
    sampler.start()

    def one(path: Path) -> dict[str, Any]:
        with httpx.Client(timeout=UPLOAD_TIMEOUT) as c:
            return _gateway_upload(c, b, path, provider="moonshot", digest=None)

    try:
        with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
            bodies = list(pool.map(one, paths))
    finally:
        peak = sampler.stop()
        for path in paths:
            path.unlink(missing_ok=True)
    if any(body.get("status") != "processed" for body in bodies):
        raise RuntimeError(f"a concurrent pipelined upload was not processed: {bodies}")
    growth = (peak - idle) / MiB
    b.report.add(
        f"peak RSS over idle, {CONCURRENT} x {SIZE // MiB} MiB pipelined (MiB)",
        f"{growth:.1f}",
        f"{idle / MiB:.0f} idle",
        "",
        f"<= {RSS_GOAL_MIB}",
        verdict(growth <= RSS_GOAL_MIB),
    )
