"""What every phase after `core` shares: the driver's client, the servers and their keys."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx

from bench.measure import ForeignLoad, timed
from bench.payloads import SMALL_TIMEOUT, csv_variant, placed_on, upload_csv
from bench.processes import Server
from bench.report import Report


@dataclass
class Bench:
    client: httpx.Client
    gateway: Server
    sandbox: Server
    token: str
    admin_token: str | None
    tenant: str
    report: Report
    profile: bool
    csv: bytes = b""
    foreign: ForeignLoad | None = None

    def foreign_mark(self) -> tuple[float, float]:
        cpu = self.foreign.cpu_seconds if self.foreign is not None else 0.0
        return cpu, time.perf_counter()

    def foreign_since(self, mark: tuple[float, float]) -> str:
        """CPU other processes used since `mark` (1 s samples, so rough for short phases)."""
        if self.foreign is None:
            return "?"
        cores = (self.foreign.cpu_seconds - mark[0]) / max(time.perf_counter() - mark[1], 1e-9)
        return f"{cores:.2f} CPU"

    @property
    def gw_files(self) -> str:
        return self.gateway.base_url + "/v1/files"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def sandbox_call(self, method: str, provider: str, what: str, **kw: Any) -> dict[str, Any]:
        url = f"{self.sandbox.base_url}/sandbox/{provider}/{what}"
        response = self.client.request(method, url, timeout=30, **kw)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def reset(self, provider: str) -> None:
        self.sandbox_call("POST", provider, "_reset")

    def upload_calls(self, provider: str) -> int:
        return int(self.sandbox_call("GET", provider, "_stats")["calls"]["upload"])

    def small_upload(self, provider: str, client: httpx.Client | None = None) -> dict[str, Any]:
        return upload_csv(
            client or self.client,
            self.gw_files,
            csv_variant(self.csv),
            self.auth,
            provider=provider,
            timeout=SMALL_TIMEOUT,
        )

    def timed_small_upload(self, provider: str, expect: str) -> float:
        data = csv_variant(self.csv)  # prepared outside the timed part
        t, body = timed(
            partial(
                upload_csv,
                self.client,
                self.gw_files,
                data,
                self.auth,
                provider=provider,
                timeout=SMALL_TIMEOUT,
            )
        )
        if body.get("status") != "processed" or placed_on(body) != [expect]:
            raise RuntimeError(f"provider={provider} upload not placed on {expect} only: {body}")
        if body.get("bytes") != len(self.csv):
            raise RuntimeError(f"provider={provider} upload stored {body.get('bytes')} bytes")
        return t

    def breaker(self, provider: str, action: str) -> dict[str, Any]:
        response = self.client.post(
            f"{self.gateway.base_url}/admin/providers/{provider}/breaker",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            json={"action": action},
            timeout=30,
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"breaker {action} {provider} -> {response.status_code}: {response.text[:300]}"
            )
        body: dict[str, Any] = response.json()
        return body


@contextlib.contextmanager
def profiled(client: httpx.Client, gateway: Server, name: str, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    client.post(gateway.base_url + "/bench/profile/start").raise_for_status()
    try:
        yield
    finally:
        client.post(gateway.base_url + "/bench/profile/stop", params={"name": name})
