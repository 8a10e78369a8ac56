"""Assemble the sandbox: provider routes plus the control routes, which answer loopback only."""

from __future__ import annotations

import ipaddress
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from app.sandbox.core import FaultSpec, ProviderSandbox, SandboxOptions
from app.sandbox.moonshot import MoonshotSandbox
from app.sandbox.zai import ZaiSandbox

Endpoint = Callable[[Request], Awaitable[Response]]
LOOPBACK_ONLY = "sandbox control routes answer loopback clients only"


def is_loopback(request: Request) -> bool:
    """True when the peer is on this host (127.0.0.0/8, ::1 or an IPv4-mapped loopback)."""
    if request.client is None:
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def loopback_only(endpoint: Endpoint) -> Endpoint:
    """Refuse a control route to any peer that is not on this host, with a JSON 403."""

    async def guarded(request: Request) -> Response:
        if not is_loopback(request):
            return JSONResponse(
                {"detail": "sandbox control routes answer loopback clients only"}, 403
            )
        return await endpoint(request)

    guarded.__doc__ = endpoint.__doc__
    return guarded


def create_sandbox_app(**options: Any) -> Starlette:
    """The sandbox ASGI app; routes are relative to wherever it is mounted."""
    opts = SandboxOptions(**options)
    # A new id per start: a gateway that sees it change knows this sandbox holds nothing yet.
    instance = secrets.token_hex(16)
    rng = random.Random(opts.seed)
    providers: dict[str, ProviderSandbox] = {
        "moonshot": MoonshotSandbox(opts, rng),
        "zai": ZaiSandbox(opts, rng),
    }

    def provider_of(request: Request) -> ProviderSandbox:
        """The provider named in the path, or a JSON 404."""
        name = request.path_params["provider"]
        if name not in providers:
            raise HTTPException(404, f"unknown provider: {name}")
        return providers[name]

    async def stats(request: Request) -> Response:
        """Call counters and storage totals."""
        return JSONResponse(provider_of(request).stats())

    async def reset(request: Request) -> Response:
        """Forget files, counters and faults."""
        provider = provider_of(request)
        provider.reset()
        return JSONResponse(provider.stats())

    async def faults(request: Request) -> Response:
        """Show (GET), set (POST) or clear (DELETE) the provider's fault."""
        provider = provider_of(request)
        if request.method == "POST":
            body = await request.body()
            try:
                spec = FaultSpec.model_validate_json(body or b"{}")
            except ValidationError as exc:
                errors = exc.errors(include_url=False, include_context=False, include_input=False)
                return JSONResponse({"detail": errors}, 422)
            provider.set_fault(spec)
        elif request.method == "DELETE":
            provider.set_fault(None)
        fault = provider.fault.describe() if provider.fault else None
        return JSONResponse({"provider": provider.name, "fault": fault})

    async def lose(request: Request) -> Response:
        """Silently drop a stored file, as if the provider expired it."""
        provider = provider_of(request)
        file_id = request.path_params["file_id"]
        if provider.files.pop(file_id, None) is None:
            raise HTTPException(404, f"unknown file id: {file_id}")
        return JSONResponse({"provider": provider.name, "id": file_id, "lost": True})

    async def instance_id(request: Request) -> Response:
        """This sandbox's random id, new at every start."""
        return JSONResponse({"instance": instance})

    async def not_found(request: Request, exc: Exception) -> Response:
        """Provider-shaped 404/405 under a provider prefix, JSON elsewhere."""
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if "provider" not in request.path_params:
            route_path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
            first = route_path.strip("/").split("/", 1)[0]
            if first in providers:
                return providers[first].route_not_found(status)
        detail = exc.detail if isinstance(exc, HTTPException) else "Not Found"
        return JSONResponse({"detail": detail}, status)

    routes: list[Route | Mount] = [route for p in providers.values() for route in p.routes()]
    routes += [
        Route("/_instance", instance_id, methods=["GET"]),
        Route("/{provider}/_stats", loopback_only(stats), methods=["GET"]),
        Route("/{provider}/_reset", loopback_only(reset), methods=["POST"]),
        Route("/{provider}/_faults", loopback_only(faults), methods=["GET", "POST", "DELETE"]),
        Route("/{provider}/_lose/{file_id}", loopback_only(lose), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.providers = providers
    app.state.instance = instance
    return app


def create_standalone_app(**options: Any) -> Starlette:
    """A server root that mounts the sandbox at /sandbox."""
    return Starlette(routes=[Mount("/sandbox", app=create_sandbox_app(**options))])
