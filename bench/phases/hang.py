"""6: a hanging provider must not slow the other one."""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from bench.context import Bench, profiled
from bench.payloads import CSV_SIZE, SMALL_TIMEOUT, MiB, placed_on
from bench.report import verdict

HANG_RATIO_MAX = 1.2


@contextlib.contextmanager
def moonshot_hanging(b: Bench, k: int) -> Iterator[list[Any]]:
    """K provider=moonshot uploads held by the sandbox's hang fault for the duration."""
    fault = {"hang": True, "rate": 1.0, "operations": ["upload"]}
    b.sandbox_call("POST", "moonshot", "_faults", json=fault)
    pool = ThreadPoolExecutor(max_workers=k)
    futures: list[Any] = []
    try:
        before = b.upload_calls("moonshot")

        def hung() -> dict[str, Any]:
            with httpx.Client(timeout=SMALL_TIMEOUT) as c:
                return b.small_upload("moonshot", client=c)

        futures = [pool.submit(hung) for _ in range(k)]
        deadline = time.monotonic() + 30
        while b.upload_calls("moonshot") < before + k:  # counted as the sandbox gets them
            done = [f for f in futures if f.done()]
            if done:
                raise RuntimeError(f"a moonshot upload ended before the hang: {done[0].result()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the moonshot uploads did not reach the sandbox")
            time.sleep(0.02)
        time.sleep(0.3)  # let the sandbox finish reading the bodies and start hanging
        if any(f.done() for f in futures):
            raise RuntimeError("a moonshot upload ended despite the hang fault")
        yield futures
        if any(f.done() for f in futures):
            raise RuntimeError("a moonshot upload ended during the measurement (timeout?)")
    finally:
        with contextlib.suppress(httpx.HTTPError):
            b.sandbox_call("DELETE", "moonshot", "_faults")  # releases the held requests
        pool.shutdown(wait=True)
    for f in futures:  # released: they complete normally
        body = f.result()
        if placed_on(body) != ["moonshot"]:
            raise RuntimeError(f"a released moonshot upload was not placed: {body}")


def hang_phase(b: Bench, *, runs: int, k: int, rounds: int = 8) -> None:
    """provider=zai uploads with K provider=moonshot uploads hanging vs without, in windows
    ordered ABBA (so a linear drift cancels); each window starts with one untimed upload."""
    b.reset("moonshot")
    b.reset("zai")
    for _ in range(3):
        b.timed_small_upload("zai", "zai")
    mark = b.foreign_mark()
    rounds = max(2, min(rounds, runs))
    per = max(1, runs // rounds)
    base: list[float] = []
    hung: list[float] = []

    def window() -> list[float]:
        b.timed_small_upload("zai", "zai")  # untimed: the first after a phase switch
        return [b.timed_small_upload("zai", "zai") for _ in range(per)]

    for r in range(rounds):
        for hanging in (False, True) if r % 2 == 0 else (True, False):
            b.reset("zai")
            if not hanging:
                base += window()
                continue
            with moonshot_hanging(b, k), profiled(b.client, b.gateway, f"hang-{r}", b.profile):
                hung += window()
            b.reset("moonshot")
    base_med = statistics.median(base) * 1e3
    hung_med = statistics.median(hung) * 1e3
    ratio = hung_med / base_med
    b.report.add(
        f"zai upload, {k} moonshot uploads hanging, {CSV_SIZE / MiB:g} MiB (ms)",
        f"{hung_med:.2f}",
        f"{base_med:.2f} no hang",
        f"{ratio:.2f}",
        f"<= {HANG_RATIO_MAX}",
        verdict(ratio <= HANG_RATIO_MAX),
    )
    b.report.notes.append(
        f"hanging provider: {rounds} rounds (ABBA order) of {per} sequential provider=zai "
        f"uploads without / with {k} provider=moonshot uploads held by the sandbox hang fault "
        f"(all {k} still in flight at the end of each window, then released and placed on "
        f"moonshot); other processes used {b.foreign_since(mark)} meanwhile; zai ms without: "
        f"{' '.join(f'{t * 1e3:.1f}' for t in base)} | with: "
        f"{' '.join(f'{t * 1e3:.1f}' for t in hung)}"
    )
    print(f"hang: zai {base_med:.2f} ms -> {hung_med:.2f} ms ({ratio:.2f}x)", file=sys.stderr)
