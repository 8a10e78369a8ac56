"""Measurement: timers, memory and CPU sampling, and the request-rate load run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from bench.processes import ROOT, child_env

SAMPLE_SECONDS = 0.02


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


class RssSampler(threading.Thread):
    def __init__(self, proc: psutil.Process, interval: float = SAMPLE_SECONDS) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.peak = max(self.peak, tree_rss(self.proc))
                self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        with contextlib.suppress(psutil.NoSuchProcess):
            self.peak = max(self.peak, tree_rss(self.proc))
        return self.peak


class ForeignLoad(threading.Thread):
    """CPU used by processes outside this bench's own process tree while it runs: other work
    on a small machine makes the timings noisy, so the report says how much there was."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.cpu_seconds = 0.0
        self.peak_cores = 0.0
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.top: dict[str, float] = {}
        self._stop_event = threading.Event()

    @staticmethod
    def _snapshot() -> dict[int, tuple[str, float]]:
        ours = {os.getpid()}
        with contextlib.suppress(psutil.Error):
            ours |= {p.pid for p in psutil.Process().children(recursive=True)}
        snap: dict[int, tuple[str, float]] = {}
        for p in psutil.process_iter(["name", "cpu_times"]):
            times = p.info.get("cpu_times")
            if p.pid in ours or times is None:
                continue
            snap[p.pid] = (p.info.get("name") or "?", times.user + times.system)
        return snap

    def run(self) -> None:
        prev = self._snapshot()
        while not self._stop_event.wait(self.interval):
            now = self._snapshot()
            step = 0.0
            for pid, (name, cpu) in now.items():
                if pid in prev:
                    delta = max(0.0, cpu - prev[pid][1])
                    step += delta
                    self.top[name] = self.top.get(name, 0.0) + delta
            self.cpu_seconds += step
            self.peak_cores = max(self.peak_cores, step / self.interval)
            prev = now

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.elapsed = time.perf_counter() - self.started

    def summary(self) -> str:
        cores = self.cpu_seconds / max(self.elapsed, 1e-9)
        busiest = sorted(self.top.items(), key=lambda kv: -kv[1])[:3]
        names = ", ".join(f"{n} {c:.0f}s" for n, c in busiest if c >= 1.0) or "none"
        warning = "  <-- timings are noisy" if cores >= 0.25 else ""
        return (
            f"other processes on this machine used {cores:.2f} CPU on average during the run "
            f"(peak {self.peak_cores:.2f}; busiest: {names}){warning}"
        )


def tree_cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system
    return total


@dataclass
class LoadResult:
    rps: float
    ok: int
    errors: int
    elapsed: float
    server_cpu: float  # server CPU seconds per wall second during the run (all servers)
    driver_cpu: float  # load-generator CPU seconds per wall second (all processes)
    machine_cpu: float = 0.0  # CPUs busy machine-wide during the run, whatever used them


def drive_load(
    url: str,
    *,
    token: str | None,
    requests: int,
    concurrency: int,
    procs: int,
    server: psutil.Process,
    client: str = "httpx",
) -> LoadResult:
    """`requests` GETs of `url` from `procs` load processes, `concurrency` connections each."""
    return drive_split_load(
        [url] * procs,
        token=token,
        requests=requests,
        concurrency=concurrency,
        servers=[server],
        client=client,
    )


def drive_split_load(
    urls: list[str],
    *,
    token: str | None,
    requests: int,
    concurrency: int,
    servers: list[psutil.Process],
    client: str = "httpx",
    extra: list[str] | None = None,
    warmup: int = 200,
) -> LoadResult:
    """One load process per entry of `urls` (the same URL twice: two processes on it), the
    `requests` split evenly among them, all started at once; `extra` is passed to each
    (bench.load's --upload-bytes makes them uploads)."""
    env = child_env({"BENCH_TOKEN": token} if token else {})
    per, left = divmod(requests, len(urls))
    children: list[subprocess.Popen[str]] = []
    try:
        for i, url in enumerate(urls):
            argv = [sys.executable, "-m", "bench.load", "--url", url, "--client", client]
            argv += ["--requests", str(per + (1 if i < left else 0))]
            argv += ["--concurrency", str(concurrency), "--warmup", str(warmup), *(extra or [])]
            child = subprocess.Popen(  # noqa: S603 - argv is built by the bench itself
                argv, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            children.append(child)
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"load generator failed to start: {line!r}")
        cpu0 = sum(tree_cpu(server) for server in servers)
        machine0 = psutil.cpu_times()
        t0 = time.perf_counter()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            assert child.stdout is not None
            results.append(json.loads(child.stdout.readline()))
            child.wait(timeout=60)
        t1 = time.perf_counter()
        machine1 = psutil.cpu_times()
        cpu1 = sum(tree_cpu(server) for server in servers)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    elapsed = end - start
    ok = sum(r["ok"] for r in results)
    errors = sum(r["errors"] for r in results)
    wall = max(t1 - t0, 1e-9)
    return LoadResult(
        rps=ok / elapsed,
        ok=ok,
        errors=errors,
        elapsed=elapsed,
        server_cpu=(cpu1 - cpu0) / wall,
        driver_cpu=sum(r["cpu"] for r in results) / elapsed,
        machine_cpu=(_busy(machine1) - _busy(machine0)) / wall,
    )


def _busy(times: Any) -> float:
    """CPU seconds the machine spent working (all CPUs; guest time is inside user already)."""
    fields = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in fields))


def median_run(results: list[LoadResult]) -> LoadResult:
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


def mbps(size: int, seconds: float) -> float:
    return size / 1e6 / seconds
