"""Helpers shared by the provider adapter tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.core.errors import GatewayError
from app.providers.base import ProviderAdapter
from app.providers.pipeline import CallObserver, ProviderConfig

SECRET_KEY = "sk-test-SECRET-do-not-leak-0123456789"
Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class Recorder:
    """A CallObserver that keeps every (provider, operation, outcome, seconds) it is given."""

    calls: list[tuple[str, str, str, float]] = field(default_factory=list)

    def __call__(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        self.calls.append((provider, operation, outcome, seconds))

    @property
    def outcomes(self) -> list[tuple[str, str, str]]:
        return [(p, op, out) for p, op, out, _ in self.calls]


def make_adapter(
    cls: type[ProviderAdapter],
    base_url: str,
    *,
    observer: CallObserver | None = None,
    api_key: str = SECRET_KEY,
    transport: httpx.AsyncBaseTransport | None = None,
    **config: Any,
) -> ProviderAdapter:
    """An adapter for `cls` against a real base URL (or `transport`, when given)."""
    return cls(
        ProviderConfig(name=cls.name, base_url=base_url, api_key=api_key, **config),
        observer=observer,
        transport=transport,
    )


async def mock_adapter(
    cls: type[ProviderAdapter],
    handler: Handler,
    *,
    base_url: str = "https://provider.test/v1",
    observer: CallObserver | None = None,
) -> ProviderAdapter:
    """An adapter whose client answers through `handler` instead of the network."""
    return make_adapter(cls, base_url, observer=observer, transport=httpx.MockTransport(handler))


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers or {})


def answer(response: httpx.Response) -> Handler:
    """A handler that always gives a fresh copy of `response`."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            response.status_code, content=response.content, headers=response.headers
        )

    return handler


def assert_no_leak(exc: GatewayError, *secrets: str) -> None:
    """Neither the message nor the rendered body may carry a secret or raw provider text."""
    rendered = str(exc) + json.dumps(exc.body()) + json.dumps(exc.headers)
    for secret in (SECRET_KEY, *secrets):
        assert secret.lower() not in rendered.lower(), f"{secret!r} leaked into {rendered!r}"


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(request: httpx.Request) -> list[Part]:
    """Split a multipart/form-data request body into its parts, in order."""
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=", 1)[1].encode()
    body = request.content
    assert body.endswith(b"--" + boundary + b"--\r\n")
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers["content-disposition"]
        params = dict(
            item.strip().split("=", 1) for item in disposition.split(";")[1:] if "=" in item
        )
        filename = params.get("filename")
        parts.append(
            Part(
                name=params["name"].strip('"'),
                filename=filename.strip('"') if filename is not None else None,
                content_type=headers.get("content-type"),
                data=data[:-2],
            )
        )
    return parts


def control(sandbox_server: str, provider: str, action: str, **body: Any) -> httpx.Response:
    """Call a sandbox control route (`_reset`, `_faults`, `_stats`, `_lose/{id}`)."""
    url = f"{sandbox_server}/sandbox/{provider}/{action}"
    if action == "_stats":
        response = httpx.get(url)
    elif body.pop("_delete", False):
        response = httpx.delete(url)
    else:
        response = httpx.post(url, json=body or None)
    response.raise_for_status()
    return response


def fault(sandbox_server: str, provider: str, **fields: Any) -> None:
    """Install a sandbox fault (`status`, `rate`, `count`, `retry_after`, `hang`, ...)."""
    control(sandbox_server, provider, "_faults", **fields)
