"""Dependencies: the runtime, the request's unit of work, and request metadata."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import session_scope
from app.core.logging import log_context
from app.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed when the route returns, rolled back on error."""
    runtime: Runtime = request.app.state.runtime
    async with session_scope(runtime.sessionmaker) as session:
        yield session
    runtime.database.reached()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for routes that only read: nothing to commit, closed (rolled back) after."""
    runtime: Runtime = request.app.state.runtime
    async with runtime.sessionmaker() as session:
        yield session
    runtime.database.reached()


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]


async def file_id_param(file_id: Annotated[str, Path()]) -> str:
    """The path's file id, bound to the request's log lines (async: same context as the route)."""
    log_context.bind(file_id=file_id)  # undone with the request's context by the middleware
    return file_id


FileId = Annotated[str, Depends(file_id_param)]


def client_addr(request: Request) -> str | None:
    return request.client.host if request.client else None
