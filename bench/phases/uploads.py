"""17: a 100 MiB file through the Uploads API in 8 parts vs one ordinary upload of it."""

from __future__ import annotations

import statistics
from functools import partial
from pathlib import Path
from typing import Any

from bench.context import Bench
from bench.measure import timed
from bench.payloads import (
    CONTENT_TYPE,
    FILENAME,
    PURPOSE,
    SIZE,
    UPLOAD_TIMEOUT,
    upload,
    variant,
    write_random,
)
from bench.report import verdict

PARTS = 8
RATIO_GOAL = 1.3


def _in_parts(b: Bench, path: Path) -> dict[str, Any]:
    """Create, send PARTS parts one after another (as the SDK's helper does), complete."""
    size = path.stat().st_size
    base = b.gateway.base_url + "/v1/uploads"
    created = b.client.post(
        base,
        headers=b.auth,
        json={"filename": FILENAME, "purpose": PURPOSE, "bytes": size, "mime_type": CONTENT_TYPE},
    )
    created.raise_for_status()
    upload_id = created.json()["id"]
    part_size = -(-size // PARTS)
    part_ids = []
    with open(path, "rb") as fh:
        while chunk := fh.read(part_size):
            sent = b.client.post(
                f"{base}/{upload_id}/parts",
                headers=b.auth,
                files={"data": chunk},
                timeout=UPLOAD_TIMEOUT,
            )
            sent.raise_for_status()
            part_ids.append(sent.json()["id"])
    done = b.client.post(
        f"{base}/{upload_id}/complete",
        headers=b.auth,
        json={"part_ids": part_ids},
        timeout=UPLOAD_TIMEOUT,
    )
    done.raise_for_status()
    body: dict[str, Any] = done.json()
    if body["status"] != "completed" or body["file"]["bytes"] != size:
        raise RuntimeError(f"the upload did not complete whole: {body}")
    return body


def uploads_phase(b: Bench, work: Path, *, runs: int) -> None:
    base = work / "uploads-base.bin"
    write_random(base, SIZE)
    times: dict[str, list[float]] = {"parts": [], "whole": []}
    try:
        for i in range(runs + 1):  # the first pair warms up and is not counted
            for name in ("whole", "parts"):
                path = variant(base, work / f"uploads-{name}-{i}.bin")
                if name == "whole":
                    seconds, _ = timed(partial(upload, b.client, b.gw_files, path, b.auth))
                else:
                    seconds, _ = timed(partial(_in_parts, b, path))
                path.unlink()
                if i:
                    times[name].append(seconds)
                b.reset("moonshot")
    finally:
        base.unlink(missing_ok=True)
    parts, whole = statistics.median(times["parts"]), statistics.median(times["whole"])
    ratio = parts / whole
    b.report.add(
        f"100 MiB via the Uploads API in {PARTS} parts vs one upload (s, median of {runs})",
        f"{parts:.2f}",
        f"{whole:.2f}",
        f"{ratio:.2f}x",
        f"<= {RATIO_GOAL:g}x",
        verdict(ratio <= RATIO_GOAL),
    )
