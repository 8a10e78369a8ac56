"""5: fallback overhead, an `auto` upload falling back past an open circuit."""

from __future__ import annotations

import statistics
import sys

from bench.context import Bench, profiled
from bench.payloads import CSV_SIZE, MiB
from bench.report import verdict

FALLBACK_DELTA_MAX_MS = 5.0


def fallback_phase(b: Bench, *, pairs: int, warm: int = 3) -> None:
    """`auto` with moonshot's breaker open (falls back to zai) vs `provider=zai`, interleaved."""
    if not b.admin_token:
        raise RuntimeError("the gateway issued no admin key (an old bench.server?)")
    b.reset("moonshot")
    b.reset("zai")
    mark = b.foreign_mark()
    direct: list[float] = []
    auto: list[float] = []
    deltas: list[float] = []
    for _ in range(warm):
        b.timed_small_upload("zai", "zai")
    opened = b.breaker("moonshot", "open")
    try:
        if opened.get("state") != "open":
            raise RuntimeError(f"moonshot breaker did not open: {opened}")
        moonshot_before = b.upload_calls("moonshot")
        for _ in range(warm):
            b.timed_small_upload("auto", "zai")
        zai_calls = 0
        with profiled(b.client, b.gateway, "fallback", b.profile):
            for i in range(pairs):
                if i % 20 == 0:  # the zai sandbox holds at most 100 file-extract files
                    zai_calls += b.upload_calls("zai")
                    b.reset("zai")
                    b.client.get(b.gateway.base_url + "/bench/bare")  # keep the socket warm
                order = ("zai", "auto") if i % 2 == 0 else ("auto", "zai")
                got = {p: b.timed_small_upload(p, "zai") for p in order}
                direct.append(got["zai"])
                auto.append(got["auto"])
                deltas.append(got["auto"] - got["zai"])
        zai_calls += b.upload_calls("zai")
        moonshot_calls = b.upload_calls("moonshot") - moonshot_before
        still = b.breaker("moonshot", "open")  # idempotent; shows it stayed open
    finally:
        closed = b.breaker("moonshot", "reset")
    if moonshot_calls:
        raise RuntimeError(f"moonshot saw {moonshot_calls} upload calls with its breaker open")
    if zai_calls != 2 * (pairs + warm):
        raise RuntimeError(f"zai saw {zai_calls} upload calls, expected {2 * (pairs + warm)}")
    if closed.get("state") != "closed":
        raise RuntimeError(f"moonshot breaker not closed after reset: {closed}")
    d_med = statistics.median(direct) * 1e3
    a_med = statistics.median(auto) * 1e3
    delta = statistics.median(deltas) * 1e3
    b.report.add(
        f"fallback overhead: auto->zai, moonshot open, {CSV_SIZE / MiB:g} MiB (ms)",
        f"{a_med:.2f}",
        f"{d_med:.2f} provider=zai",
        f"{delta:+.2f} ms",
        f"<= +{FALLBACK_DELTA_MAX_MS:g} ms",
        verdict(delta <= FALLBACK_DELTA_MAX_MS),
    )
    b.report.notes.append(
        f"fallback: {pairs} interleaved pairs (order alternating) after {warm} warm-ups each; "
        f"delta = median of per-pair (auto - zai) = {delta:+.2f} ms (difference of medians "
        f"{a_med - d_med:+.2f} ms); every upload placed on zai only; moonshot sandbox upload "
        f"calls during the fallback runs: {moonshot_calls}; zai sandbox upload calls: "
        f"{zai_calls}; breaker state during the runs: {still.get('state')}, after reset: "
        f"{closed.get('state')}; other processes used {b.foreign_since(mark)} meanwhile"
    )
    print(
        f"fallback: zai {d_med:.2f} ms  auto {a_med:.2f} ms  delta {delta:+.2f} ms",
        file=sys.stderr,
    )
