"""Idempotency-Key as one dependency: claim the key, replay a stored answer, or store a new one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import RuntimeDep, SessionDep
from app.auth.principal import Principal
from app.core.errors import GatewayError
from app.runtime import Runtime
from app.services import idempotency

HEADER = "Idempotency-Key"
Redact = Callable[[dict[str, Any]], dict[str, Any]]


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    return idempotency.check_key(key) if key is not None else None


def _is_final(status_code: int) -> bool:
    """A client error a retry cannot fix is stored; a timeout, conflict or rate limit is not."""
    return status_code < 500 and status_code not in (408, 409, 429)


class IdempotencyScope:
    """One request's Idempotency-Key: the route calls `begin` once it knows what the request
    means, then `answer`; leaving the scope without an answer stores a final error or frees
    the key for a retry."""

    def __init__(self, *, request: Request, rt: Runtime, session: AsyncSession) -> None:
        self._request = request
        self._rt = rt
        self._session = session
        self._redact: Redact | None = None
        self._claim: tuple[str, str] | None = None  # (tenant, key) while this request holds it
        self._lease = AsyncExitStack()

    async def begin(self, fingerprint: str, *, redact: Redact | None = None) -> JSONResponse | None:
        """Claim the key for this request (None), or return the stored answer to replay.

        `redact` marks an answer that carries a secret: the stored replay drops it, and no cache
        may keep either (`Cache-Control: no-store`)."""
        self._redact = redact
        key = idempotency_key(self._request)
        if key is None:
            return None
        tenant = self._tenant_id()
        lease = self._rt.settings.idempotency_lease_seconds
        stored = await idempotency.begin(
            sessionmaker=self._rt.sessionmaker,
            tenant_id=tenant,
            key=key,
            request_fingerprint=fingerprint,
            lease_seconds=lease,
            clock=self._rt.clock,
        )
        if stored is not None:
            return JSONResponse(
                stored.body,
                status_code=stored.status_code,
                headers={**self._headers(), "Idempotent-Replayed": "true"},
            )
        self._claim = (tenant, key)
        await self._lease.enter_async_context(
            idempotency.held(
                sessionmaker=self._rt.sessionmaker,
                tenant_id=tenant,
                key=key,
                lease_seconds=lease,
                clock=self._rt.clock,
            )
        )
        return None

    async def answer(self, status: int, model: BaseModel) -> JSONResponse:
        """Commit the route's session, store the answer for replays, and return it."""
        body = model.model_dump(mode="json")
        if self._claim is not None:
            # The change must be durable before its answer is stored for replay.
            await self._session.commit()
            tenant, key = self._claim
            self._claim = None
            await self._lease.aclose()
            await idempotency.finish(
                sessionmaker=self._rt.sessionmaker,
                tenant_id=tenant,
                key=key,
                status_code=status,
                body=self._redact(dict(body)) if self._redact else body,
            )
        return JSONResponse(body, status_code=status, headers=self._headers())

    async def __aenter__(self) -> IdempotencyScope:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if self._claim is None:
            return  # answered, replayed, or no key
        tenant, key = self._claim
        self._claim = None
        await self._lease.aclose()
        if isinstance(exc, GatewayError) and _is_final(exc.status_code):
            await idempotency.finish(
                sessionmaker=self._rt.sessionmaker,
                tenant_id=tenant,
                key=key,
                status_code=exc.status_code,
                body=exc.body(),
            )
        else:
            await idempotency.release(sessionmaker=self._rt.sessionmaker, tenant_id=tenant, key=key)

    def _headers(self) -> dict[str, str]:
        return {"Cache-Control": "no-store"} if self._redact is not None else {}

    def _tenant_id(self) -> str:
        # Keys are per tenant; the route's guard has authorized this principal before `begin`.
        principal: Principal | None = self._request.state.principal
        if principal is None:
            raise RuntimeError("Idempotency-Key on a route without an authorized caller")
        return principal.tenant_id


async def idempotency_scope(
    request: Request, rt: RuntimeDep, session: SessionDep
) -> AsyncIterator[IdempotencyScope]:
    async with IdempotencyScope(request=request, rt=rt, session=session) as scope:
        yield scope


# Function scope: the claim is settled before the answer is sent, and before the session closes.
Idempotent = Annotated[IdempotencyScope, Depends(idempotency_scope, scope="function")]
