"""11-12: 100 MiB through a gateway on the S3 store vs one on local disk; RSS under 8 concurrent
100 MiB uploads to S3. The S3 store is a real SeaweedFS (`weed mini`) on loopback."""

from __future__ import annotations

import secrets
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.context import Bench
from bench.measure import RssSampler, timed, tree_rss
from bench.payloads import SIZE, UPLOAD_TIMEOUT, upload, variant, write_random
from bench.processes import Processes, Server, launch_gateway, read_keys, wait_for_keys, wait_ready
from bench.report import verdict
from tests.support.seaweed import seaweedfs

MiB = 1024 * 1024
BUCKET = "filegate-bench"
RATIO_GOAL = 1.3
RSS_GOAL_MIB = 64.0
CONCURRENT = 8


def _round_trip(client: httpx.Client, gateway: Server, token: str, path: Path) -> float:
    """Seconds to upload `path` and download it whole again."""
    auth = {"Authorization": f"Bearer {token}"}
    files = f"{gateway.base_url}/v1/files"
    up, body = timed(lambda: upload(client, files, path, auth))

    def download() -> int:
        got = 0
        with client.stream("GET", f"{files}/{body['id']}/content", headers=auth) as resp:
            resp.raise_for_status()
            for chunk in resp.iter_bytes(MiB):
                got += len(chunk)
        return got

    down, got = timed(download)
    if got != path.stat().st_size:
        raise RuntimeError(f"downloaded {got} of {path.stat().st_size} bytes")
    return float(up + down)


def objectstore_phase(b: Bench, procs: Processes, work: Path, *, runs: int) -> None:
    secret = secrets.token_urlsafe(48)  # both gateways key API-key HMACs alike
    base = work / "objectstore-base.bin"
    write_random(base, SIZE)
    with seaweedfs(buckets=(BUCKET,)) as store:
        s3_env = {
            "FILEGATE_BLOB_STORE": "s3",
            "FILEGATE_S3_ENDPOINT_URL": store.endpoint_url,
            "FILEGATE_S3_BUCKET": BUCKET,
            "FILEGATE_S3_REGION": store.region,
            "FILEGATE_S3_ACCESS_KEY_ID": store.access_key_id,
            "FILEGATE_S3_SECRET_ACCESS_KEY": store.secret_access_key,
            "FILEGATE_SECRET_KEY": secret,
        }
        gateways: dict[str, tuple[Server, str]] = {}
        for name, env in (("local", {"FILEGATE_SECRET_KEY": secret}), ("s3", s3_env)):
            gateway, key_file = launch_gateway(procs, work, b.sandbox, f"gw-{name}", env=env)
            wait_for_keys(gateway, key_file)
            wait_ready(gateway, "/bench/bare")
            gateways[name] = (gateway, read_keys(key_file)["token"])
        try:
            times: dict[str, list[float]] = {"local": [], "s3": []}
            with httpx.Client(timeout=UPLOAD_TIMEOUT) as client:
                for i in range(runs + 1):  # the first pair warms both up and is not counted
                    for name, (gateway, token) in gateways.items():
                        path = variant(base, work / f"objectstore-{name}-{i}.bin")
                        seconds = _round_trip(client, gateway, token, path)
                        path.unlink()
                        if i:
                            times[name].append(seconds)
                        b.reset("moonshot")
            local, s3 = statistics.median(times["local"]), statistics.median(times["s3"])
            ratio = s3 / local
            b.report.add(
                f"100 MiB upload + download, S3 store vs local (s, median of {runs})",
                f"{s3:.2f}",
                f"{local:.2f}",
                f"{ratio:.2f}x",
                f"<= {RATIO_GOAL:g}x",
                verdict(ratio <= RATIO_GOAL),
            )
            _concurrent_rss(b, work, base, *gateways["s3"])
        finally:
            for gateway, _ in gateways.values():
                procs.stop(gateway)
    base.unlink(missing_ok=True)


def _concurrent_rss(b: Bench, work: Path, base: Path, gateway: Server, token: str) -> None:
    paths = [variant(base, work / f"objectstore-conc-{i}.bin") for i in range(CONCURRENT)]
    ps = gateway.ps
    time.sleep(0.5)
    idle = statistics.median(tree_rss(ps) for _ in range(5))
    sampler = RssSampler(ps)
    sampler.start()
    auth = {"Authorization": f"Bearer {token}"}

    def one(path: Path) -> dict[str, Any]:
        with httpx.Client(timeout=UPLOAD_TIMEOUT) as c:
            return upload(c, f"{gateway.base_url}/v1/files", path, auth)

    try:
        with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
            bodies = list(pool.map(one, paths))
    finally:
        peak = sampler.stop()
        for path in paths:
            path.unlink(missing_ok=True)
    if any(body.get("status") != "processed" for body in bodies):
        raise RuntimeError(f"a concurrent upload to S3 was not processed: {bodies}")
    delta = (peak - idle) / MiB
    b.report.add(
        f"peak RSS over idle, {CONCURRENT} x 100 MiB concurrent to S3 (MiB)",
        f"{delta:.1f}",
        f"{idle / MiB:.1f} idle",
        "-",
        f"<= {RSS_GOAL_MIB:g}",
        verdict(delta <= RSS_GOAL_MIB),
    )
    b.reset("moonshot")
