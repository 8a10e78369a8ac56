"""18: capacity, unique small uploads through a capped Moonshot account, evicting as it fills."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from bench.context import Bench
from bench.payloads import SMALL_TIMEOUT
from bench.processes import Processes, child_env, free_port, start_gateway, wait_ready
from bench.report import verdict

_SERIES = re.compile(r"^(filegate_(?:evictions|replacements)_total)\{([^}]*)\} (\S+)$", re.M)


def capacity_phase(
    b: Bench, procs: Processes, work: Path, *, uploads: int, max_files: int, replace: int = 100
) -> None:
    """`uploads` unique small provider=moonshot uploads through an account capped at
    `max_files` (its own sandbox and gateway, both set to the cap): failed uploads (goal 0),
    evictions, and the re-placements of `replace` evicted files asked for their text."""
    sandbox_port = free_port()
    filegate_cli = Path(sys.executable).with_name("filegate")
    sandbox = procs.start(
        "capacity-sandbox",
        [
            *(str(filegate_cli), "sandbox", "--port", str(sandbox_port)),
            *("--moonshot-max-files", str(max_files)),
        ],
        log=work / "capacity-sandbox.log",
        base_url=f"http://127.0.0.1:{sandbox_port}",
        env=child_env(),
    )
    wait_ready(sandbox, "/sandbox/moonshot/_stats")
    gateway, keys = start_gateway(
        procs,
        work,
        sandbox,
        "capacity-gateway",
        env={"FILEGATE_MOONSHOT_MAX_FILES": str(max_files)},
    )
    auth = {"Authorization": f"Bearer {keys['token']}"}
    files_url = gateway.base_url + "/v1/files"
    failed: list[str] = []
    ids: list[str] = []
    started = time.perf_counter()
    try:
        for n in range(uploads):
            response = b.client.post(
                files_url,
                headers=auth,
                files={"file": (f"note-{n}.txt", f"capacity note {n}\n".encode(), "text/plain")},
                data={"purpose": "file-extract", "provider": "moonshot"},
                timeout=SMALL_TIMEOUT,
            )
            body = response.json()
            if response.status_code != 200 or body.get("status") != "processed":
                failed.append(f"{response.status_code} {body.get('status') or body}")
                continue
            ids.append(body["id"])
        upload_s = time.perf_counter() - started
        unreadable = sum(
            1
            for fid in ids
            if b.client.get(f"{files_url}/{fid}/content", headers=auth).status_code != 200
        )
        extract_failures = sum(
            1
            for fid in ids[:replace]
            if b.client.get(f"{files_url}/{fid}/extract", headers=auth).status_code != 200
        )
        stats = b.client.get(f"{sandbox.base_url}/sandbox/moonshot/_stats").json()
        counts = _counts(b.client.get(gateway.base_url + "/metrics").text)
    finally:
        procs.stop(gateway)
        procs.stop(sandbox)
    evictions = sum(v for (name, _), v in counts.items() if name == "filegate_evictions_total")
    replacements = sum(
        v for (name, _), v in counts.items() if name == "filegate_replacements_total"
    )
    b.report.add(
        f"capacity: {uploads} unique uploads, moonshot capped at {max_files} files",
        f"{len(failed)} failed",
        f"{evictions:.0f} evictions",
        f"{replacements:.0f} re-placed",
        "0 failed",
        verdict(not failed and not unreadable and not extract_failures),
    )
    b.report.notes.append(
        f"capacity: {uploads} uploads in {upload_s:.1f} s ({uploads / upload_s:.0f}/s), "
        f"{len(failed)} failed{' (' + '; '.join(failed[:3]) + ')' if failed else ''}; "
        f"{evictions:.0f} copies evicted, {replacements:.0f} re-placed by extracting the first "
        f"{replace} files ({extract_failures} extracts failed); {unreadable} downloads failed; "
        f"the sandbox account holds {stats['files']} of {max_files} files"
    )
    print(
        f"capacity: {len(failed)} failed of {uploads}, {evictions:.0f} evictions, "
        f"{replacements:.0f} re-placements, account {stats['files']}/{max_files}",
        file=sys.stderr,
    )


def _counts(metrics: str) -> dict[tuple[str, str], float]:
    return {(m[1], m[2]): float(m[3]) for m in _SERIES.finditer(metrics)}
